"""The per-process registry: actor address key → reference, with activation on demand.

`get_or_start` is how user and room actors come to life: the first message that addresses one
starts it (loading its state from storage); concurrent callers wait for that one start instead of
starting two actors for the same key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from imactor.actors.ref import ActorRef


@dataclass(frozen=True, slots=True)
class RegistryStatistics:
    actors_by_kind: dict[str, int]
    activations_total: int


class Registry:
    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], ActorRef[Any]] = {}
        self._starting: dict[tuple[str, str], trio.Event] = {}
        self._activations_total = 0

    def lookup(self, kind: str, key: str) -> ActorRef[Any] | None:
        return self._refs.get((kind, key))

    def refs(self, kind: str) -> list[tuple[str, ActorRef[Any]]]:
        """(key, reference) of every registered actor of `kind` (a copy: safe to send while iterating)."""
        return [(key, ref) for (k, key), ref in self._refs.items() if k == kind]

    def register(self, kind: str, key: str, ref: ActorRef[Any]) -> None:
        self._refs[(kind, key)] = ref

    def unregister(self, kind: str, key: str, ref: ActorRef[Any]) -> None:
        """Forget `ref`, unless a successor has already taken the key."""
        if self._refs.get((kind, key)) is ref:
            del self._refs[(kind, key)]

    async def get_or_start(
        self, kind: str, key: str, start: Callable[[], Awaitable[ActorRef[Any]]]
    ) -> ActorRef[Any]:
        """Return the live actor for (kind, key), starting it with `start()` if there is none.

        Error handling: if `start()` raises, waiters are released and the error goes to the caller
        that ran it; the others retry the start themselves.
        """
        while True:
            ref = self._refs.get((kind, key))
            if ref is not None:
                return ref
            pending = self._starting.get((kind, key))
            if pending is None:
                break
            await pending.wait()
        event = trio.Event()
        self._starting[(kind, key)] = event
        try:
            ref = await start()
            self._refs[(kind, key)] = ref
            self._activations_total += 1
            return ref
        finally:
            del self._starting[(kind, key)]
            event.set()

    def statistics(self) -> RegistryStatistics:
        kinds = Counter(kind for kind, _ in self._refs)
        return RegistryStatistics(actors_by_kind=dict(kinds), activations_total=self._activations_total)
