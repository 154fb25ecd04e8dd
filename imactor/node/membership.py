"""The node supervisor tells its workers which of them are live (the membership, with an epoch).

Placement is a pure function of a JID and the set of live workers (docs/design.md), so every worker
must agree on that set. The supervisor is the one process that knows it first: it starts,
watches and restarts the workers. `MembershipAnnouncer` turns what the supervisor sees into
`MembershipChanged(epoch, live_workers)` frames on the ZeroMQ link:

- a worker is *live* once its process has reported ready, until it exits or is killed
  (`ChildState.RUNNING` in the supervisor's statistics);
- each change of the live set bumps the epoch (from 1) and is sent to every live worker at once
  (not to a dead one: a frame queued for it would reach its successor late, with a stale view);
- the current membership is sent again every `RESEND_INTERVAL` seconds, so a worker that
  (re)started after a change, or whose frames were dropped, catches up; workers ignore an epoch
  they have already seen.

The supervisor exposes no change event, so the announcer polls its statistics every
`POLL_INTERVAL` seconds (a cheap snapshot of N records). Sends never wait: a frame refused by a
full outbox is dropped and counted; the resend covers it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from imactor.cluster.placement import Membership
from imactor.cluster.wire import MembershipChanged, Message
from imactor.cluster.zmq_link import UnknownPeer

log = logging.getLogger("imactor.node")

#: Seconds between two looks at the supervisor's statistics.
POLL_INTERVAL = 0.05
#: Seconds between two sends of an unchanged membership.
RESEND_INTERVAL = 1.0


class Link(Protocol):
    """What the announcer needs of a `ZmqLink`."""

    def set_epoch(self, epoch: int) -> None: ...

    def send_nowait(self, peer: int, message: Message) -> None: ...


class MembershipAnnouncer:
    """Announces the live workers over `link` (see the module doc).

    Args:
        link: The supervisor's link, with every worker as a peer.
        live_workers: Returns the indices of the workers that are live now.
    """

    def __init__(
        self,
        link: Link,
        live_workers: Callable[[], Iterable[int]],
        *,
        poll_interval: float = POLL_INTERVAL,
        resend_interval: float = RESEND_INTERVAL,
    ) -> None:
        self._link = link
        self._live_workers = live_workers
        self._poll_interval = poll_interval
        self._resend_interval = resend_interval
        self.epoch = 0  #: 0 until the first membership is known
        self.live: tuple[int, ...] = ()
        self.sent_total = 0  #: frames handed to the link
        self.dropped_total = 0  #: frames refused by a full outbox

    def local_home(self, kind: str, key: str) -> int | None:
        """The index of the worker of this node that hosts `kind:key` (None: no worker runs)."""
        return Membership(self.epoch, self.live).home(kind, key) if self.live else None

    def document(self) -> dict[str, object]:
        return {"epoch": self.epoch, "live_workers": list(self.live)}

    def observe(self) -> bool:
        """Read the live set; bump the epoch if it changed. Returns whether it did."""
        live = tuple(sorted(set(self._live_workers())))
        if live == self.live:  # also at start: no worker live yet is epoch 0, never announced
            return False
        self.live = live
        self.epoch += 1
        log.info("membership epoch %d: live workers %s", self.epoch, list(live) or "none")
        return True

    def announce(self) -> None:
        """Send the current membership to every live worker, without waiting."""
        if not self.epoch:
            return
        self._link.set_epoch(self.epoch)
        message = MembershipChanged(self.epoch, self.live)
        for worker in self.live:
            try:
                self._link.send_nowait(worker, message)
            except (trio.WouldBlock, UnknownPeer):  # a full outbox: resent later
                self.dropped_total += 1
            else:
                self.sent_total += 1

    async def run(self) -> None:
        """Observe and announce until cancelled."""
        last_sent = -math.inf
        while True:
            changed = self.observe()
            now = trio.current_time()
            if changed or now - last_sent >= self._resend_interval:
                self.announce()
                last_sent = now
            await trio.sleep(self._poll_interval)
