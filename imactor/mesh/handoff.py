"""Hand-off on a membership change (docs/design.md, "Actors").

When the node supervisor announces new live workers, every worker recomputes the homes:
- the actors hosted here (user and room actors) whose home moved stop (`HandOff`): their state is
  in storage, what lives only in memory (an account's sessions, a room's occupants) goes to the
  new home, and nothing reaches the new home's actor before it (`HandOffGate`);
- the wings that listen (`Mesh.on_membership`: client sessions re-register with their accounts'
  new homes, and leave the rooms that lived on a lost worker) do their part;
- when workers died, once the survivors had `LOST_GRACE` to re-register, the messages whose
  durable handling was pending there are marked lost (their senders' sessions route them again:
  at least once, docs/design.md "The failover promise"), and every account and room at home here
  hears which sessions are gone (`WorkersLost`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import trio

from imactor import messages as m
from imactor.actors import ActorGone, LocalRef, Registry
from imactor.cluster.placement import Membership

#: Seconds between a membership change that lost workers and the news reaching the accounts.
LOST_GRACE = 1.0

Key = tuple[str, str]  #: (kind, key) of a hosted actor


def hand_off(registry: Registry, kinds: Iterable[str], new: Membership, index: int) -> dict[int, list[Key]]:
    """Stop the hosted actors whose home is no longer this worker. Returns the keys told, by
    their new home: each of those actors sends its state there (`m.AccountMoved`, `m.RoomMoved`)."""
    told: dict[int, list[Key]] = {}
    for kind in kinds:
        for key, ref in registry.refs(kind):
            home = new.home(kind, key)
            if home != index:
                # Sealed: whatever a sender queues after this finds the actor gone and goes to
                # the new home, where it waits for the hand-over (`HandOffGate`): the order of
                # each sender's messages holds across the move.
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    if isinstance(ref, LocalRef):
                        ref.seal(m.HandOff())
                    else:
                        ref.send_nowait(m.HandOff())
                    told.setdefault(home, []).append((kind, key))
    return told


async def workers_lost(
    registry: Registry,
    kinds: Iterable[str],
    home: Callable[[str, str], int],
    index: int,
    lost: frozenset[int],
    epoch: int,
    completions: list[m.Completion],
) -> None:
    """After `LOST_GRACE`: route again what was unconfirmed on `lost` (so it arrives live, not
    offline for an account that looked offline for a moment), and tell the actors at home here
    that the sessions on `lost` are gone (a contact whose account just moved hears the news
    only once its session is bound there again)."""
    await trio.sleep(LOST_GRACE)
    for completion in completions:
        completion.lost()
    for kind in kinds:
        for key, ref in registry.refs(kind):
            if home(kind, key) == index:
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    ref.send_nowait(m.WorkersLost(lost, epoch))


#: Seconds a new home holds the messages of an actor whose previous home may still hand it over:
#: longer than a hand-over takes on a loaded worker, short enough that a previous home that died
#: meanwhile costs a pause rather than a loss.
HANDOFF_PATIENCE = 5.0


class HandOffGate:
    """At an actor's new home: nothing reaches the actor before its previous home handed it over.

    When a worker joins, the actors it is now home to stop at their previous homes (`hand_off`)
    and send their state along (`m.AccountMoved`, `m.RoomMoved`): the sessions bound to an
    account, the occupants of a room. A message that reached the new home first would find an
    account without resources (a chat message stored offline for a user who never went away, a
    presence dropped) or a room without occupants. So each previous home, once it told its
    actors, sends every other live worker the list of keys it handed over (`m.HandOffs`), and
    until then the new home holds the messages of keys that moved to it from that worker; for a
    listed key, until its state arrived. Held messages are released in their order, right after
    the state; all of them after `HANDOFF_PATIENCE` whatever happened (a previous home that died
    meanwhile: its actors come from storage, as after any death).

    A worker that starts (or restarts) does not know the previous membership: until its first
    announcement it holds every hosted message, and it expects a hand-over from every other live
    worker of that announcement.
    """

    __slots__ = ("_awaiting", "_early", "_epoch", "_expected", "_index", "_moved_early", "_parked",
                 "_previous")  # fmt: skip

    def __init__(self, index: int, *, closed: bool) -> None:
        self._index = index
        #: The membership whose hand-overs are awaited, and the one before it; None before the
        #: first announcement (then `closed` says whether to hold everything meanwhile).
        self._epoch = 0
        self._previous: Membership | None = None if closed else Membership(0, (index,))
        #: Workers whose `HandOffs` for `_epoch` has not arrived.
        self._expected: set[int] = set()
        #: Keys whose state is on its way (listed in a `HandOffs`, not arrived yet).
        self._awaiting: set[Key] = set()
        self._parked: dict[Key, list[Any]] = {}
        #: `HandOffs` for a later epoch than ours (it overtook the announcement), by worker.
        self._early: dict[int, m.HandOffs] = {}
        #: States that arrived while an early `HandOffs` listed them.
        self._moved_early: set[Key] = set()

    @property
    def holding(self) -> int:
        """Messages held now."""
        return sum(len(messages) for messages in self._parked.values())

    def holds(self, kind: str, key: str) -> bool:
        """Messages for this actor wait (`park`) until its hand-over is known."""
        previous = self._previous
        if previous is None:
            return True
        if not (self._expected or self._awaiting or self._parked):
            return False  # the common case, on every routed stanza: nothing is being handed over
        if (kind, key) in self._awaiting or (kind, key) in self._parked:
            return True
        if not self._expected:
            return False
        came_from = previous.home(kind, key)
        return came_from != self._index and came_from in self._expected

    def park(self, kind: str, key: str, message: Any) -> None:
        self._parked.setdefault((kind, key), []).append(message)

    def reset(self, previous: Membership, new: Membership) -> list[tuple[Key, Any]]:
        """A new membership: hold what moved here from live workers until they say what they
        handed over. Returns what an earlier gate held that need not wait under this one
        (released now, in order); the rest waits on (a restarted worker's first announcement
        finds there what reached it before, for the actors it is now home to)."""
        if self._previous is None:
            # First announcement since this worker started: the node ran without it before.
            others = tuple(w for w in new.live if w != self._index)
            previous = Membership(0, others) if others else new
        self._epoch, self._previous = new.epoch, previous
        self._expected = (set(previous.live) & set(new.live)) - {self._index}
        self._awaiting.clear()
        released = self._release(lambda kind, key: not self.holds(kind, key))
        for worker, handoffs in list(self._early.items()):
            if handoffs.epoch == new.epoch:
                released += self.handoffs(worker, handoffs)
        self._early = {w: h for w, h in self._early.items() if h.epoch > new.epoch}
        return released

    def handoffs(self, worker: int, handoffs: m.HandOffs) -> list[tuple[Key, Any]]:
        """`worker` handed these keys over (to us among others); returns what may go now."""
        if handoffs.epoch > self._epoch or self._previous is None:
            self._early[worker] = handoffs
            return []
        if handoffs.epoch < self._epoch or worker not in self._expected:
            return []
        self._expected.discard(worker)
        for kind, key in handoffs.keys:
            if (kind, key) in self._moved_early:
                self._moved_early.discard((kind, key))
            else:
                self._awaiting.add((kind, key))
        return self._release(lambda kind, key: not self.holds(kind, key))

    def moved(self, kind: str, key: str) -> list[tuple[Key, Any]]:
        """The state of `kind:key` arrived: what was held for it goes now, right after it."""
        self._awaiting.discard((kind, key))
        if any((kind, key) in h.keys for h in self._early.values()):
            self._moved_early.add((kind, key))
        return [((kind, key), message) for message in self._parked.pop((kind, key), [])]

    def waiting_for(self) -> tuple[list[int], int]:
        """The workers whose list has not come, and how many states are still on their way."""
        return sorted(self._expected), len(self._awaiting)

    def expire(self, epoch: int) -> list[tuple[Key, Any]]:
        """`HANDOFF_PATIENCE` after the announcement of `epoch`: stop waiting for it."""
        if epoch != self._epoch:
            return []
        self._expected.clear()
        self._awaiting.clear()
        if self._previous is None:  # no announcement at all (a node of one worker)
            self._previous = Membership(0, (self._index,))
        return self._release_all()

    def _release_all(self) -> list[tuple[Key, Any]]:
        return self._release(lambda kind, key: True)

    def _release(self, may_go: Callable[[str, str], bool]) -> list[tuple[Key, Any]]:
        released: list[tuple[Key, Any]] = []
        for kind, key in [k for k in self._parked if k not in self._awaiting]:
            messages = self._parked.pop((kind, key))
            if may_go(kind, key):
                released.extend(((kind, key), message) for message in messages)
            else:
                self._parked[(kind, key)] = messages
        return released
