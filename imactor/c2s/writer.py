"""ClientWriter: the write side of one client connection.

A session's reader, its writer task, the stanzas it answers itself and the account's deliveries
all end in what the sans-IO `ServerStream` has queued; this object is the one place that hands
those bytes to the transport. It owns the transport (the session reads from `transport`, which a
STARTTLS upgrade or a XEP-0198 resumption replaces through `upgrade` and `adopt`), the write
lock, the bytes a socket did not take, and XEP-0198's count of what was sent.

Two ways to write:
- `flush`, under the write lock, awaiting the socket (a reader, the session's writer task);
- `write_nowait`, from another actor's task that delivered a message (`SessionActor._on_queued`):
  what the socket takes at once goes, the rest stays in `unsent` for the next `flush`.

The writer calls nothing back in the session but `on_lost`, given at construction: a write that
found the transport gone tells the session so, and the session decides when its reader stops.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable

import trio

from imactor.c2s.socket_stream import SocketStream
from imactor.c2s.tls_stream import TLSSocketStream
from imactor.c2s.transport import FramedStream
from imactor.xmpp import sm
from imactor.xmpp.stream import ServerStream, State

#: Seconds a write may wait for a client to read before the client is cut off.
WRITE_TIMEOUT = 30.0
#: Seconds the last writes of an ending session may wait for the client to read them.
CLOSE_PATIENCE = 2.0
#: What a dead or misbehaving peer makes socket calls raise.
TRANSPORT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


class ClientWriter:
    __slots__ = ("_flushing", "_lock", "_on_lost", "_unacked_limit", "_unsent", "sm", "stream", "transport")

    def __init__(
        self,
        transport: trio.abc.Stream,
        stream: ServerStream,
        stream_management: sm.StreamManagement,
        *,
        unacked_limit: int,
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self.transport = transport
        self.stream = stream
        #: The session's XEP-0198 state (replaced when a session resumes from another worker).
        self.sm = stream_management
        #: Stanzas a client may leave unacknowledged before it is cut off.
        self._unacked_limit = unacked_limit
        self._on_lost = on_lost
        #: Bytes `write_nowait` could not hand to the socket: the next flush sends them first
        #: (for TLS, OpenSSL wants them again, as they were).
        self._unsent = b""
        self._lock = trio.Lock()
        #: A task is in `flush`'s loop: what the stream says meanwhile goes out with it.
        self._flushing = False

    # ---- what the session asks before it writes without a task ---------------------------------

    @property
    def lock(self) -> trio.Lock:
        """Held while a hand-over reads and rewrites the stream's XEP-0198 state."""
        return self._lock

    @property
    def flushing(self) -> bool:
        return self._flushing

    @property
    def has_unsent(self) -> bool:
        return bool(self._unsent)

    def can_write_nowait(self) -> bool:
        """A write without a task can go now: nothing is being written (or a flush in progress
        will send it), nothing waits from before, and the transport is a socket."""
        return (
            (self._flushing or not self._lock.locked())
            and not self._unsent
            and isinstance(self.transport, SocketStream)
            and self.stream.state is not State.CLOSED
        )

    # ---- a new transport -----------------------------------------------------------------------

    def upgrade(self, transport: trio.abc.Stream) -> None:
        """The same connection, now under TLS (STARTTLS, or a TLS hello on the STARTTLS port)."""
        self.transport = transport

    def adopt(self, transport: trio.abc.Stream, stream: ServerStream) -> None:
        """A resumption's connection and stream replace ours. What our socket had not taken went
        with it: XEP-0198 sends those stanzas again."""
        self.transport, self.stream, self._unsent = transport, stream, b""

    # ---- writing -------------------------------------------------------------------------------

    def write_nowait(self) -> None:
        """Hand what the stream has queued to the socket, without waiting: the parts of `flush`
        that need no wait. What the socket does not take stays in `unsent`."""
        assert isinstance(self.transport, SocketStream)
        self.track_sent()
        data = self.stream.data_to_send()
        if data:
            try:
                done = self.transport.send_nowait(data)
            except TRANSPORT_GONE as exc:
                self._on_lost(exc)
                return
            if done < len(data):
                self._unsent = data[done:]

    async def flush(self) -> None:
        """Write what the stream has queued. A transport that is gone raises nothing here (the
        session's `on_lost` decides): what was queued is lost with it, as unread data is with any
        connection (stream management has counted the stanzas as unacknowledged)."""
        try:
            await self._flush_now()
        except TRANSPORT_GONE as exc:
            self._on_lost(exc)

    async def _flush_now(self) -> None:
        lock = self._lock
        # No checkpoint to take a free lock: the write below is one (a login flushes ten times).
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        self._flushing = True
        try:
            # Output queued while we waited for the socket (a tick's ping, a delivery written
            # without a task) goes too.
            while True:
                await self._flush_locked()
                if not self.stream.has_output() and not self._unsent:
                    break
        finally:
            self._flushing = False
            lock.release()

    async def _flush_locked(self) -> None:
        self.track_sent()
        if isinstance(self.transport, FramedStream):
            frames = self.stream.frames_to_send()
            with trio.move_on_after(WRITE_TIMEOUT) as scope:
                if frames:
                    await self.transport.send_frames(frames)
            if scope.cancelled_caught:
                # A client that stops reading is cut off rather than hold the worker's memory.
                raise trio.BrokenResourceError("write timed out: client not reading")
            return
        data = self.stream.data_to_send()
        if self._unsent:
            data, self._unsent = self._unsent + data, b""
        if data:
            # A SocketStream times out itself (send_patience), with no timer while it has room:
            # a client that stops reading is cut off rather than hold the worker's memory.
            await self.transport.send_all(data)

    def track_sent(self) -> None:
        """XEP-0198: count what the stream sent, cut off a client that leaves too much of it
        unacknowledged, and ask for an ack every `sm.ack_every` stanzas."""
        if not self.stream.track_sent:
            return
        self.count_sent()
        if len(self.sm.unacked) > self._unacked_limit:
            self.stream.close("policy-violation", "too many unacknowledged stanzas")
        elif self.sm.wants_ack_request():
            self.stream.send_nonza(sm.REQUEST)
            self.sm.ack_requested()

    def count_sent(self) -> None:
        """XEP-0198: count what the stream sent, before its state is read for a hand-over."""
        for data in self.stream.take_sent():
            self.sm.stanza_sent(data)

    # ---- the end -------------------------------------------------------------------------------

    def detach(self) -> None:
        """The session ended: tell it nothing more. `on_lost` is the session's bound method, and
        the session holds this writer: a reference cycle that would leave the ended session, its
        stream and everything it references to the cyclic collector, which a worker runs rarely
        (`imactor.worker.process.tune_gc`)."""
        self._on_lost = _ignore_loss

    async def close(self) -> None:
        """Send what is queued, within `CLOSE_PATIENCE`, and close the transport."""
        transport = self.transport
        if isinstance(transport, TLSSocketStream) and not transport.handshaken:
            # TLS never came up (a silent or failed handshake): nothing can be said, and a
            # flush would start the handshake again from the write side.
            with contextlib.suppress(*TRANSPORT_GONE):
                await transport.aclose()
            return
        if isinstance(transport, SocketStream) and not self._lock.locked():
            # Its writes time out by themselves (a client that does not read gets 2 s more, not
            # 30), and closing it never waits: no timer per session's end.
            transport.send_patience = min(transport.send_patience, CLOSE_PATIENCE)
            with contextlib.suppress(*TRANSPORT_GONE):
                await self.flush()
            with contextlib.suppress(*TRANSPORT_GONE):
                await transport.aclose()
            return
        with trio.move_on_after(CLOSE_PATIENCE):
            with contextlib.suppress(*TRANSPORT_GONE):
                await self.flush()
        with trio.move_on_after(1):
            with contextlib.suppress(*TRANSPORT_GONE):
                await transport.aclose()


def _ignore_loss(_exc: BaseException) -> None:
    """A detached writer's `on_lost`: its session has ended already."""
