"""Frozen snapshots returned by the supervisors' ``statistics()`` (Trio rule)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from supervisors.spec import Restart, Strategy

__all__ = [
    "ChildState",
    "ChildStatistics",
    "DynamicSupervisorStatistics",
    "ProcessChildStatistics",
    "ProcessSupervisorStatistics",
    "SupervisorStatistics",
]


class ChildState(enum.Enum):
    """Where a child is in its life cycle.

    Attributes:
        STARTING: Its start function runs but has not called ``started()``.
        RUNNING: It called ``started()`` and has not exited.
        STOPPING: The supervisor cancelled it and waits for it to finish.
        RESTARTING: It exited and is waiting for the supervisor to restart it.
        TERMINATED: Not running and not going to be restarted.
    """

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class ChildStatistics:
    """One child of a `TaskSupervisor`.

    Attributes:
        id: The child's ``ChildSpec.id``.
        restart: The child's restart type.
        state: Its current state.
        restarts: How many times it was started again after its first start.
    """

    id: str
    restart: Restart
    state: ChildState
    restarts: int


@dataclass(frozen=True, slots=True)
class ProcessChildStatistics:
    """One child of a `ProcessSupervisor`.

    Attributes:
        id: The child's ``ProcessSpec.id``.
        restart: Its restart type.
        state: STARTING (spawned, not ready yet), RUNNING (ready), STOPPING
            (signalled, not reaped yet), RESTARTING or TERMINATED.
        pid: The current process, or None when none runs.
        started_at: When the current process was spawned, on Trio's clock
            (``trio.current_time()``, monotonic); None when none runs.
        restarts: Processes spawned for this child after the first one.
        last_exit_code: Exit status of the previous process, if it exited.
        last_exit_signal: Signal number that killed the previous process.
    """

    id: str
    restart: Restart
    state: ChildState
    pid: int | None
    started_at: float | None
    restarts: int
    last_exit_code: int | None
    last_exit_signal: int | None


_Child = TypeVar("_Child")


@dataclass(frozen=True, slots=True)
class SupervisorStatistics(Generic[_Child]):
    """A snapshot of a `TaskSupervisor` (``SupervisorStatistics[ChildStatistics]``).

    Attributes:
        name: The supervisor's name.
        strategy: Its restart strategy.
        children: One record per child, in start order.
        restarts_total: Restart decisions charged to the budget.
    """

    name: str
    strategy: Strategy
    children: tuple[_Child, ...]
    restarts_total: int


@dataclass(frozen=True, slots=True)
class ProcessSupervisorStatistics(SupervisorStatistics[ProcessChildStatistics]):
    """A snapshot of a `ProcessSupervisor`: its children are `ProcessChildStatistics`."""


@dataclass(frozen=True, slots=True)
class DynamicSupervisorStatistics:
    """A snapshot of a `DynamicSupervisor`: counters only, so it stays O(1).

    Attributes:
        name: The supervisor's name.
        active: Children starting, running, stopping or awaiting a restart.
        started_total: Successful ``start_child`` calls.
        failed_total: Abnormal exits, whether while starting or running.
        restarts_total: Restart attempts charged to the budget.
    """

    name: str
    active: int
    started_total: int
    failed_total: int
    restarts_total: int
