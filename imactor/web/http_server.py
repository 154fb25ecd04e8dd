"""The HTTP/1.1 listener of the web endpoints (h11 on Trio): one task per connection.

Each connection reads requests with h11, with limits that keep one client from holding the worker:
the request line and headers must fit in ``[http] max_header_size`` bytes (431 otherwise) and
arrive within ``header_timeout`` seconds (408: a client that never finishes its headers is cut
off), a body may not exceed ``max_body_size`` (413), an idle keep-alive connection closes after
``keepalive_timeout``, and a worker serves at most ``max_connections`` connections at once (503).
Malformed HTTP gets h11's status hint (400 mostly) and the connection closes.

Requests are routed by path (`WebEndpoints`): the WebSocket upgrade (`imactor.web.websocket`), BOSH
(`imactor.web.bosh`), host-meta (`imactor.web.hostmeta`), and the paths that enabled modules
claim (`Module.http`: XEP-0363 uploads and downloads), which read their bodies as a stream, bounded
by the module rather than by ``max_body_size``. Origins are checked first
(`imactor.web.cors`): any is allowed by default; with ``[http] allowed_origins`` set, a browser
request from another origin gets 403 and a (rate-limited) warning in the log.
"""

from __future__ import annotations

import contextlib
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11
import trio

from imactor.c2s.listener import accept
from imactor.c2s.tls_stream import TLSSocketStream
from imactor.server.modules import HttpBodyError, HttpContext, HttpReply, HttpRequest
from imactor.web import cors, hostmeta
from imactor.web.endpoints import WebEndpoints
from imactor.web.messages import Request, Response, read_head, text_response
from imactor.web.websocket import serve_websocket

if TYPE_CHECKING:
    from imactor.server.module_host import HttpRoute

log = logging.getLogger("imactor.web")

READ_SIZE = 16384
TRANSPORT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")
#: Bytes of a refused request's body read and dropped before the answer, so that the connection
#: can serve the next request (and the client reads the answer instead of a reset). Beyond it
#: the connection closes after the answer.
DISCARD_LIMIT = 1 << 20


