"""TLS on a client socket, with OpenSSL reading and writing the socket itself.

`trio.SSLStream` runs OpenSSL over two memory BIOs and moves every record through Python: a
write is an encrypt into the outgoing BIO, a copy out of it and a trio socket send; a read is the
mirror image. For a server whose traffic is many small stanzas that costs more than the
encryption (about 29 µs per 200-byte write, against 13 µs when OpenSSL writes the socket), and the
two BIOs keep the size of the largest burst they ever carried for the life of the connection.

`TLSSocketStream` hands the socket to OpenSSL instead (a non-blocking `ssl.SSLSocket`) and only
waits with trio when OpenSSL says it would block. It serves both STARTTLS (the TCP stream is
taken over after <proceed/>) and direct TLS (XEP-0368). It is a `SocketStream`
(`imactor.c2s.socket_stream`): the same contract and the same cheap paths (`send_nowait`, a
read that waits first once the socket was drained and OpenSSL holds no decrypted bytes).

A connection that ends without TLS close_notify reads as end of stream (CPython's
`suppress_ragged_eofs`): XMPP tells a clean end by </stream:stream>, so the session still treats
it as unclean (and keeps a XEP-0198 session resumable).
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl

import trio
from trio.lowlevel import checkpoint, checkpoint_if_cancelled, wait_readable, wait_writable

from imactor.c2s.socket_stream import SocketStream, Waiter

__all__ = ["TLSSocketStream"]


class TLSSocketStream(SocketStream):
    """A server-side TLS stream over a socket that OpenSSL drives directly."""

    __slots__ = ("_handshaken",)

    _sock: ssl.SSLSocket
    _would_block = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
    _end_of_stream = (ssl.SSLZeroReturnError,)  # the peer's close_notify

    def __init__(self, sock: ssl.SSLSocket, *, send_patience: float = math.inf) -> None:
        super().__init__(sock, send_patience=send_patience)
        self._handshaken = False

    @classmethod
    def server_side(
        cls, transport: trio.SocketStream | SocketStream, context: ssl.SSLContext, *,
        send_patience: float = math.inf,
    ) -> TLSSocketStream:  # fmt: skip
        """Take over `transport`'s socket for a TLS server session (the handshake is not done yet).

        `transport` must not be used afterwards: its socket is detached, and it holds no buffered
        input (neither kind of socket stream buffers anything), so no byte is lost in the switch.
        """
        if isinstance(transport, SocketStream):
            raw = transport.detach()
        else:
            raw = socket.socket(fileno=transport.socket.detach())
        sock = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        return cls(sock, send_patience=send_patience)

    @property
    def handshaken(self) -> bool:
        """Whether the TLS handshake is done (before it, nothing can be said to the peer)."""
        return self._handshaken

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
        await self._retry(self._sock.do_handshake, wait=wait_readable)
        self._handshaken = True
        await self._checkpoint_unless_waited(waits)

    def send_nowait(self, data: bytes) -> int:
        """`SocketStream.send_nowait`; before the handshake nothing is written (0).

        Without SSL_MODE_ENABLE_PARTIAL_WRITE (CPython does not set it) OpenSSL writes all of
        `data` or asks to be called again with the same bytes (any buffer that starts with them:
        CPython sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), so the answer is all or 0.
        """
        if not self._handshaken:
            return 0
        return super().send_nowait(data)

    # ---- SocketStream's hooks ----------------------------------------------------------------

    def _buffered(self) -> bool:
        return self._sock.pending() > 0

    async def _before_receive(self) -> None:
        if not self._handshaken:
            await self.do_handshake()

    async def _before_send(self) -> None:
        if not self._handshaken:
            # A write before the handshake (a session ending before TLS was up) waits for the
            # handshake no longer than for the write itself: a silent peer must not hold it.
            with trio.move_on_after(self.send_patience) as scope:
                await self.do_handshake()
            if scope.cancelled_caught:
                raise trio.BrokenResourceError("the TLS handshake did not end in time for a write")

    def _before_close(self) -> None:
        """Send close_notify if the socket takes it at once (not waiting for the peer's)."""
        if self._handshaken:
            # The first SSL_shutdown call sends our close_notify; waiting for the peer's would
            # let a silent peer hold the connection open.
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self._sock.unwrap()

    def _wait_for(self, blocked: BaseException, default: Waiter) -> Waiter:
        return wait_readable if isinstance(blocked, ssl.SSLWantReadError) else wait_writable
