"""Resumption: a session's XEP-0198 hand-over, from the side of the session being resumed.

Once a client enabled resumption (XEP-0198 §5), a transport that breaks without
</stream:stream> leaves its session *detached*: still bound in its account, holding what is
delivered, until a new connection resumes it or `max` seconds pass. Two kinds of connection may
resume it:

- one on the same worker (`offer`): the detached session adopts the new connection's transport
  and stream and carries on under the same actor reference (`adopt_connection`), so its account
  never notices;
- one on another worker (`offer_remote`, sent by the mesh): the session gives its state away as
  an `m.MovedSession` (`move_out`) and ends quietly, passing on what is still delivered to it
  (`forward`); the new session takes the state with `resume_moved`.

This object owns that state and the steps that read and rewrite the stream's XEP-0198 counts
under the writer's lock. It knows the session only through what the session hands each step:
the writer, the durable acknowledgements and the account-facing values of a `MovedSession`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from imactor import messages as m
from imactor.actors import ActorGone, ActorRef
from imactor.c2s.durable import DurableAcks
from imactor.c2s.writer import ClientWriter
from imactor.xmpp import sm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.stream import ServerStream

#: Seconds a session resumed on another worker waits for its pending stores before it hands over
#: (the resuming side asks with `TAKE_OVER_TIMEOUT`).
MOVE_SETTLE = 4.0
TAKE_OVER_TIMEOUT = 10.0


#: Writes <resumed/> (the bytes) for the session of this full JID, the way the request came: a
#: XEP-0388 <success/> with the features after it, for a resumption inline in SASL2.
ResumedAnswer = Callable[[JID, bytes], None]


@dataclass(frozen=True, slots=True)
class Handover:
    """What a resuming connection gives the detached session: its transport and stream."""

    transport: trio.abc.Stream
    stream: ServerStream
    h: int
    remote: str
    #: How to answer <resumed/>; None: as a nonza (XEP-0198 §5).
    answer: ResumedAnswer | None = None


class Resumption:
    __slots__ = ("_local", "_ready", "_remote", "detached", "handed_over", "held", "moved_to")

    def __init__(self) -> None:
        #: The transport is gone and the session waits for a resumption.
        self.detached = False
        #: This session gave its transport (to a detached session) or its state (to another
        #: worker) away: it ends without unbinding or closing anything.
        self.handed_over = False
        #: Delivered while detached or after the stream closed: not yet sent, not yet counted.
        self.held: list[bytes] = []
        #: Resumed on another worker: deliveries go on to this session (`forward`).
        self.moved_to: ActorRef[m.SessionMessage] | None = None
        self._local: Handover | None = None
        self._remote: m.TakeOver | None = None
        #: Set when a resumption arrives: created on demand (`wait`).
        self._ready: trio.Event | None = None

    # ---- a resumption arrives ------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """A connection asked to resume this session and the session has not acted on it yet."""
        return self._local is not None or self._remote is not None

    @property
    def remote(self) -> m.TakeOver | None:
        return self._remote

    def offer(self, handover: Handover) -> None:
        """A connection on this worker resumes the session (called from its actor, synchronously)."""
        self._local = handover
        self._event().set()

    def offer_remote(self, request: m.TakeOver) -> None:
        """A connection on another worker resumes the session (the mesh passed its request on)."""
        self._remote = request
        self._event().set()

    async def wait(self, seconds: float) -> None:
        """Until a resumption arrives or `seconds` pass."""
        with trio.move_on_after(seconds):
            await self._event().wait()

    def _event(self) -> trio.Event:
        event = self._ready
        if event is None:
            event = self._ready = trio.Event()
        return event

    # ---- what is delivered meanwhile -----------------------------------------------------------

    def hold(self, data: bytes) -> None:
        self.held.append(data)

    def take_held(self, released: Sequence[bytes] = ()) -> list[bytes]:
        """What was held, then `released` (what the modules' filters held back: a new transport
        starts unfiltered), in order; nothing stays held."""
        held, self.held = self.held + list(released), []
        return held

    def forward(self, delivery: m.Deliver) -> bool:
        """Pass a delivery on to the session on another worker that resumed this one, if any."""
        if self.moved_to is None:
            return False
        with contextlib.suppress(ActorGone, trio.WouldBlock):
            self.moved_to.send_nowait(delivery)
        return True

    # ---- the steps of a hand-over --------------------------------------------------------------

    async def adopt_connection(
        self, writer: ClientWriter, acks: DurableAcks, jid: JID, release: Callable[[], list[bytes]]
    ) -> tuple[str, tuple[int, int] | None]:
        """§5 on this worker: carry on over the resuming connection. Answers <resumed/>, sends
        again what the client did not acknowledge, then what was held. Returns the connection's
        remote address and how many of each were sent; None for those when the client's `h` was
        impossible (the new stream is closed then)."""
        handover = self._local
        assert handover is not None
        await acks.settle()  # <resumed h/> counts what is durably handled by now
        async with writer.lock:
            writer.count_sent()
            self._local = None
            self._ready = None
            writer.adopt(handover.transport, handover.stream)
            stream = handover.stream
            stream.track_sent = True
            self.detached = False
            try:
                resend = writer.sm.resume(handover.h)
            except sm.SmStreamError as error:
                stream.close(error.condition, error.text, error.app)
                return handover.remote, None
            assert writer.sm.id is not None
            stream.resumed(jid)
            resumed = writer.sm.resumed(writer.sm.id)
            if handover.answer is None:
                stream.send_nonza(resumed)
            else:
                handover.answer(jid, resumed)
            for data in resend:
                stream.send_nonza(data)  # counted when first sent
            held = self.take_held(release())
            for data in held:
                stream.send(data)
        return handover.remote, (len(resend), len(held))

    async def move_out(
        self,
        writer: ClientWriter,
        acks: DurableAcks,
        release: Callable[[], list[bytes]],
        moved: Callable[[tuple[bytes, ...], tuple[bytes, ...]], m.MovedSession],
    ) -> bool:
        """§5 on another worker: give this session's state to the resuming session and end
        quietly. The resource stays bound (the new session re-registers it); nothing goes
        offline. `moved(unacked, held)` makes the state from the session's own values; `release`
        empties the modules' filters, called once the stores settled, under the lock.

        The wait for pending stores is bounded well within the asker's patience: what is not
        confirmed by then stays out of `h`, and the client sends it again after <resumed/>.
        False when the request's `h` was impossible (the asker is told)."""
        request = self._remote
        assert request is not None
        with trio.move_on_after(MOVE_SETTLE):
            await acks.settle()
        async with writer.lock:
            writer.count_sent()
            try:
                resend = writer.sm.resume(request.h)
            except sm.SmStreamError:
                request.reply.fail(StanzaError("bad-request", "h is more than was sent"))
                return False
            state = moved(tuple(resend), tuple(self.take_held(release())))
            self.handed_over = True
            self.moved_to = request.session
            request.reply.send(state)
        return True


async def resume_moved(
    writer: ClientWriter, previd: str, moved: m.MovedSession, answer: ResumedAnswer | None = None
) -> None:
    """§5, the resuming side across workers: answer <resumed/> (with `answer`, as `Handover`'s)
    and send what the old session had sent unacknowledged and what it held, once the session
    adopted `moved`'s state."""
    async with writer.lock:
        resumed = writer.sm.resumed(previd)
        if answer is None:
            writer.stream.send_nonza(resumed)
        else:
            answer(moved.full_jid, resumed)
        for data in moved.unacked:
            writer.stream.send_nonza(data)  # counted when first sent
        for data in moved.held:
            writer.stream.send(data)
    await writer.flush()
