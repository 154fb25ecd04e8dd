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
task owns one process at a time (spawn, wait ready, ping, stop, reap). A
normal exit returns, an abnormal one raises `ProcessExited`, and the task
supervisor does the rest (ordering, budget, strategies, escalation).
"""

from __future__ import annotations

import functools
import math
import os
import signal
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import trio

from supervisors._child import logger
from supervisors.budget import RestartBudget
from supervisors.errors import ChildFailedToStart, SupervisorError
from supervisors.health import HEALTH_FD_ENV, HealthProbe
from supervisors.spec import ChildSpec, Restart, Strategy
from supervisors.statistics import ChildState
from supervisors.tasks import TaskSupervisor

__all__ = [
    "ProcessChildStatistics",
    "ProcessExited",
    "ProcessSpec",
    "ProcessSupervisor",
    "ProcessSupervisorStatistics",
]


def _check_seconds(spec_id: str, name: str, value: float, *, allow_inf: bool) -> None:
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"ProcessSpec {spec_id!r}: {name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How to start, check, restart and stop one child process.

    Attributes:
        id: Name of the child, unique within its supervisor.
        argv: The program and its arguments (no shell).
        env: The child's whole environment; None inherits the supervisor's.
            ``SUPERVISOR_HEALTH_FD`` is set (or removed) by the supervisor.
        restart: When the child is restarted after it exits.
        shutdown: Seconds between SIGTERM and SIGKILL when the child is
            stopped; 0 kills at once (OTP's ``brutal_kill``), ``math.inf``
            never sends SIGKILL.
        health_interval: Seconds between pings; None turns the health
            protocol off (no channel, no ``ready``, no pings).
        health_timeout: Seconds a ping may wait for its pong.
        ready_timeout: Seconds the child may take to write ``ready``.

    Raises:
        ValueError: If ``id`` or ``argv`` is empty or a duration is out of
            range.
        TypeError: If ``restart`` is not a `Restart` or ``argv`` is a string.
    """

    id: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = field(default=None, hash=False)
    restart: Restart = Restart.PERMANENT
    shutdown: float = 10.0
    health_interval: float | None = 1.0
    health_timeout: float = 5.0
    ready_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("ProcessSpec.id must be a non-empty string")
        if isinstance(self.argv, str):
            raise TypeError(f"ProcessSpec {self.id!r}: argv must be a sequence of strings, not a string")
        if not self.argv:
            raise ValueError(f"ProcessSpec {self.id!r}: argv must not be empty")
        if not isinstance(self.restart, Restart):
            raise TypeError(f"ProcessSpec {self.id!r}: restart must be a Restart, got {self.restart!r}")
        if math.isnan(self.shutdown) or self.shutdown < 0:
            raise ValueError(f"ProcessSpec {self.id!r}: shutdown must be >= 0 seconds, got {self.shutdown!r}")
        if self.health_interval is not None:
            _check_seconds(self.id, "health_interval", self.health_interval, allow_inf=False)
        _check_seconds(self.id, "health_timeout", self.health_timeout, allow_inf=False)
        _check_seconds(self.id, "ready_timeout", self.ready_timeout, allow_inf=True)
        # Frozen copies: the spec must not change under the supervisor's feet.
        object.__setattr__(self, "argv", tuple(self.argv))
        if self.env is not None:
            object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


class ProcessExited(SupervisorError):
    """A child process ended abnormally (or before it was ready).

    Args:
        child_id: The child's ``ProcessSpec.id``.
        pid: The process that ended.
        returncode: Its status as `trio.Process.returncode` gives it: the
            exit status, or minus the number of the signal that killed it.
        reason: Why the supervisor killed it or gave up on its start, if it
            did (``"unresponsive"``, ``"not ready within 30s"``...).
    """

    def __init__(self, child_id: str, pid: int, returncode: int, reason: str | None = None) -> None:
        if returncode < 0:
            how = f"was killed by {signal.Signals(-returncode).name}"
        else:
            how = f"exited with status {returncode}"
        super().__init__(f"child {child_id!r} (pid {pid}) {how}" + (f": {reason}" if reason else ""))
        self.child_id = child_id
        self.pid = pid
        self.returncode = returncode
        self.reason = reason

    @property
    def exit_code(self) -> int | None:
        """The exit status, or None if a signal killed the process."""
        return self.returncode if self.returncode >= 0 else None

    @property
    def exit_signal(self) -> int | None:
        """The number of the signal that killed the process, or None."""
        return -self.returncode if self.returncode < 0 else None

    def __reduce__(self) -> tuple[type[ProcessExited], tuple[str, int, int, str | None]]:
        return (type(self), (self.child_id, self.pid, self.returncode, self.reason))


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


@dataclass(frozen=True, slots=True)
class ProcessSupervisorStatistics:
    """A snapshot of a `ProcessSupervisor`.

    Attributes:
        name: The supervisor's name.
        strategy: Its restart strategy.
        children: One record per child, in start order.
        restarts_total: Restart decisions charged to the budget.
    """

    name: str
    strategy: Strategy
    children: tuple[ProcessChildStatistics, ...]
    restarts_total: int


