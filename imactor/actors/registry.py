"""The per-process registry: actor address key → reference, with activation on demand.

`get_or_start` is how user and room actors come to life: the first message that addresses one
starts it (loading its state from storage); concurrent callers wait for that one start instead of
starting two actors for the same key.

An actor that stops `retire`s its key: new senders no longer find it, but a start of the same key
waits until it has `ended` (a room storing its state at the stop must have stored it before its
successor loads it). One caller does not wait: the retiring actor itself, forwarding what was
queued for it to its account's new home, which may be this worker again (the membership changed
twice); waiting for itself would never end, and its successor loads nothing it is still writing
(an actor that handed off writes nothing more).
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


@dataclass(slots=True)
class Retiring:
    """An actor between its decision to stop and its end (`Registry.retire`)."""

    task: trio.lowlevel.Task  #: the actor's own task
    ended: trio.Event


class Registry:
    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], ActorRef[Any]] = {}
        self._starting: dict[tuple[str, str], trio.Event] = {}
        self._retiring: dict[tuple[str, str], Retiring] = {}
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

    def retire(self, kind: str, key: str, ref: ActorRef[Any]) -> Retiring:
        """The actor behind `ref` stops (called from its own task): forget it, and make a new
        start of the key wait until `ended` is called with what this returns."""
        self.unregister(kind, key, ref)
        retiring = Retiring(trio.lowlevel.current_task(), trio.Event())
        self._retiring[(kind, key)] = retiring
        return retiring

    def ended(self, kind: str, key: str, retiring: Retiring) -> None:
        """The retiring actor has ended: a start of its key waiting for that may go on."""
        retiring.ended.set()
        if self._retiring.get((kind, key)) is retiring:
            del self._retiring[(kind, key)]

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
            if pending is not None:
                await pending.wait()
                continue
            retiring = self._retiring.get((kind, key))
            if retiring is None or retiring.task is trio.lowlevel.current_task():
                break
            await retiring.ended.wait()
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
