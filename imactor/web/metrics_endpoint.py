"""The node supervisor's metrics listener: ``GET /metrics`` and nothing else, one request per
connection (Prometheus opens a connection per scrape; keep-alive would buy nothing).

What to answer comes from the caller (`render`: the node's status document in Prometheus' text
format, `imactor.node.metrics`); this module only speaks HTTP. Only the networks in ``allow``
may read (403 for the others, before anything is rendered); a request that is not a GET or HEAD
of /metrics gets 405 or 404; a client that does not send its request within `REQUEST_TIMEOUT`
is dropped, and malformed HTTP gets h11's status (400 mostly). No request can stop the listener.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus

import h11
import trio

from imactor.web.messages import read_head
from imactor.web.node_listeners import Network, allowed, networks_of, serve_until_cancelled

log = logging.getLogger("imactor.metrics")

PATH = "/metrics"
#: What Prometheus expects of the text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 10.0
MAX_HEADER_SIZE = 16384
#: Scrapes served at once; beyond it a connection waits for its turn (a scrape is a status
#: request to every worker: a flood of them must not become a flood of those).
CONCURRENT_SCRAPES = 4

Render = Callable[[], Awaitable[bytes]]


async def serve_metrics(
    listeners: Sequence[trio.SocketListener],
    render: Render,
    allow: Sequence[str],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `render()`'s bytes at /metrics on `listeners`, to the networks in `allow`."""
    networks = networks_of(allow)
    limiter = trio.CapacityLimiter(CONCURRENT_SCRAPES)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await _one_request(stream, render, networks, limiter)  # (or the client went away)

    await serve_until_cancelled(handle, listeners, task_status=task_status)


async def _one_request(
    stream: trio.SocketStream,
    render: Render,
    networks: list[Network],
    limiter: trio.CapacityLimiter,
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_SIZE)
    with trio.move_on_after(REQUEST_TIMEOUT) as waited:
        try:
            event = await _next_request(stream, connection)
        except h11.RemoteProtocolError as exc:
            # h11 answers nothing once the request is broken: the status line by hand.
            status = exc.error_status_hint
            reason = HTTPStatus(status).phrase.encode()
            await stream.send_all(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                  % (status, reason))  # fmt: skip
            return
    if waited.cancelled_caught or event is None:
        return  # silent or gone: nothing to answer
    request = read_head(event)
    if not allowed(str(stream.socket.getpeername()[0]), networks):
        log.info("metrics: refused a request from %s (not in [listen.metrics] allow)",
                 stream.socket.getpeername()[0])  # fmt: skip
        await _send(stream, connection, 403, b"forbidden\n")
    elif request.path != PATH:
        await _send(stream, connection, 404, b"not found\n")
    elif request.method not in ("GET", "HEAD"):
        await _send(stream, connection, 405, b"GET or HEAD\n", [(b"Allow", b"GET, HEAD")])
    else:
        async with limiter:
            body = await render()
        await _send(stream, connection, 200, body, [(b"Content-Type", CONTENT_TYPE.encode())],
                    head_only=request.method == "HEAD")  # fmt: skip


async def _next_request(stream: trio.SocketStream, connection: h11.Connection) -> h11.Request | None:
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            connection.receive_data(data)  # b"": the client closed; h11 then says so
            continue
        return None  # ConnectionClosed (or a request-less event): nothing to answer


async def _send(
    stream: trio.SocketStream, connection: h11.Connection, status: int, body: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (), *, head_only: bool = False,
) -> None:  # fmt: skip
    if connection.our_state is not h11.SEND_RESPONSE:
        return  # h11 cannot answer in this state (the request never fully arrived)
    response = h11.Response(status_code=status, headers=[
        *headers, (b"Content-Length", str(len(body)).encode()), (b"Connection", b"close"),
    ])  # fmt: skip
    data = connection.send(response) or b""
    if not head_only:
        data += connection.send(h11.Data(data=body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
