"""The mesh's open questions: reply slots and completions waiting for an answer from a peer.

An `ask` or a XEP-0198 completion that crosses to another worker leaves its slot here under a
correlation id; the answer frame (`codec.REPLY`, `codec.COMPLETION`) takes it out again. A peer
that dies fails its replies at once and hands its completions to the hand-off (`handoff.py`),
which marks them lost once the survivors had time to re-register; whatever nobody answers is
forgotten after `PENDING_TTL`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import trio

from imactor import messages as m
from imactor.actors import ActorGone, Reply

#: Seconds an unanswered reply slot or completion is remembered (asks time out well before).
PENDING_TTL = 60.0


class Pending:
    """Reply slots and completions by correlation id, each with its peer and when it was left."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._replies: dict[str, tuple[Reply[Any], int, float]] = {}
        self._completions: dict[str, tuple[m.Completion, int, float]] = {}

    def reply_id(self, reply: Reply[Any], worker: int) -> str:
        reply_id = str(next(self._ids))
        self._replies[reply_id] = (reply, worker, trio.current_time())
        return reply_id

    def completion_id(self, completion: m.Completion, worker: int) -> str:
        completion_id = str(next(self._ids))
        self._completions[completion_id] = (completion, worker, trio.current_time())
        return completion_id

    def take_reply(self, reply_id: str) -> Reply[Any] | None:
        found = self._replies.pop(reply_id, None)
        return None if found is None else found[0]

    def take_completion(self, completion_id: str) -> m.Completion | None:
        found = self._completions.pop(completion_id, None)
        return None if found is None else found[0]

    def sweep(self) -> None:
        """Forget what nobody answered within `PENDING_TTL` (its asker gave up long ago)."""
        horizon = trio.current_time() - PENDING_TTL
        for table in (self._replies, self._completions):
            for key in [k for k, (_, _, at) in table.items() if at < horizon]:
                del table[key]

    def peers_lost(self, lost: Iterable[int]) -> list[m.Completion]:
        """Fail the asks made of `lost` workers; return the completions they owed (for the
        hand-off to mark lost once the survivors re-registered)."""
        gone = frozenset(lost)
        for key in [k for k, (_, worker, _) in self._replies.items() if worker in gone]:
            reply, _, _ = self._replies.pop(key)
            reply.fail(ActorGone(f"worker {sorted(gone)} died"))
        owed = [k for k, (_, worker, _) in self._completions.items() if worker in gone]
        return [self._completions.pop(key)[0] for key in owed]

    @property
    def replies(self) -> int:
        return len(self._replies)

    @property
    def completions(self) -> int:
        return len(self._completions)
