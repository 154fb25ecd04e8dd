"""Client sockets driven by their owner's own system calls, with trio waiting only when they would block.

`trio.SocketStream` is built for the general case: every call is a trio socket call with its own
checkpoint, and every read first tries the socket, then waits. A session's traffic is small stanzas
that arrive one at a time, so each costs a failed `recv` (and its exception) before the wait, and
each write a scheduler round. `SocketStream` keeps the same contract (one sender and one receiver
at a time, every `async` call a checkpoint, `trio.BrokenResourceError` for a broken connection) and
adds what the session needs:

- `receive_some` waits before it reads when the last read drained the socket (it returned less
  than it asked for), so a quiet stream pays one `recv` per message, not two;
- `send_nowait` writes what the socket takes now, without a checkpoint, so a delivery can be
  written by whoever hands it over (`SessionActor._on_queued`) without waking a task;
- `send_all` has a patience (`send_patience`) instead of a cancel scope per write: the clock
  starts only if the socket is full.

`TLSSocketStream` (`imactor.c2s.tls_stream`) is the same over OpenSSL.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Awaitable, Callable
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

__all__ = ["SocketStream"]

T = TypeVar("T")
#: `trio.lowlevel.wait_readable` or `wait_writable`.
Waiter = Callable[[socket.socket], Awaitable[None]]


class SocketStream(trio.abc.Stream):
    """A plain TCP stream over a non-blocking socket."""

    __slots__ = ("_drained", "_receiving", "_sending", "_sock", "_waits", "send_patience")

    def __init__(self, sock: socket.socket, *, send_patience: float = math.inf) -> None:
        sock.setblocking(False)
        self._sock = sock
        #: Seconds one `send_all` may wait for the peer to read before it raises
        #: `trio.BrokenResourceError`; the clock starts only if the socket is full.
        self.send_patience = send_patience
        self._waits = 0  # times `_retry` waited for the socket: each wait was a checkpoint
        self._sending = False
        self._receiving = False
        #: The last read got less than it asked for: the socket was empty then.
        self._drained = False

    @classmethod
    def from_trio(cls, stream: trio.SocketStream, *, send_patience: float = math.inf) -> SocketStream:
        """Take over `stream`'s socket (trio's socket streams buffer nothing, so nothing is lost)."""
        return cls(socket.socket(fileno=stream.socket.detach()), send_patience=send_patience)

    def detach(self) -> socket.socket:
        """The socket, for a new owner (STARTTLS); this stream must not be used afterwards."""
        sock, self._sock = self._sock, socket.socket()  # a closed placeholder
        self._sock.close()
        return sock

    @property
    def socket(self) -> socket.socket:
        return self._sock

    # ---- the byte stream ---------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            await self._before_receive()
            size = max_bytes or 65536
            waits = self._waits
            if self._drained and not self._buffered():
                # Nothing was left when we last read: wait first instead of failing a recv.
                if self._sock.fileno() == -1:
                    raise trio.ClosedResourceError("the stream was closed")
                self._waits += 1
                await wait_readable(self._sock)
            try:
                data = await self._retry(self._recv, size, wait=wait_readable)
            except self._end_of_stream:
                data = b""
            self._drained = len(data) < size
            await self._checkpoint_unless_waited(waits)
            return data
        finally:
            self._receiving = False

    async def peek(self, max_bytes: int) -> bytes:
        """The next bytes, left in the socket for the next read (or another owner: STARTTLS
        sniffing hands them to OpenSSL). b"" at the end of the stream."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            waits = self._waits
            data = await self._retry(self._sock.recv, max_bytes, socket.MSG_PEEK, wait=wait_readable)
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
            await self._before_send()
            with memoryview(data) as view:
                deadline = trio.current_time() + self.send_patience
                waits = self._waits
                while view:
                    sent: int = await self._retry(self._send, view, wait=wait_writable, deadline=deadline)
                    view = view[sent:]
            await self._checkpoint_unless_waited(waits)
        finally:
            self._sending = False

    def send_nowait(self, data: bytes) -> int:
        """Write what the socket takes now; return how much of `data` is done.

        The caller passes the rest (``data[done:]``) to its next send. Not a checkpoint.

        Raises:
            trio.BusyResourceError: A `send_all` is in progress.
            trio.BrokenResourceError: The connection is broken.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        try:
            return self._send(data)
        except self._would_block:
            return 0
        except (OSError, ValueError) as exc:
            raise self._broken(exc) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await wait_writable(self._sock)

    async def aclose(self) -> None:
        sock = self._sock
        if sock.fileno() == -1:
            await checkpoint()
            return
        try:
            self._before_close()
        finally:
            notify_closing(sock)  # wakes a task still waiting on this socket
            sock.close()
        await checkpoint()

    # ---- what a subclass (TLS) changes -------------------------------------------------------

    #: What the socket calls raise when they would block.
    _would_block: tuple[type[BaseException], ...] = (BlockingIOError,)
    #: What a read raises when the peer ended the stream cleanly (besides returning b"").
    _end_of_stream: tuple[type[BaseException], ...] = ()

    def _send(self, data: bytes | memoryview) -> int:
        return self._sock.send(data)

    def _recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def _buffered(self) -> bool:
        """Input already read from the socket and not yet returned (TLS records)."""
        return False

    async def _before_receive(self) -> None:
        """What must happen before the first read (the TLS handshake)."""

    async def _before_send(self) -> None:
        """What must happen before the first write (the TLS handshake)."""

    def _before_close(self) -> None:
        """What to send before the socket closes (TLS close_notify)."""

    def _wait_for(self, blocked: BaseException, default: Waiter) -> Waiter:
        """What to wait for after a call raised `blocked`: a plain socket call waits for what it
        does (`default`); a TLS call may need the other direction (OpenSSL says which)."""
        return default

    # ---- helpers -----------------------------------------------------------------------------

    async def _checkpoint_unless_waited(self, waits: int) -> None:
        """End a call with trio's yield, unless the call already waited for the socket (a wait is
        a full checkpoint): a reply awaited by the client costs one scheduler round, not two."""
        if self._waits == waits:
            await cancel_shielded_checkpoint()

    def _broken(self, exc: BaseException) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if isinstance(exc, ValueError) or self._sock.fileno() == -1:
            return trio.ClosedResourceError("the stream was closed")
        return trio.BrokenResourceError(exc)

    async def _retry(
        self, operation: Callable[..., T], *args: object, wait: Waiter, deadline: float = math.inf
    ) -> T:
        """Call `operation` until it no longer asks to wait for the socket (until `deadline`)."""
        sock = self._sock
        while True:
            try:
                return operation(*args)
            except self._would_block as blocked:
                waiter = self._wait_for(blocked, wait)
                self._waits += 1
                if deadline == math.inf:
                    await waiter(sock)
                    continue
                with trio.move_on_at(deadline) as scope:
                    await waiter(sock)
                if scope.cancelled_caught:
                    raise trio.BrokenResourceError("send timed out: the peer is not reading") from None
            except self._end_of_stream:
                raise
            except (OSError, ValueError) as exc:
                raise self._broken(exc) from exc
