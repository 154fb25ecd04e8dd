"""The wrapper task around one incarnation of a child (internal).

Both supervisors start each child as ``await nursery.start(run_child, ...)``
in their own nursery. The wrapper gives every incarnation its own cancel
scope, turns the child's fate into data (`Exit`, `StartFailed`) instead of
letting it cancel the nursery, and hands that data to the supervisor.

Cancellation model: while a child is starting, its scope is *not* shielded,
so cancelling whoever awaits the start aborts it. Once it has called
``started()`` and has been moved into the supervisor's nursery, its scope is
shielded: cancelling the supervisor then does not reach the children all at
once, and the supervisor stops them one by one, in reverse start order, by
cancelling each scope (OTP's ordered shutdown).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from supervisors.spec import ChildSpec

__all__ = ["Exit", "Run", "StartFailed", "log_error_while_stopping", "logger", "run_child", "stop_run"]

logger = logging.getLogger("supervisors")

C = TypeVar("C")


class Run:
    """One incarnation of a child, from its start until it has exited."""

    __slots__ = ("_done_event", "done", "scope", "started", "stopping", "value")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        # True once the run has ended. The Event behind `wait_done` exists
        # only while someone waits: almost no run is ever waited for (a
        # session ends on its own), and an Event costs ~0.3 KB per child.
        self.done = False
        self._done_event: trio.Event | None = None
        self.started = False
        # Set by whoever cancels the run on purpose, so its exit is not
        # mistaken for a crash and restarted.
        self.stopping = False
        self.value: object = None

    def set_done(self) -> None:
        """Marks the run as ended and wakes whoever waits for that."""
        self.done = True
        if self._done_event is not None:
            self._done_event.set()

    async def wait_done(self) -> None:
        """Returns once the run has ended (at once if it already has)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        if self._done_event is None:
            self._done_event = trio.Event()
        await self._done_event.wait()


@dataclass(frozen=True, slots=True)
class Exit:
    """How a started run ended.

    Attributes:
        run: The run that ended.
        error: The exception it raised, or None if it returned (or was
            stopped by the supervisor).
        interrupted: A BaseException (an outer ``Cancelled``,
            ``KeyboardInterrupt``) is propagating through the run; it must
            not be restarted, the supervisor itself is going down.
    """

    run: Run
    error: Exception | None
    interrupted: bool


@dataclass(frozen=True, slots=True)
class StartFailed:
    """Returned by ``nursery.start(run_child, ...)`` when the child never started.

    Attributes:
        error: What the child raised; None if the supervisor cancelled it
            while it was starting.
    """

    error: Exception | None


class _StartStatus(trio.TaskStatus[object]):
    """The ``task_status`` handed to the child: records its value, then moves it.

    It is the only holder of Trio's own status once `run_child` has begun,
    and lets go of it as soon as the start is settled: Trio's status keeps
    the temporary nursery of ``nursery.start`` (its cancel scope and status,
    about 1 KB), which would otherwise live as long as the child, and a
    session or user actor lives for hours.
    """

    __slots__ = ("_outer", "_run")

    def __init__(self, run: Run, outer: trio.TaskStatus[StartFailed | None]) -> None:
        self._run = run
        self._outer: trio.TaskStatus[StartFailed | None] | None = outer

    def started(self, value: object = None) -> None:
        outer = self._outer
        if self._run.started or outer is None:
            raise RuntimeError("called 'started' twice on the same task status")
        self._run.started = True
        self._run.value = value
        self._outer = None
        outer.started(None)
        # Trio does not move the task when the starter was cancelled
        # meanwhile; the child then sits under a cancelled scope and must see
        # that cancellation, or nursery.start() would wait for it forever.
        if trio.current_effective_deadline() != -math.inf:
            self._run.scope.shield = True

    def fail(self, failure: StartFailed) -> None:
        """Tells ``nursery.start`` that the child ended without starting."""
        outer, self._outer = self._outer, None
        assert outer is not None, "a run that never started still holds Trio's status"
        outer.started(failure)


async def run_child(
    spec: ChildSpec,
    run: Run,
    on_exit: Callable[[C, Exit], None],
    owner: C,
    *,
    task_status: trio.TaskStatus[StartFailed | None],
) -> None:
    """Runs one incarnation of ``spec`` and reports how it ended.

    Args:
        spec: The child to run.
        run: Fresh bookkeeping for this incarnation; its scope wraps the child.
        on_exit: Called synchronously as ``on_exit(owner, exit)`` once a
            *started* run has ended, also when a BaseException is
            propagating. Must not raise.
        owner: The supervisor's record of the child, for ``on_exit``. Passed
            apart rather than bound with ``functools.partial``: this frame
            lives as long as the child, and a partial costs ~0.2 KB.
        task_status: From ``nursery.start``. Receives None once the child
            called ``started()``, or a `StartFailed` if it never did.

    Error handling:
        ``Exception`` raised by the child is caught and reported, never
        propagated: one child's crash must not cancel its siblings. Any
        other BaseException (``Cancelled`` from outside the run's own scope,
        ``KeyboardInterrupt``) passes through untouched.
    """
    status = _StartStatus(run, task_status)
    # This frame lives as long as the child: only `status` may keep Trio's
    # status (see `_StartStatus`).
    del task_status
    error: Exception | None = None
    interrupted = True
    try:
        try:
            with run.scope:
                await spec.start(task_status=status)
        except Exception as exc:
            error = exc
        interrupted = False
    finally:
        run.set_done()
        if run.started:
            on_exit(owner, Exit(run, error, interrupted))
    if not run.started:
        if error is None and not run.scope.cancelled_caught:
            # Same complaint as nursery.start(), but as data the supervisor handles.
            error = RuntimeError(f"child {spec.id!r} exited without calling task_status.started()")
        status.fail(StartFailed(error))


async def stop_run(run: Run, spec: ChildSpec, supervisor_name: str, *, since: float | None = None) -> None:
    """Cancels a run and waits up to ``spec.shutdown`` seconds for it to end.

    Args:
        run: The run to stop; it may already have ended.
        spec: Its child spec (for the id and the shutdown deadline).
        supervisor_name: For the log message.
        since: When the shutdown period began (``trio.current_time()``);
            defaults to now.

    Error handling:
        The wait is shielded, so a supervisor being cancelled still stops its
        children in order. Past the deadline this logs a warning and returns;
        the run stays in the supervisor's nursery, which still waits for it.
    """
    run.stopping = True
    run.scope.cancel()
    start = trio.current_time() if since is None else since
    with trio.CancelScope(shield=True), trio.move_on_at(start + spec.shutdown) as deadline:
        await run.wait_done()
    if deadline.cancelled_caught:
        logger.warning(
            "supervisor %s: child %r still running %ss after cancellation; not waiting any longer",
            supervisor_name,
            spec.id,
            spec.shutdown,
        )


def log_error_while_stopping(exit_: Exit, child_id: str, supervisor_name: str) -> None:
    """Logs an exception a child raised while being stopped on purpose.

    It is no crash to restart (the supervisor wanted the child gone), but
    every failure must land somewhere (OTP reports it as a shutdown error).
    """
    if exit_.error is not None:
        logger.warning(
            "supervisor %s: child %r raised while stopping",
            supervisor_name,
            child_id,
            exc_info=exit_.error,
        )
