"""Where an actor lives: its home worker, a pure function of its key and the membership.

Rendezvous (highest-random-weight) hashing: every live worker gets a score for the key and the
highest score wins. Every worker computes the same home from the same membership with no table
to share, and when a worker leaves, only the keys it was home to move (each to its own runner-up),
the minimum possible; when it comes back, exactly those keys move back.

Scores are the first 8 bytes of BLAKE2b over the key and the worker's number, so they are the same
in every process and every run (Python's `hash` of a str is salted per process).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Membership:
    """The live workers of the node as the node supervisor last announced them.

    `epoch` grows with every change; a worker ignores an announcement older than the one it has.
    """

    epoch: int
    live: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.live:
            raise ValueError("a membership has at least one live worker")

    def home(self, kind: str, key: str) -> int:
        """The worker that hosts the actor `kind:key` under this membership."""
        return home(kind, key, self.live)


def _score(kind: str, key: str, worker: int) -> int:
    digest = hashlib.blake2b(
        f"{kind}\0{key}".encode(), digest_size=8, salt=worker.to_bytes(8, "big")
    ).digest()
    return int.from_bytes(digest, "big")


@functools.lru_cache(maxsize=1 << 16)
def home(kind: str, key: str, live: tuple[int, ...]) -> int:
    """The live worker with the highest score for `kind:key` (ties, astronomically rare, go to
    the lowest number so that every process agrees).

    Cached: routing asks it several times per stanza, and two BLAKE2b digests per live worker
    cost about 6 µs where a cache hit costs 0.3 µs (the answer is a pure function of the
    arguments, so a cached one is never stale)."""
    if len(live) == 1:
        return live[0]
    return max(live, key=lambda worker: (_score(kind, key, worker), -worker))
