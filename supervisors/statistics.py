"""Frozen snapshots returned by the supervisors' ``statistics()`` (Trio rule)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from supervisors.spec import Restart, Strategy

__all__ = ["ChildState", "ChildStatistics", "DynamicSupervisorStatistics", "SupervisorStatistics"]


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
class SupervisorStatistics:
    """A snapshot of a `TaskSupervisor`.

    Attributes:
        name: The supervisor's name.
        strategy: Its restart strategy.
        children: One record per child, in start order.
        restarts_total: Restart decisions charged to the budget.
    """

    name: str
    strategy: Strategy
    children: tuple[ChildStatistics, ...]
    restarts_total: int


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
