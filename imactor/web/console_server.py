"""The admin console's HTTP listener (the application is `imactor.console`): one request per
connection (h11 on Trio, TLS when configured).

A browser opens another connection for the next page; an admin console serves a person, not a
crowd, and a connection that ends after each answer needs no keep-alive bookkeeping. Limits, so
that nothing a client sends can stop the listener or hold it: the head within `MAX_HEAD` bytes
(431) and `REQUEST_TIMEOUT` seconds (408, or silence), a body within `MAX_BODY` bytes (413,
declared or counted), at most `MAX_CONNECTIONS` requests handled at once (503). Malformed HTTP gets
h11's status hint (400 mostly). Only the networks in ``allow`` are served (403). A handler's
failure is logged and answered with 500: the node supervisor runs this listener, and no page's
bug may end it.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus

import h11
import trio

from imactor.web.messages import Request, Response, read_head, text_response
from imactor.web.node_listeners import Network, allowed, networks_of, serve_until_cancelled

log = logging.getLogger("imactor.console")

MAX_HEAD = 16384
#: Bytes of a form: far more than any form of the console needs; a word list import is a
#: textarea of words, one a line.
MAX_BODY = 262144
REQUEST_TIMEOUT = 10.0
#: Requests handled at once; beyond it 503 (each may hold a database thread or a status command).
MAX_CONNECTIONS = 16
#: Seconds a request's handling may take (a status command to the workers takes up to 17).
HANDLER_TIMEOUT = 30.0
READ_SIZE = 16384
TRANSPORT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

#: The application: a request, the peer's address, and whether the connection is TLS.
Handler = Callable[[Request, str, bool], Awaitable[Response]]


async def serve_console(
    listeners: Sequence[trio.SocketListener],
    handler: Handler,
    allow: Sequence[str],
    ssl_context: ssl.SSLContext | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on `listeners` to the networks in `allow` (HTTPS with `ssl_context`)."""
    networks = networks_of(allow)
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def handle(tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        try:
            remote = str(tcp.socket.getpeername()[0])
            if ssl_context is not None:
                stream = trio.SSLStream(tcp, ssl_context, server_side=True)
            connection = _Connection(stream, remote)
            with trio.move_on_after(REQUEST_TIMEOUT):
                if isinstance(stream, trio.SSLStream):
                    await stream.do_handshake()
                await connection.serve(handler, networks, slots, tls=ssl_context is not None)
        except (*TRANSPORT_GONE, ssl.SSLError):
            pass  # the client went away, or spoke no TLS
        finally:
            with trio.move_on_after(1, shield=True), contextlib.suppress(*TRANSPORT_GONE, ssl.SSLError):
                await stream.aclose()

    await serve_until_cancelled(handle, listeners, task_status=task_status)


class _Connection:
    def __init__(self, stream: trio.abc.Stream, remote: str) -> None:
        self.stream = stream
        self.remote = remote
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def serve(
        self, handler: Handler, networks: list[Network], slots: trio.Semaphore, *, tls: bool
    ) -> None:
        """Read the request (within the caller's deadline), then answer it: the handler runs
        under its own deadline, as long as a status command to the workers may take."""
        try:
            request = await self._read()
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint)
            return
        if request is None:
            return
        if isinstance(request, Response):
            await self.answer(request)
        elif not allowed(self.remote, networks):
            log.info("console: refused a request from %s (not in [listen.console] allow)", self.remote)
            await self.answer(text_response(403, "forbidden"))
        elif slots.value == 0:
            await self.answer(text_response(503, "too many requests at once"))
        else:
            async with slots:
                with trio.CancelScope(deadline=trio.current_time() + HANDLER_TIMEOUT):
                    try:
                        response = await handler(request, self.remote, tls)
                    except Exception:  # a protocol boundary: one page's bug must not stop the console
                        log.exception("console: %s %s failed", request.method, request.path)
                        response = text_response(500, "internal error (logged)")
                    await self.answer(response, head_only=request.method == "HEAD")

    async def _read(self) -> Request | Response | None:
        """The request, whole; a `Response` that refuses it; None when the client left."""
        head: Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(READ_SIZE)
                self.h11.receive_data(bytes(data))  # b"": the client closed; h11 then says so
            elif isinstance(event, h11.Request):
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > MAX_HEAD:
                    return text_response(431, "request headers too large")
                head = read_head(event)
                declared = head.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > MAX_BODY:
                    return text_response(413, "request body too large")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return text_response(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return Request(head.method, head.path, head.headers, bytes(body), head.query)
            else:
                return None  # ConnectionClosed

    async def _refuse(self, status: int) -> None:
        # h11 answers nothing once the request is broken: the status line by hand.
        reason = HTTPStatus(status).phrase.encode()
        await self.stream.send_all(
            b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason)
        )

    async def answer(self, response: Response, *, head_only: bool = False) -> None:
        if self.h11.our_state is not h11.SEND_RESPONSE:
            return  # h11 cannot answer in this state (the request never fully arrived)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
            *response.headers,
        ]
        reason = HTTPStatus(response.status).phrase.encode()
        data = self.h11.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b""
        if not head_only:
            data += self.h11.send(h11.Data(data=response.body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