async def serve_http(
    endpoints: WebEndpoints,
    listener: trio.SocketListener,
    *,
    tls: bool,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept HTTP (or, with `tls`, HTTPS) connections forever, one task each."""
    task_status.started()
    async with trio.open_nursery() as nursery:
        while True:
            stream, remote = await accept(listener)
            nursery.start_soon(_connection, endpoints, stream, remote, tls)


async def _connection(endpoints: WebEndpoints, tcp: trio.SocketStream, remote: str, tls: bool) -> None:
    config = endpoints.config
    endpoints.connections += 1
    stream: trio.abc.Stream = tcp
    try:
        if tls:
            tls_stream = TLSSocketStream.server_side(tcp, endpoints.services.ssl_context)
            stream = tls_stream
            with trio.move_on_after(config.header_timeout) as handshake:
                await tls_stream.do_handshake()
            if handshake.cancelled_caught:
                return
        connection = HttpConnection(endpoints, stream, remote, tls=tls)
        if endpoints.connections > config.max_connections:
            await connection.refuse(503, "too many connections")
            return
        await _run_guarded(connection, remote)
    except TRANSPORT_GONE as exc:
        log.debug("http %s: transport lost: %r", remote, exc)
    finally:
        endpoints.connections -= 1
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(*TRANSPORT_GONE):
                await stream.aclose()


async def _run_guarded(connection: HttpConnection, remote: str) -> None:
    """Serve one connection; whatever it raises ends it alone, never the listener. A transport
    that went away often surfaces from a nursery (the WebSocket's reader), as a group."""
    try:
        try:
            await connection.run()
        except* TRANSPORT_GONE as group:
            log.debug("http %s: transport lost: %r", remote, group.exceptions)
    except Exception:  # a protocol boundary: one connection's bug must not stop the others
        log.exception("http %s: connection failed", remote)


def is_loopback(address: str) -> bool:
    return address.startswith(LOOPBACK_PREFIXES)


class HttpConnection:
    """One HTTP/1.1 connection: requests in order, each answered before the next is read."""

    def __init__(self, endpoints: WebEndpoints, stream: trio.abc.Stream, remote: str, *, tls: bool) -> None:
        self.endpoints = endpoints
        self.stream = stream
        self.remote = remote
        self.tls = tls
        #: Confidential: HTTPS, or plain HTTP from this host (a TLS-terminating proxy, tests).
        self.secure = tls or is_loopback(remote)
        #: ``[listen.c2s] starttls_required`` means no login without TLS: plain HTTP from
        #: another host may not carry a session (host-meta is still served).
        self.cleartext_refused = not self.secure and endpoints.services.config.listen.c2s.starttls_required
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=endpoints.config.max_header_size)
        #: The raw bytes of the current request so far (a WebSocket upgrade replays them).
        self._raw = bytearray()

    async def run(self) -> None:
        config = self.endpoints.config
        first = True
        while True:
            timeout = config.header_timeout if first else config.keepalive_timeout
            first = False
            try:
                request = await self._read_request(timeout)
            except h11.RemoteProtocolError as exc:
                await self.refuse(exc.error_status_hint, str(exc) or "bad request")
                return
            if request is None:
                return
            upgrade = request.headers.get("upgrade", "").lower() == "websocket"
            if (upgrade or request.path == config.bosh_path) and self.cleartext_refused:
                await self.refuse(403, "use HTTPS: this server requires TLS")
                return
            if upgrade and request.path == config.websocket_path:
                await serve_websocket(self, request, bytes(self._raw))
                return
            # A module's route of the host the request names ([[hosts]]: its upload URLs name it).
            services = self.endpoints.services
            named = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
            route = services.view(named).modules.http_route(request.path)
            if route is not None:
                await self._serve_module(route, request)
                if not self._next_cycle():
                    return
                continue
            # The whole request is read before it is answered (so the connection can be reused).
            body = await self._read_body(request)
            if body is None:
                return
            request = Request(request.method, request.path, request.headers, body)
            response = await self._respond_to(request)
            await self.send(response, request)
            if not self._next_cycle():
                return

    def _next_cycle(self) -> bool:
        """Ready for the next request on this connection (False: it must close)."""
        if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
            return False
        self._h11.start_next_cycle()
        self._raw = bytearray(self._h11.trailing_data[0])
        return True

    # ---- module routes (`Module.http`) ---------------------------------------------------------

    async def _serve_module(self, route: HttpRoute, head: Request) -> None:
        services = self.endpoints.services
        body = _StreamedBody(self)
        request = HttpRequest(head.method, head.path, head.query, head.headers, body, self.remote, self.tls)
        try:
            reply = await route.handler(HttpContext(request, route.options, services.config, services.server))
        except Exception:  # a protocol boundary: one request's bug must not end the listener
            log.exception("http %s: %s %s failed", self.remote, head.method, head.path)
            reply = HttpReply(500, [("Content-Type", "text/plain; charset=utf-8")], b"internal error\n")
        if self._h11.their_state is h11.SEND_BODY and not body.failed:
            await self._discard_body(head)
        await self._send_reply(reply, head)

    async def _discard_body(self, head: Request) -> None:
        """Read and drop what is left of a refused request's body, up to `DISCARD_LIMIT` bytes:
        closing with unread bytes would reset the connection, and the client might lose the
        answer. A larger body is not read: the connection closes after the answer."""
        if self._h11.they_are_waiting_for_100_continue:
            return  # the client sends no body unless told to go on: nothing to drop
        declared = head.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > DISCARD_LIMIT:
            return
        dropped = 0
        deadline = trio.current_time() + self.endpoints.config.header_timeout
        with contextlib.suppress(h11.RemoteProtocolError):
            while self._h11.their_state is h11.SEND_BODY and dropped <= DISCARD_LIMIT:
                event = await self._next_event(deadline)
                if event is None or isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Data):
                    dropped += len(event.data)

    async def _send_reply(self, reply: HttpReply, head: Request) -> None:
        length = reply.length if reply.stream is not None else len(reply.body)
        headers = [("Content-Length", str(length)), *reply.headers]
        if self._h11.their_state is not h11.DONE:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(reply.status).phrase.encode()
        data = self._h11.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
        await self.stream.send_all(data or b"")
        if head.method != "HEAD":  # h11 frames a HEAD answer without a body
            if reply.stream is not None:
                async for chunk in reply.stream():
                    await self.stream.send_all(self._h11.send(h11.Data(data=chunk)) or b"")
            elif reply.body:
                await self.stream.send_all(self._h11.send(h11.Data(data=reply.body)) or b"")
        await self.stream.send_all(self._h11.send(h11.EndOfMessage()) or b"")

    async def _respond_to(self, request: Request) -> Response:
        config = self.endpoints.config
        if request.path in hostmeta.PATHS:
            services = self.endpoints.services
            others = services.mesh.web_nodes if services.mesh is not None else ()
            return hostmeta.respond(
                request, config.websocket_path, config.bosh_path, tls=self.tls, domain=services.domain,
                others=others,
            )  # fmt: skip
        if request.path == config.bosh_path:
            if not self.endpoints.origins.admits(request, config.allowed_origins, endpoint="BOSH request",
                                                 remote=self.remote):  # fmt: skip
                return text_response(403, "origin not allowed")
            if request.method == "OPTIONS":
                return cors.preflight(request)
            if request.method != "POST":
                return Response(405, b"POST only\n", headers=[("Allow", "POST, OPTIONS")])
            response = await self.endpoints.bosh.handle(request, self.remote, secure=self.secure)
            response.headers.extend(cors.allow_headers(request))
            return response
        return text_response(404, "not found")

    # ---- reading -----------------------------------------------------------------------------

    async def _next_event(self, deadline: float) -> h11.Event | type[h11.PAUSED] | None:
        """The next h11 event; None when the peer closed or the deadline passed."""
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(READ_SIZE)
                self._raw += data
                self._h11.receive_data(bytes(data))
                continue
            return None

    async def _read_request(self, timeout: float) -> Request | None:
        deadline = trio.current_time() + timeout
        event = await self._next_event(deadline)
        if event is None:
            if self._raw.strip():  # a request started, and never finished in time
                await self.refuse(408, "request headers took too long")
            return None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        # h11 limits only a head that arrives in pieces; one that came whole is measured here.
        size = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
        if size > self.endpoints.config.max_header_size:
            await self.refuse(431, "request headers too large")
            return None
        return read_head(event)

    async def _read_body(self, request: Request) -> bytes | None:
        """The request body; None (after answering 413 or 408) when it is too big or too slow."""
        config = self.endpoints.config
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_size:
            await self.refuse(413, "request body too large")
            return None
        body = bytearray()
        deadline = trio.current_time() + config.header_timeout
        while True:
            event = await self._next_event(deadline)
            if event is None:
                await self.refuse(408, "request body took too long")
                return None
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > config.max_body_size:
                    await self.refuse(413, "request body too large")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                return None

    # ---- writing -----------------------------------------------------------------------------

    async def send(self, response: Response, request: Request | None = None) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        if request is None:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(response.status).phrase.encode()
        data = self._h11.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data = (data or b"") + (self._h11.send(h11.Data(data=response.body)) or b"")
        data += self._h11.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    async def refuse(self, status: int, text: str) -> None:
        """Answer with an error status and end the connection (if a response can still be sent)."""
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            await self.send(text_response(status, text))
        except (h11.LocalProtocolError, *TRANSPORT_GONE):
            pass


class _StreamedBody:
    """A module route's request body (`imactor.server.modules.HttpBody`), read from h11 as the
    handler asks for it; a client that pauses longer than ``[http] header_timeout`` is cut off."""

    def __init__(self, connection: HttpConnection) -> None:
        self._connection = connection
        self._done = False
        self.failed = False  #: it did not arrive whole: the connection closes, nothing more is read

    async def receive(self) -> bytes:
        connection = self._connection
        h11_connection = connection._h11
        if self._done:
            return b""
        if h11_connection.they_are_waiting_for_100_continue:  # RFC 9110 §10.1.1: tell it to go on
            go_on = h11_connection.send(h11.InformationalResponse(status_code=100, headers=[]))
            await connection.stream.send_all(go_on or b"")
        while True:
            deadline = trio.current_time() + connection.endpoints.config.header_timeout
            try:
                event = await connection._next_event(deadline)
            except h11.RemoteProtocolError as exc:
                self.failed = True
                raise HttpBodyError(str(exc)) from exc
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                self._done = True
                return b""
            self.failed = True
            raise HttpBodyError("the body did not arrive whole")
