"""XEP-0198 durable acknowledgement of one client session (docs/design.md, "The failover promise").

A client's message counts in the `h` the session reports only once the recipient's account has
durably handled it (archived and/or stored offline, delivered, bounced or dropped). Each routed
message carries a one-shot `Completion`; `DurableAcks` keeps those still pending, oldest first,
and counts a stanza in `h` once every stanza before it is handled too (`sm.stanza_handled`), so a
later stanza never counts ahead of an earlier message still being written.

A completion that fails (the recipient's worker died) or stays silent past `COMPLETION_TIMEOUT`
(a frame lost on the way) has its message routed again, at most `MAX_ROUTE_ATTEMPTS` times: a
duplicate at worst, with the same origin-id, never a loss. An <r/> is answered at once with what
is handled so far; when messages before it were still pending, an <a/> follows unasked once they
are (§4 allows it; aioxmpp waits for it).

The session owns one and calls it one way; what this needs of the world is given to it: the
stream management state, the router, a way to start a task, and how to send an <a/>.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from imactor import messages as m
from imactor.xmpp import sm

if TYPE_CHECKING:
    from imactor.actors import ActorAddress
    from imactor.server.router import Router
    from imactor.xmpp.stanza import Stanza

log = logging.getLogger("imactor.session")

#: Seconds a routed message may stay unconfirmed before it is routed again (then counted).
COMPLETION_TIMEOUT = 10.0
#: How often one message is routed in all before it is counted as it is.
MAX_ROUTE_ATTEMPTS = 3

#: Starts a task in the session's nursery; raises RuntimeError once the session is ending.
Spawn = Callable[..., None]


class DurableAcks:
    """The client's messages awaiting durable handling, and the acks that wait for them."""

    __slots__ = (
        "_ack_target", "_acking", "_address", "_current", "_pending", "_routed", "_router", "_sm", "_spawn",
    )  # fmt: skip

    def __init__(self, address: ActorAddress, state: sm.StreamManagement, router: Router) -> None:
        self._address, self._sm, self._router = address, state, router
        self._routed = 0  #: messages routed so far: with the session's key, each one's key
        self._spawn: Spawn | None = None
        #: (sequence number, signal, deadline), in arrival order. A list, not a deque: it is
        #: short (messages in flight), and empty in most sessions, where a deque costs 600 bytes.
        self._pending: list[tuple[int, m.Completion, float]] = []
        #: The signal of the stanza being processed, if it was routed as a message.
        self._current: m.Completion | None = None
        #: An <r/> was answered before the message numbered this was handled: an <a/> follows
        #: once it is (`_ack_when_handled`, running while `_acking`).
        self._ack_target = sm.NOT_COUNTED
        self._acking = False

    def start(self, spawn: Spawn) -> None:
        """The session runs: routes again and unasked acks go to tasks started with `spawn`."""
        self._spawn = spawn

    def adopt(self, state: sm.StreamManagement) -> None:
        """The session carries on another's stream (a resumption from another worker) with its
        counters: this fresh session had nothing of its own pending yet."""
        assert not self._pending
        self._sm = state

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    # ---- one stanza ----------------------------------------------------------------------------

    def received(self) -> int:
        """A stanza arrived: its sequence number (`sm.NOT_COUNTED` when not managed)."""
        self.collect()
        self._current = None
        return self._sm.stanza_received()

    def routed(self, message: Stanza) -> m.Completion | None:
        """The stanza being processed is a message routed to an account: its signal, if managed."""
        if not self._sm.enabled:
            return None
        self._routed += 1
        self._current = m.Completion(message, key=f"{self._address.key}/{self._routed}")
        return self._current

    def processed(self, seq: int) -> None:
        """The session is done with stanza `seq`: counted now, or once its message is stored."""
        current, self._current = self._current, None
        if current is None or current.is_done or seq == sm.NOT_COUNTED:
            self._sm.stanza_handled(seq)
        else:
            self._pending.append((seq, current, trio.current_time() + COMPLETION_TIMEOUT))

    # ---- counting what is handled --------------------------------------------------------------

    def collect(self) -> None:
        """Count the routed messages whose durable handling is over, oldest first (only the
        oldest pending one holds `h` back); one overdue is logged and counted anyway."""
        now = trio.current_time()
        pending = self._pending
        while pending:
            seq, completion, deadline = pending[0]
            overdue = not completion.is_done and now >= deadline
            if (completion.failed or overdue) and self._route_again(seq, completion):
                # Lost with its recipient's worker, or no word of it in time (a frame lost on
                # the way): route it again rather than count what may not be stored.
                return
            if not completion.is_done:
                if now < deadline:
                    return
                log.error("%s: stanza %d not durably handled after %d routes; counted anyway",
                          self._address, seq, completion.attempt)  # fmt: skip
            del pending[0]
            self._sm.stanza_handled(seq)

    def _route_again(self, seq: int, lost: m.Completion) -> bool:
        """Message `seq` may not be stored: route it again. False when it cannot be: then it is
        counted as it is."""
        if lost.stanza is None or lost.attempt >= MAX_ROUTE_ATTEMPTS or self._spawn is None:
            return False
        again = m.Completion(lost.stanza, lost.attempt + 1, key=lost.key)
        self._pending[0] = (seq, again, trio.current_time() + COMPLETION_TIMEOUT)
        try:
            self._spawn(self._route, again)
        except RuntimeError:  # the session is ending: its nursery takes no more tasks
            self._pending[0] = (seq, lost, trio.current_time())
            return False
        return True

    async def _route(self, completion: m.Completion) -> None:
        assert completion.stanza is not None
        await self._router.route(completion.stanza, wait=True, completion=completion)

    async def settle(self, through: float = math.inf) -> None:
        """Wait (each at most until its deadline) for the pending routed messages numbered up to
        `through` (all by default) to be handled."""
        while self._pending and self._pending[0][0] <= through:
            _seq, completion, deadline = self._pending[0]
            with trio.move_on_at(deadline):
                await completion.wait()
            self.collect()

    # ---- acks the client waits for -------------------------------------------------------------

    def ack_later(self, send_ack: Callable[[], Awaitable[None]]) -> None:
        """An <r/> was just answered: if messages before it are still pending, send an <a/>
        (`send_ack`) once they are handled."""
        if not self._pending:
            return
        self._ack_target = self._pending[-1][0]
        if not self._acking and self._spawn is not None:
            self._acking = True
            self._spawn(self._ack_when_handled, send_ack)

    async def _ack_when_handled(self, send_ack: Callable[[], Awaitable[None]]) -> None:
        try:
            while True:
                target = self._ack_target
                await self.settle(through=target)
                await send_ack()
                if self._ack_target == target:
                    return
        finally:
            self._acking = False
