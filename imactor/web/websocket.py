"""XMPP over WebSocket (RFC 7395) with trio-websocket: the handshake, and the transport a session uses.

The HTTP layer hands over an upgrade request to ``[http] websocket_path``; its origin is checked
here (`imactor.web.cors`: any by default, ``[http] allowed_origins`` restricts; 403 otherwise).
The client must offer the ``xmpp`` subprotocol (§3.1): without it the handshake is refused with
400, since no XMPP can be spoken on the socket. Otherwise the handshake is replayed
to trio-websocket, which answers 101 with ``Sec-WebSocket-Protocol: xmpp``, and the connection
becomes a `WebSocketTransport` under an ordinary `SessionActor`: the same SASL, binding, stream
management and resumption as TCP clients. RFC 7395 framing (<open/>, <close/>, one element per
message, and the stream errors for frames that break it) lives in the sans-IO stream
(`imactor.xmpp.framing`). Messages must be text (§3.2); a binary one closes the WebSocket with 1003.
A message longer than the stanza limit is a ``policy-violation``; one longer than that plus
`MESSAGE_SLACK` is refused by trio-websocket itself (close code 1009) before it is buffered whole.

With ``[http] see_other_uri`` set, every client is sent there (§3.6.2): its <open/> is answered
with <open/> and <close see-other-uri/>, and no session starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import trio
import trio_websocket

from imactor.c2s.session import SessionActor
from imactor.c2s.transport import FramedStream
from imactor.web.messages import Request, text_response
from imactor.xmpp.errors import RemoteProtocolError
from imactor.xmpp.framing import close_frame, open_frame, parse_frame
from imactor.xmpp.parser import StreamOpened
from supervisors import ChildSpec, Restart

if TYPE_CHECKING:
    from imactor.web.endpoints import WebEndpoints
    from imactor.web.messages import Response

log = logging.getLogger("imactor.web")

SUBPROTOCOL = "xmpp"
#: Bytes a message may exceed the stanza limit by before trio-websocket drops the connection
#: (the XML of <open/>, or a stanza's whitespace: the stanza limit itself answers the rest).
MESSAGE_SLACK = 4096
#: WebSocket close codes (RFC 6455 §7.4.1).
UNSUPPORTED_DATA = 1003


class HttpConnection(Protocol):
    """What an upgrade needs of the HTTP connection it takes over (`imactor.web.http_server`)."""

    endpoints: WebEndpoints
    stream: trio.abc.Stream
    remote: str
    secure: bool

    async def send(self, response: Response, request: Request | None = None) -> None: ...

    async def refuse(self, status: int, text: str) -> None: ...


async def serve_websocket(http: HttpConnection, request: Request, raw: bytes) -> None:
    """Upgrade `http`'s connection (whose request so far is `raw`) and run a session on it."""
    endpoints = http.endpoints
    config = endpoints.config
    if not endpoints.origins.admits(request, config.allowed_origins, endpoint="WebSocket upgrade",
                                    remote=http.remote):  # fmt: skip
        await http.refuse(403, "origin not allowed")
        return
    offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
    if SUBPROTOCOL not in offered:
        await http.send(text_response(400, "RFC 7395: the 'xmpp' WebSocket subprotocol is required"))
        return
    limits = endpoints.services.config.limits
    async with trio.open_nursery() as nursery:
        replay = _Replay(http.stream, raw)
        with trio.move_on_after(config.header_timeout):
            ws_request = await trio_websocket.wrap_server_stream(
                nursery, replay, max_message_size=limits.max_stanza_size + MESSAGE_SLACK
            )
            connection = await ws_request.accept(subprotocol=SUBPROTOCOL)
            transport = WebSocketTransport(connection, replay, secure=http.secure)
            if config.see_other_uri:
                await _redirect(transport, config.see_other_uri, endpoints.services.domain)
                return
            await _start_session(http, transport)
            return
        nursery.cancel_scope.cancel()  # the handshake did not finish in time


async def _start_session(http: HttpConnection, transport: WebSocketTransport) -> None:
    """Run the session under the worker's session supervisor; the WebSocket's reader task stays
    in this connection's nursery until the WebSocket closes."""
    services = http.endpoints.services
    supervisor = services.session_supervisor
    assert supervisor is not None
    session = SessionActor(services, transport, http.remote, direct_tls=False)
    await supervisor.start_child(
        ChildSpec(id=str(session.address), start=session.run, restart=Restart.TEMPORARY)
    )


async def _redirect(transport: WebSocketTransport, uri: str, domain: str) -> None:
    """§3.6.2: answer the client's <open/> with ours and a <close/> that names the other endpoint."""
    with trio.move_on_after(10):
        try:
            opened = parse_frame(await transport.receive_some(), max_stanza_size=8192)
        except RemoteProtocolError:
            opened = None
        if isinstance(opened, StreamOpened):
            await transport.send_frames([open_frame("redirect", domain), close_frame(uri)])
    await transport.aclose()


class WebSocketTransport(FramedStream):
    """A WebSocket as the session's transport: one text message per frame, either way."""

    def __init__(
        self, connection: trio_websocket.WebSocketConnection, raw: trio.abc.Stream, *, secure: bool
    ) -> None:
        self._ws = connection
        self._raw = raw
        self.secure = secure

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next message, whole (never cut at `max_bytes`); ``b""`` once the WebSocket closed."""
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            return b""
        if isinstance(message, bytes):
            await self._ws.aclose(UNSUPPORTED_DATA, "XMPP frames are text messages")
            return b""
        return message.encode()

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        try:
            for frame in frames:
                await self._ws.send_message(frame.decode())
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError("the WebSocket is closed") from exc

    async def aclose(self) -> None:
        """The closing handshake (bounded), then the connection itself."""
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self._ws.aclose()
        await self._raw.aclose()


class _Replay(trio.abc.Stream):
    """`stream`, with the bytes the HTTP layer already read put back in front."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()
