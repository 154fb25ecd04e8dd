"""Accept loops: one per client port; each connection becomes a TEMPORARY SessionActor."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio

from imactor.c2s.tls_stream import TLSSocketStream
from imactor.c2s.writer import WRITE_TIMEOUT
from supervisors import ChildSpec, Restart

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.listener")


async def open_listener(host: str, port: int) -> trio.SocketListener:
    """Bind with SO_REUSEPORT where available so that several workers can share one port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # "::" must not also claim the IPv4 port: 0.0.0.0 may be listed beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def open_listeners(hosts: Sequence[str], port: int) -> list[trio.SocketListener]:
    """One listener per address, all on one port (the first bind chooses it when `port` is 0).

    Error handling: an address this machine does not have (e.g. ::1 with IPv6 off) is skipped
    with a warning as long as another one binds; if none does, the first error is raised.
    """
    listeners: list[trio.SocketListener] = []
    first_error: OSError | None = None
    for host in hosts:
        try:
            listener = await open_listener(host, port)
        except OSError as exc:
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                for opened in listeners:
                    await opened.aclose()
                raise
            log.warning("not listening on %s: %s", host, exc.strerror)
            first_error = first_error or exc
            continue
        listeners.append(listener)
        port = listener.socket.getsockname()[1]
    if not listeners:
        assert first_error is not None
        raise first_error
    return listeners


async def accept(listener: trio.SocketListener) -> tuple[trio.SocketStream, str]:
    """The next connection and its peer's address, with Nagle off (stanzas are small and late
    bytes are latency). An accept that fails (EMFILE and friends) is retried after a pause
    instead of spinning; a connection gone before we saw its address is skipped.

    The listener is never closed here: it is the node's shared socket, and a restarted accept
    loop takes it up again."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            log.warning("accept failed: %s", exc)
            await trio.sleep(0.1)
            continue
        try:
            remote = stream.socket.getpeername()[0]
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            await stream.aclose()
            continue
        return stream, str(remote)


async def serve_each(
    listener: trio.SocketListener,
    handle: Callable[[trio.SocketStream, str], Awaitable[object]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections forever (`accept`), each handled by `handle(stream, remote)` in a task
    of its own (the accept loops of federation and external components)."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            stream, remote = await accept(listener)
            nursery.start_soon(handle, stream, remote)


async def serve_c2s(
    services: Services,
    listener: trio.SocketListener,
    *,
    direct_tls: bool,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept client connections forever; STARTTLS streams or, with `direct_tls`, XEP-0368 TLS."""
    from imactor.c2s.session import SessionActor

    supervisor = services.session_supervisor
    assert supervisor is not None
    task_status.started()
    while True:
        tcp, remote = await accept(listener)
        stream: trio.abc.Stream = (
            TLSSocketStream.server_side(tcp, services.ssl_context, send_patience=WRITE_TIMEOUT)
            if direct_tls
            else tcp
        )
        session = SessionActor(services, stream, remote, direct_tls=direct_tls)
        # Nothing to wait for: the session reports no value, and a start round trip per
        # connection is a login's cost. The accept loop still yields at every accept.
        supervisor.start_child_soon(
            ChildSpec(id=str(session.address), start=session.run, restart=Restart.TEMPORARY)
        )