@dataclass(frozen=True, slots=True)
class _Ended:
    """How one process ended: whether it had become ready, and its status."""

    ready: bool
    pid: int
    returncode: int
    reason: str | None


class _Child:
    """One child's current process and history (internal)."""

    __slots__ = (
        "active",
        "changed",
        "held",
        "kill_reason",
        "last_returncode",
        "process",
        "restarts",
        "spawned",
        "spec",
        "start_error",
        "started_at",
        "state",
        "stop_scope",
    )

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.process: trio.Process | None = None
        self.state = ChildState.TERMINATED
        self.started_at: float | None = None
        self.spawned = 0
        self.restarts = 0
        self.last_returncode: int | None = None
        # Why the supervisor killed the current process, if it did.
        self.kill_reason: str | None = None
        # Set by terminate_child: the child stays down until restart_child.
        self.held = False
        self.start_error: Exception | None = None
        # Whether a supervising task serves it now; if not, the inner
        # TaskSupervisor knows its state (RESTARTING or TERMINATED).
        self.active = False
        self.stop_scope: trio.CancelScope | None = None
        self.changed = trio.Event()

    def notify(self) -> None:
        """Wakes whoever waits for this child to change."""
        self.changed.set()
        self.changed = trio.Event()

    def is_held(self) -> bool:
        # A call, not the attribute: mypy would keep narrowing `held` across awaits.
        return self.held

    def set_state(self, state: ChildState) -> None:
        self.state = state
        self.notify()


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
        duplicates = sorted(i for i, n in Counter(spec.id for spec in children).items() if n > 1)
        if duplicates:
            raise ValueError(f"supervisor {name!r}: duplicate child ids {duplicates}")
        self.name = name
        self.strategy = strategy
        self._children = {spec.id: _Child(spec) for spec in children}
        # The process itself is bounded by the supervising task (SIGKILL after
        # spec.shutdown), so the task supervisor waits for it as long as it takes.
        task_specs = [
            ChildSpec(spec.id, functools.partial(self._supervise, child), spec.restart, math.inf)
            for spec, child in zip(children, self._children.values(), strict=True)
        ]
        self._tasks = TaskSupervisor(name, task_specs, strategy, budget)
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
        records = []
        for child, task in zip(self._children.values(), inner.children, strict=True):
            returncode = child.last_returncode
            records.append(
                ProcessChildStatistics(
                    id=child.spec.id,
                    restart=child.spec.restart,
                    state=child.state if child.active else task.state,
                    pid=child.process.pid if child.process is not None else None,
                    started_at=child.started_at if child.process is not None else None,
                    restarts=child.restarts,
                    last_exit_code=returncode if returncode is not None and returncode >= 0 else None,
                    last_exit_signal=-returncode if returncode is not None and returncode < 0 else None,
                )
            )
        return ProcessSupervisorStatistics(self.name, self.strategy, tuple(records), inner.restarts_total)

    def _task_state(self, child_id: str) -> ChildState:
        return next(c.state for c in self._tasks.statistics().children if c.id == child_id)

    def _child(self, child_id: str) -> _Child:
        child = self._children.get(child_id)
        if child is None:
            raise KeyError(f"supervisor {self.name!r} has no child {child_id!r}")
        return child

    async def _supervise(self, child: _Child, *, task_status: trio.TaskStatus[None]) -> None:
        """The inner task supervisor's child: runs ``child``'s processes one after another.

        Normally there is one process per call: a normal exit returns and an
        abnormal one raises `ProcessExited`, and the task supervisor decides
        what comes next. Only `terminate_child` / `restart_child` make this
        loop: a held child waits here, without a process, to be restarted.
        """
        status: trio.TaskStatus[None] | None = task_status
        child.active = True
        try:
            while True:
                if child.held:
                    child.set_state(ChildState.TERMINATED)
                    if status is not None:
                        status.started()
                        status = None
                    while child.is_held():
                        await child.changed.wait()
                    continue
                manual = status is None
                try:
                    ended = await self._run_process(child, status)
                except OSError as exc:  # the spawn failed
                    if not manual:
                        raise
                    logger.error(
                        "supervisor %s: cannot spawn child %r", self.name, child.spec.id, exc_info=exc
                    )
                    child.held, child.start_error = True, exc
                    continue
                if ended.ready:
                    status = None
                if child.is_held():
                    continue  # stopped by terminate_child
                if ended.returncode == 0 and ended.ready:
                    return
                error = ProcessExited(
                    child.spec.id,
                    ended.pid,
                    ended.returncode,
                    ended.reason or (None if ended.ready else "exited before it was ready"),
                )
                if not manual:
                    raise error
                logger.error("supervisor %s: child %r failed to restart: %s", self.name, child.spec.id, error)
                child.held, child.start_error = True, error
        finally:
            child.active = False
            child.notify()

    async def _run_process(self, child: _Child, status: trio.TaskStatus[None] | None) -> _Ended:
        """Spawns one process, reports it started once ready, and returns once it is reaped.

        Raises:
            OSError: If the process could not be spawned.
        """
        spec = child.spec
        ours: socket.socket | None = None
        theirs: socket.socket | None = None
        if spec.health_interval is not None:
            ours, theirs = socket.socketpair()
        probe = HealthProbe(ours) if ours is not None else None
        try:
            child.set_state(ChildState.STARTING)
            env = dict(os.environ if spec.env is None else spec.env)
            env.pop(HEALTH_FD_ENV, None)
            pass_fds: tuple[int, ...] = ()
            if theirs is not None:
                env[HEALTH_FD_ENV] = str(theirs.fileno())
                pass_fds = (theirs.fileno(),)
            try:
                process = await trio.lowlevel.open_process(list(spec.argv), env=env, pass_fds=pass_fds)
            finally:
                if theirs is not None:
                    theirs.close()
            return await self._watch(child, process, probe, status)
        finally:
            if probe is not None:
                probe.close()

    async def _watch(
        self,
        child: _Child,
        process: trio.Process,
        probe: HealthProbe | None,
        status: trio.TaskStatus[None] | None,
    ) -> _Ended:
        spec = child.spec
        if child.spawned:
            child.restarts += 1
        child.spawned += 1
        child.process, child.started_at = process, trio.current_time()
        child.notify()
        logger.info("supervisor %s: child %r spawned, pid %d", self.name, spec.id, process.pid)
        ready = False
        child.kill_reason = None
        try:
            with trio.CancelScope() as child.stop_scope:
                if child.held:
                    child.stop_scope.cancel()
                ready = probe is None or await self._wait_ready(child, process, probe)
                if ready:
                    child.set_state(ChildState.RUNNING)
                    if status is not None:
                        status.started()
                    await self._monitor(child, process, probe)
        finally:
            child.stop_scope = None
            with trio.CancelScope(shield=True):
                await self._stop_process(child, process)
            child.last_returncode = process.returncode
            child.process = child.started_at = None
            child.notify()
        assert process.returncode is not None
        return _Ended(ready, process.pid, process.returncode, child.kill_reason)

    async def _wait_ready(self, child: _Child, process: trio.Process, probe: HealthProbe) -> bool:
        spec = child.spec
        with trio.move_on_after(spec.ready_timeout):
            if await probe.wait_ready():
                return True
            # The child closed its end: it is most likely exiting.
            await process.wait()
            return False
        child.kill_reason = f"not ready within {spec.ready_timeout}s"
        logger.error(
            "supervisor %s: child %r (pid %d) %s; killing it",
            self.name,
            spec.id,
            process.pid,
            child.kill_reason,
        )
        process.kill()
        return False

    async def _monitor(self, child: _Child, process: trio.Process, probe: HealthProbe | None) -> None:
        """Returns once the process has exited; kills it first if it stops answering pings."""
        async with trio.open_nursery() as nursery:
            if probe is not None:
                nursery.start_soon(self._ping, child, process, probe)
            await process.wait()
            nursery.cancel_scope.cancel()

    async def _ping(self, child: _Child, process: trio.Process, probe: HealthProbe) -> None:
        spec = child.spec
        assert spec.health_interval is not None
        await probe.watch(spec.health_interval, spec.health_timeout)
        child.kill_reason = "unresponsive"
        logger.error(
            "supervisor %s: child %r (pid %d) unresponsive: no pong within %ss; killing it",
            self.name,
            spec.id,
            process.pid,
            spec.health_timeout,
        )
        process.kill()

    async def _stop_process(self, child: _Child, process: trio.Process) -> None:
        """Stops the process if it still runs (SIGTERM, ``shutdown``, SIGKILL) and reaps it."""
        spec = child.spec
        if process.returncode is None:
            child.set_state(ChildState.STOPPING)
            if spec.shutdown > 0:
                process.terminate()
                with trio.move_on_after(spec.shutdown):
                    await process.wait()
            if process.returncode is None:
                if spec.shutdown > 0:
                    logger.warning(
                        "supervisor %s: child %r (pid %d) still running %ss after SIGTERM; killing it",
                        self.name,
                        spec.id,
                        process.pid,
                        spec.shutdown,
                    )
                process.kill()
        await process.wait()


class _StartedWith(trio.TaskStatus[object]):
    """Forwards ``started()`` to ``outer`` with a fixed value (the process supervisor)."""

    __slots__ = ("_outer", "_value")

    def __init__(self, outer: trio.TaskStatus[ProcessSupervisor], value: ProcessSupervisor) -> None:
        self._outer = outer
        self._value = value

    def started(self, value: object = None) -> None:
        self._outer.started(self._value)
