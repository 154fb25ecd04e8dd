"""`ProcessSupervisor`: an OTP supervisor over an ordered list of OS processes.

Each child is a program (``argv``) started with ``trio.lowlevel.open_process``.
The supervisor starts them in order, each only once it has reported ready,
restarts them per `Restart` type and `Strategy` under a `RestartBudget`,
and stops them in reverse order: SIGTERM, up to ``shutdown`` seconds, then
SIGKILL. Every process it starts it also reaps, so it leaves no zombies.

**Exits.** Exit status 0 is a normal exit; any other status, or death by a
signal, is abnormal (so a TRANSIENT child is restarted only after the
latter). An abnormal exit is reported as `ProcessExited`, which is what
`RestartBudgetExceeded` and `ChildFailedToStart` carry as their cause.

**Health protocol** (the full text is in `supervisors.health`). Each child
gets one end of a Unix socketpair, its descriptor number in the
environment variable ``SUPERVISOR_HEALTH_FD``. The child writes ``ready\\n``
once it has started; the supervisor waits for that (at most
``ready_timeout``) before starting the next child. Then it writes
``ping\\n`` every ``health_interval`` seconds and expects ``pong\\n`` within
``health_timeout``; a child that misses it is logged as unresponsive,
killed with SIGKILL and restarted like any abnormal exit. A child program
speaks it with `supervisors.health.serve_health`, which answers from the
program's event loop, so a hung loop is detected. ``health_interval=None``
turns the protocol off for that child: it counts as started once spawned.

**Design.** The OTP logic is `TaskSupervisor`'s: every child of the
process supervisor is a task child of an inner `TaskSupervisor`, and that
task (`supervisors._process`) owns one process at a time (spawn, wait
ready, ping, stop, reap). A normal exit returns, an abnormal one raises
`ProcessExited`, and the task supervisor does the rest (ordering, budget,
strategies, escalation).
"""

from __future__ import annotations

import math
import signal
from collections.abc import Sequence

import trio

from supervisors._process import ProcessChild
from supervisors.budget import RestartBudget
from supervisors.errors import ChildFailedToStart, ProcessExited
from supervisors.process_spec import ProcessSpec
from supervisors.spec import ChildSpec, Strategy
from supervisors.statistics import ChildState, ProcessChildStatistics, ProcessSupervisorStatistics
from supervisors.tasks import TaskSupervisor

__all__ = [
    "ProcessChildStatistics",
    "ProcessExited",
    "ProcessSpec",
    "ProcessSupervisor",
    "ProcessSupervisorStatistics",
]


