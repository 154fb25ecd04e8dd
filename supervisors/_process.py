"""One child of a `ProcessSupervisor` and the processes it runs, one at a time (internal).

`ProcessChild.supervise` is the child task the process supervisor gives its
inner `TaskSupervisor` for one `ProcessSpec`. It owns one OS process at a
time: spawn it with the health channel, wait for ``ready``, ping it, and
stop (SIGTERM, ``shutdown`` seconds, SIGKILL) and reap it. A normal exit
returns and an abnormal one raises `ProcessExited`, so the task supervisor
makes every OTP decision (budget, strategy, escalation).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from supervisors._child import logger
from supervisors.errors import ProcessExited
from supervisors.health import HEALTH_FD_ENV, HealthProbe
from supervisors.statistics import ChildState, ProcessChildStatistics

if TYPE_CHECKING:
    from supervisors.process_spec import ProcessSpec

__all__ = ["ProcessChild"]


@dataclass(frozen=True, slots=True)
class _Ended:
    """How one process ended: whether it had become ready, and its status."""

    ready: bool
    pid: int
    returncode: int
    reason: str | None


class ProcessChild:
    """One child's current process and history, and the task that runs its processes."""

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
        "supervisor_name",
    )

    def __init__(self, spec: ProcessSpec, supervisor_name: str) -> None:
        self.spec = spec
        self.supervisor_name = supervisor_name  # for the log
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

    def statistics(self, task_state: ChildState) -> ProcessChildStatistics:
        """This child's record; ``task_state`` is its state in the inner `TaskSupervisor`."""
        returncode = self.last_returncode
        return ProcessChildStatistics(
            id=self.spec.id,
            restart=self.spec.restart,
            state=self.state if self.active else task_state,
            pid=self.process.pid if self.process is not None else None,
            started_at=self.started_at if self.process is not None else None,
            restarts=self.restarts,
            last_exit_code=returncode if returncode is not None and returncode >= 0 else None,
            last_exit_signal=-returncode if returncode is not None and returncode < 0 else None,
        )

    async def supervise(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The inner task supervisor's child: runs this child's processes one after another.

        Normally there is one process per call: a normal exit returns and an
        abnormal one raises `ProcessExited`, and the task supervisor decides
        what comes next. Only `terminate_child` / `restart_child` make this
        loop: a held child waits here, without a process, to be restarted.
        """
        status: trio.TaskStatus[None] | None = task_status
        self.active = True
        try:
            while True:
                if self.held:
                    self.set_state(ChildState.TERMINATED)
                    if status is not None:
                        status.started()
                        status = None
                    while self.is_held():
                        await self.changed.wait()
                    continue
                manual = status is None
                try:
                    ended = await self._run_process(status)
                except OSError as exc:  # the spawn failed
                    if not manual:
                        raise
                    logger.error(
                        "supervisor %s: cannot spawn child %r",
                        self.supervisor_name,
                        self.spec.id,
                        exc_info=exc,
                    )
                    self.held, self.start_error = True, exc
                    continue
                if ended.ready:
                    status = None
                if self.is_held():
                    continue  # stopped by terminate_child
                if ended.returncode == 0 and ended.ready:
                    return
                error = ProcessExited(
                    self.spec.id,
                    ended.pid,
                    ended.returncode,
                    ended.reason or (None if ended.ready else "exited before it was ready"),
                )
                if not manual:
                    raise error
                logger.error(
                    "supervisor %s: child %r failed to restart: %s", self.supervisor_name, self.spec.id, error
                )
                self.held, self.start_error = True, error
        finally:
            self.active = False
            self.notify()

    async def _run_process(self, status: trio.TaskStatus[None] | None) -> _Ended:
        """Spawns one process, reports it started once ready, and returns once it is reaped.

        Raises:
            OSError: If the process could not be spawned.
        """
        spec = self.spec
        ours: socket.socket | None = None
        theirs: socket.socket | None = None
        if spec.health_interval is not None:
            ours, theirs = socket.socketpair()
        probe = HealthProbe(ours) if ours is not None else None
        try:
            self.set_state(ChildState.STARTING)
            env = dict(os.environ if spec.env is None else spec.env)
            env.pop(HEALTH_FD_ENV, None)
            pass_fds = tuple(spec.pass_fds)
            if theirs is not None:
                env[HEALTH_FD_ENV] = str(theirs.fileno())
                pass_fds += (theirs.fileno(),)
            try:
                process = await trio.lowlevel.open_process(list(spec.argv), env=env, pass_fds=pass_fds)
            finally:
                if theirs is not None:
                    theirs.close()
            return await self._watch(process, probe, status)
        finally:
            if probe is not None:
                probe.close()

    async def _watch(
        self, process: trio.Process, probe: HealthProbe | None, status: trio.TaskStatus[None] | None
    ) -> _Ended:
        if self.spawned:
            self.restarts += 1
        self.spawned += 1
        self.process, self.started_at = process, trio.current_time()
        self.notify()
        name, child_id = self.supervisor_name, self.spec.id
        logger.info("supervisor %s: child %r spawned, pid %d", name, child_id, process.pid)
        ready = False
        self.kill_reason = None
        try:
            with trio.CancelScope() as self.stop_scope:
                if self.held:
                    self.stop_scope.cancel()
                ready = probe is None or await self._wait_ready(process, probe)
                if ready:
                    self.set_state(ChildState.RUNNING)
                    if status is not None:
                        status.started()
                    await self._monitor(process, probe)
        finally:
            self.stop_scope = None
            with trio.CancelScope(shield=True):
                await self._stop_process(process)
            self.last_returncode = process.returncode
            self.process = self.started_at = None
            self.notify()
        assert process.returncode is not None
        return _Ended(ready, process.pid, process.returncode, self.kill_reason)

    async def _wait_ready(self, process: trio.Process, probe: HealthProbe) -> bool:
        spec = self.spec
        with trio.move_on_after(spec.ready_timeout):
            if await probe.wait_ready():
                return True
            # The child closed its end: it is most likely exiting.
            await process.wait()
            return False
        self.kill_reason = f"not ready within {spec.ready_timeout}s"
        logger.error(
            "supervisor %s: child %r (pid %d) %s; killing it",
            self.supervisor_name,
            spec.id,
            process.pid,
            self.kill_reason,
        )
        process.kill()
        return False

    async def _monitor(self, process: trio.Process, probe: HealthProbe | None) -> None:
        """Returns once the process has exited; kills it first if it stops answering pings."""
        async with trio.open_nursery() as nursery:
            if probe is not None:
                nursery.start_soon(self._ping, process, probe)
            await process.wait()
            nursery.cancel_scope.cancel()

    async def _ping(self, process: trio.Process, probe: HealthProbe) -> None:
        spec = self.spec
        assert spec.health_interval is not None
        await probe.watch(spec.health_interval, spec.health_timeout)
        self.kill_reason = "unresponsive"
        logger.error(
            "supervisor %s: child %r (pid %d) unresponsive: no pong within %ss; killing it",
            self.supervisor_name,
            spec.id,
            process.pid,
            spec.health_timeout,
        )
        process.kill()

    async def _stop_process(self, process: trio.Process) -> None:
        """Stops the process if it still runs (SIGTERM, ``shutdown``, SIGKILL) and reaps it."""
        spec = self.spec
        if process.returncode is None:
            self.set_state(ChildState.STOPPING)
            if spec.shutdown > 0:
                process.terminate()
                with trio.move_on_after(spec.shutdown):
                    await process.wait()
            if process.returncode is None:
                if spec.shutdown > 0:
                    logger.warning(
                        "supervisor %s: child %r (pid %d) still running %ss after SIGTERM; killing it",
                        self.supervisor_name,
                        spec.id,
                        process.pid,
                        spec.shutdown,
                    )
                process.kill()
        await process.wait()
