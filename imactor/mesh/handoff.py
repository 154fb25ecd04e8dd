"""Hand-off on a membership change (docs/design.md, "Actors").

When the node supervisor announces new live workers, every worker recomputes the homes:
- the actors hosted here (user and room actors) whose home moved stop (`HandOff`): their state is
  in storage and the new home re-activates them on demand;
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

import trio

from imactor import messages as m
from imactor.actors import ActorGone, Registry
from imactor.cluster.placement import Membership

#: Seconds between a membership change that lost workers and the news reaching the accounts.
LOST_GRACE = 1.0


def hand_off(registry: Registry, kinds: Iterable[str], new: Membership, index: int) -> int:
    """Stop the hosted actors whose home is no longer this worker; how many were told."""
    told = 0
    for kind in kinds:
        for key, ref in registry.refs(kind):
            if new.home(kind, key) != index:
                told += 1
                with contextlib.suppress(ActorGone, trio.WouldBlock):
                    ref.send_nowait(m.HandOff())
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