class ProcessSupervisor:
    """Starts an ordered list of child processes and keeps them running.

    Args:
        name: Used in logs, statistics and escalation errors.
        children: Process specs in start order (the dependency order). Ids
            must be unique.
        strategy: Which children are restarted when one must be.
        budget: Restart intensity; defaults to 5 restarts in 30 seconds. A
            fresh copy is used for every ``run()``.

    Raises:
        ValueError: If two children share an id.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ProcessSpec],
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy
        processes = [ProcessChild(spec, name) for spec in children]
        # The process itself is bounded by the supervising task (SIGKILL after
        # spec.shutdown), so the task supervisor waits for it as long as it takes.
        # It also rejects duplicate ids (ValueError) before any is used here.
        task_specs = [ChildSpec(c.spec.id, c.supervise, c.spec.restart, math.inf) for c in processes]
        self._tasks = TaskSupervisor(name, task_specs, strategy, budget)
        self._children = {child.spec.id: child for child in processes}
        self._running = False

    async def run(
        self, *, task_status: trio.TaskStatus[ProcessSupervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Starts the children in order, then supervises them until cancelled.

        Calls ``task_status.started(self)`` once every child has been
        spawned and has reported ready.

        Args:
            task_status: Trio's ``nursery.start`` protocol.

        Raises:
            ChildFailedToStart: A child could not be spawned, exited or was
                not ready within ``ready_timeout`` during the initial start;
                the children already started are stopped in reverse order
                first. Its cause is the `OSError` or `ProcessExited`.
            RestartBudgetExceeded: Restarts exceeded the budget. Every child
                process is stopped and reaped before it propagates.
            RuntimeError: If this supervisor is already running.

        Error handling:
            On cancellation the children are stopped one at a time in reverse
            start order: SIGTERM, up to ``shutdown`` seconds, SIGKILL, reap.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._running = True
        for child in self._children.values():
            child.spawned = child.restarts = 0
            child.held, child.last_returncode, child.start_error = False, None, None
        try:
            await self._tasks.run(task_status=_StartedWith(task_status, self))
        finally:
            self._running = False
            for child in self._children.values():
                child.notify()

    def kill_child(self, child_id: str, sig: int = signal.SIGKILL) -> int:
        """Sends a signal to a child's current process (for tests and chaos).

        Args:
            child_id: The child's ``ProcessSpec.id``.
            sig: The signal; SIGKILL by default.

        Returns:
            The pid that was signalled.

        Raises:
            KeyError: If there is no such child.
            ProcessLookupError: If no process runs for it now.
        """
        process = self._child(child_id).process
        if process is None or process.returncode is not None:
            raise ProcessLookupError(f"child {child_id!r} of supervisor {self.name!r} has no process")
        process.send_signal(sig)
        return process.pid

    async def terminate_child(self, child_id: str) -> None:
        """Stops a child and keeps it stopped until `restart_child` (OTP's terminate_child).

        The process is stopped like at shutdown (SIGTERM, ``shutdown``
        seconds, SIGKILL) and reaped before this returns. This is no failure:
        nothing is charged to the budget and no sibling is touched. The
        child also stays down through restarts of its siblings.

        Raises:
            KeyError: If there is no such child.
            RuntimeError: If the supervisor is not running.
        """
        child = self._child(child_id)
        if not self._running:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        child.held = True
        if child.stop_scope is not None:
            child.stop_scope.cancel()
        while child.process is not None:
            await child.changed.wait()

    async def restart_child(self, child_id: str) -> int:
        """Starts a child stopped by `terminate_child` again (OTP's restart_child).

        Returns:
            The pid of the new process, once it has reported ready.

        Raises:
            KeyError: If there is no such child.
            RuntimeError: If the supervisor is not running, or the child was
                not stopped by `terminate_child`, or the supervisor stopped
                while the child was starting.
            ChildFailedToStart: The new process could not be spawned, exited
                or was not ready in time. The child stays terminated and
                nothing is charged to the budget.
        """
        child = self._child(child_id)
        if not self._running:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if not child.held:
            raise RuntimeError(f"child {child_id!r} of supervisor {self.name!r} was not terminated")
        if not child.active and self._task_state(child_id) is ChildState.TERMINATED:
            # It had ended for good (say a TRANSIENT child that exited 0) when
            # it was terminated: no task is left to start it.
            raise RuntimeError(f"child {child_id!r} of supervisor {self.name!r} is no longer supervised")
        spawned = child.spawned
        child.held, child.start_error = False, None
        child.notify()
        while True:
            if child.state is ChildState.RUNNING and child.spawned > spawned and child.process is not None:
                return child.process.pid
            if child.held:
                raise ChildFailedToStart(self.name, child_id, child.start_error)
            if not self._running:
                raise RuntimeError(f"supervisor {self.name!r} stopped while {child_id!r} was starting")
            await child.changed.wait()

    def statistics(self) -> ProcessSupervisorStatistics:
        """Returns a frozen snapshot of the supervisor and its children."""
        inner = self._tasks.statistics()
        children = zip(self._children.values(), inner.children, strict=True)
        records = tuple(child.statistics(task.state) for child, task in children)
        return ProcessSupervisorStatistics(self.name, self.strategy, records, inner.restarts_total)

    def _task_state(self, child_id: str) -> ChildState:
        return next(c.state for c in self._tasks.statistics().children if c.id == child_id)

    def _child(self, child_id: str) -> ProcessChild:
        child = self._children.get(child_id)
        if child is None:
            raise KeyError(f"supervisor {self.name!r} has no child {child_id!r}")
        return child


class _StartedWith(trio.TaskStatus[object]):
    """Forwards ``started()`` to ``outer`` with a fixed value (the process supervisor)."""

    __slots__ = ("_outer", "_value")

    def __init__(self, outer: trio.TaskStatus[ProcessSupervisor], value: ProcessSupervisor) -> None:
        self._outer = outer
        self._value = value

    def started(self, value: object = None) -> None:
        self._outer.started(self._value)
