"""Fakes for the supervisor tests: scriptable children that record their lives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from supervisors import ChildSpec, Restart


class Boom(Exception):
    """What fake children raise."""


class FakeChild:
    """A child the test drives: it records events and crashes or exits on command.

    Events are strings such as ``"start a"``, ``"crash a"``, ``"stop a"``
    (cancelled by its supervisor) and ``"stopped a"`` (after ``stop_delay``
    seconds of shielded cleanup), appended to a list shared by all children.
    """

    def __init__(
        self,
        name: str,
        events: list[str],
        *,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = 5.0,
        fail_starts: int = 0,
        stop_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.events = events
        self.restart = restart
        self.shutdown = shutdown
        self.fail_starts = fail_starts
        self.stop_delay = stop_delay
        self.starts = 0
        self.last_error: Boom | None = None
        self._wake = trio.Event()
        self._crash = False

    @property
    def spec(self) -> ChildSpec:
        return ChildSpec(self.name, self.start, self.restart, self.shutdown)

    async def start(self, *, task_status: trio.TaskStatus[str]) -> None:
        self.starts += 1
        if self.fail_starts > 0:
            self.fail_starts -= 1
            self.events.append(f"start-failed {self.name}")
            self.last_error = Boom(f"{self.name} failed to start")
            raise self.last_error
        self._wake, self._crash = trio.Event(), False
        self.events.append(f"start {self.name}")
        task_status.started(f"{self.name}#{self.starts}")
        cancelled = True
        try:
            await self._wake.wait()
            cancelled = False
        finally:
            if cancelled:
                self.events.append(f"stop {self.name}")
                if self.stop_delay:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(self.stop_delay)
                    self.events.append(f"stopped {self.name}")
        if self._crash:
            self.events.append(f"crash {self.name}")
            self.last_error = Boom(f"{self.name} crashed")
            raise self.last_error
        self.events.append(f"exit {self.name}")

    def crash(self) -> None:
        """Makes the current incarnation raise `Boom`."""
        self._crash = True
        self._wake.set()

    def exit(self) -> None:
        """Makes the current incarnation return normally."""
        self._wake.set()


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def fake(events: list[str]) -> Callable[..., FakeChild]:
    """Factory: ``fake("a", restart=..., ...)`` -> a `FakeChild` logging into ``events``."""

    def make(name: str, **kwargs: Any) -> FakeChild:
        return FakeChild(name, events, **kwargs)

    return make


@pytest.fixture
def boom() -> type[Boom]:
    return Boom
