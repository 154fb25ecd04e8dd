"""TLS on a client socket, with OpenSSL reading and writing the socket itself.

`trio.SSLStream` runs OpenSSL over two memory BIOs and moves every record through Python: a
write is an encrypt into the outgoing BIO, a copy out of it and a trio socket send; a read is the
mirror image. For a server whose traffic is many small stanzas that costs more than the
encryption (about 29 µs per 200-byte write, against 13 µs when OpenSSL writes the socket), and the
two BIOs keep the size of the largest burst they ever carried for the life of the connection.

`TLSSocketStream` hands the socket to OpenSSL instead (a non-blocking `ssl.SSLSocket`) and only
waits with trio when OpenSSL says it would block. It serves both STARTTLS (the TCP stream is
taken over after <proceed/>) and direct TLS (XEP-0368).

Like trio's streams it allows one sender and one receiver at a time, every call is a checkpoint,
and a broken connection raises `trio.BrokenResourceError` (from the `ssl.SSLError` or
`OSError` that broke it). A connection that ends without TLS close_notify reads as end of stream
(CPython's `suppress_ragged_eofs`): XMPP tells a clean end by </stream:stream>, so the session
still treats it as unclean (and keeps a XEP-0198 session resumable).
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    notify_closing,
    wait_readable,
    wait_writable,
)

__all__ = ["TLSSocketStream"]

T = TypeVar("T")


class TLSSocketStream(trio.abc.Stream):
    """A server-side TLS stream over a socket that OpenSSL drives directly."""

    __slots__ = ("_handshaken", "_receiving", "_sending", "_sock", "_waits", "send_patience")

    def __init__(self, sock: ssl.SSLSocket, *, send_patience: float = math.inf) -> None:
        sock.setblocking(False)
        self._sock = sock
        #: Seconds one `send_all` may wait for the peer to read before it raises
        #: `trio.BrokenResourceError`; the clock starts only if the socket is full, so the common
        #: write that fits costs no timer.
        self.send_patience = send_patience
        self._waits = 0  # times `_retry` waited for the socket: each wait was a checkpoint
        self._sending = False
        self._receiving = False
        self._handshaken = False

    @classmethod
    def server_side(
        cls, transport: trio.SocketStream, context: ssl.SSLContext, *, send_patience: float = math.inf
    ) -> TLSSocketStream:
        """Take over `transport`'s socket for a TLS server session (the handshake is not done yet).

        `transport` must not be used afterwards: its socket is detached, and it holds no buffered
        input (trio's socket streams buffer nothing), so no byte is lost in the switch.
        """
        raw = socket.socket(fileno=transport.socket.detach())
        sock = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        return cls(sock, send_patience=send_patience)

    @property
    def ssl_object(self) -> ssl.SSLSocket:
        """The TLS session: protocol version, channel bindings, ALPN."""
        return self._sock

    async def do_handshake(self) -> None:
        """Run the TLS handshake; a no-op once it is done.

        `send_all` and `receive_some` run it too if needed, but the owner should await it
        before it sends and receives from two tasks: two tasks waiting on the one socket for
        the same handshake would make trio raise `BusyResourceError` (trio's `SSLStream`
        serializes that case; the sessions and the HTTP server here never need it).
        """
        if self._handshaken:
            await checkpoint()
            return
        await checkpoint_if_cancelled()
        waits = self._waits
        await self._retry(self._sock.do_handshake)
        self._handshaken = True
        await self._checkpoint_unless_waited(waits)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            if not self._handshaken:
                await self.do_handshake()
            waits = self._waits
            try:
                data: bytes = await self._retry(self._sock.recv, max_bytes or 65536)
            except ssl.SSLZeroReturnError:
                data = b""  # the peer's close_notify
            await self._checkpoint_unless_waited(waits)
            return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            if not self._handshaken:
                await self.do_handshake()
            with memoryview(data) as view:
                # Without SSL_MODE_ENABLE_PARTIAL_WRITE (CPython does not set it) OpenSSL writes all
                # or asks to be called again with the same bytes; either way `sent` tells.
                deadline = trio.current_time() + self.send_patience
                waits = self._waits
                while view:
                    sent: int = await self._retry(self._sock.send, view, deadline=deadline)
                    view = view[sent:]
            await self._checkpoint_unless_waited(waits)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await wait_writable(self._sock)

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it at once (not waiting for the peer's), close."""
        sock = self._sock
        if sock.fileno() == -1:
            await checkpoint()
            return
        try:
            if self._handshaken:
                # The first SSL_shutdown call sends our close_notify; waiting for the peer's would
                # let a silent peer hold the connection open.
                with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                    sock.unwrap()
        finally:
            notify_closing(sock)  # wakes a task still waiting on this socket
            sock.close()
        await checkpoint()

    async def _checkpoint_unless_waited(self, waits: int) -> None:
        """End a call with trio's yield, unless the call already waited for the socket (a wait is
        a full checkpoint): a reply awaited by the client costs one scheduler round, not two."""
        if self._waits == waits:
            await cancel_shielded_checkpoint()

    async def _retry(self, operation: Callable[..., T], *args: object, deadline: float = math.inf) -> T:
        """Call `operation` until OpenSSL no longer asks to wait for the socket (until `deadline`)."""
        sock = self._sock
        while True:
            try:
                return operation(*args)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
                wait = wait_readable if isinstance(want, ssl.SSLWantReadError) else wait_writable
                self._waits += 1
                if deadline == math.inf:
                    await wait(sock)
                    continue
                with trio.move_on_at(deadline) as scope:
                    await wait(sock)
                if scope.cancelled_caught:
                    raise trio.BrokenResourceError("send timed out: the peer is not reading") from None
            except ssl.SSLZeroReturnError:
                raise
            except (ssl.SSLError, OSError) as exc:
                if sock.fileno() == -1:
                    raise trio.ClosedResourceError("the TLS stream was closed") from exc
                raise trio.BrokenResourceError(exc) from exc
            except ValueError as exc:  # "I/O operation on closed socket" and the like
                raise trio.ClosedResourceError("the TLS stream was closed") from exc
