"""`DynamicSupervisor`: OTP's simple_one_for_one, for many short-lived children.

Children are added at run time (one per session, user, room) from any task.
Bookkeeping is a dict keyed by child id plus counters, so starting, exiting
and ``statistics()`` are O(1) per child even with tens of thousands of them.
"""

from __future__ import annotations

import functools
import math

import trio

from supervisors._child import (
    Exit,
    Run,
    StartFailed,
    log_error_while_stopping,
    logger,
    run_child,
    stop_run,
)
from supervisors.budget import RestartBudget
from supervisors.errors import ChildFailedToStart, RestartBudgetExceeded, SupervisorError
from supervisors.spec import ChildSpec
from supervisors.statistics import ChildState, DynamicSupervisorStatistics

__all__ = ["DynamicSupervisor"]


class _Child:
    __slots__ = ("run", "spec", "state")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.run: Run | None = None
        self.state = ChildState.STARTING


class DynamicSupervisor:
    """Supervises children added at run time; each is restarted on its own.

    TEMPORARY children (the usual case: a lost connection is not restartable)
    are simply forgotten when they exit. PERMANENT and TRANSIENT children
    are restarted one-for-one, charged to the budget.

    Args:
        name: Used in logs, statistics and escalation errors.
        budget: Restart intensity; defaults to 5 restarts in 30 seconds. A
            fresh copy is used for every ``run()``.
    """

    def __init__(self, name: str, budget: RestartBudget | None = None) -> None:
        self.name = name
        self._policy = budget if budget is not None else RestartBudget(5, 30.0)
        self._budget = self._policy.fresh()
        self._children: dict[str, _Child] = {}
        self._nursery: trio.Nursery | None = None
        self._restart_send: trio.MemorySendChannel[tuple[_Child, Exception | None]] | None = None
        self._started_total = 0
        self._failed_total = 0
        self._restarts_total = 0

    async def run(
        self, *, task_status: trio.TaskStatus[DynamicSupervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Runs the (initially empty) supervisor until cancelled.

        Args:
            task_status: Trio's ``nursery.start`` protocol; receives ``self``.

        Raises:
            RestartBudgetExceeded: Restarts exceeded the budget; every child
                is stopped first, then the error propagates unwrapped.
            RuntimeError: If this supervisor is already running.

        Error handling:
            On cancellation or escalation, new ``start_child`` calls are
            refused and every child is cancelled at once (as OTP does for
            simple_one_for_one; they have no start order), then each is
            awaited up to its own ``shutdown`` deadline.
        """
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._budget = self._policy.fresh()
        send, receive = trio.open_memory_channel[tuple[_Child, Exception | None]](math.inf)
        escalation: SupervisorError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._restart_send = nursery, send
                try:
                    task_status.started(self)
                    async for child, error in receive:
                        if (
                            self._children.get(child.spec.id) is child
                            and child.state is ChildState.RESTARTING
                        ):
                            await self._restart(child, error)
                except SupervisorError as exc:
                    escalation = exc  # raised outside the nursery, so not wrapped in a group
                finally:
                    self._restart_send = None
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
        finally:
            # Only once the nursery is closed: a child past its shutdown
            # deadline still runs until then.
            self._nursery = None
        if escalation is not None:
            raise escalation

    async def start_child(self, spec: ChildSpec) -> object:
        """Starts a child under this supervisor and waits until it is ready.

        May be called from any task; the child lives in the supervisor's
        nursery, not the caller's, and outlives the caller.

        Args:
            spec: The child; its id must not belong to a live child.

        Returns:
            The value the child passed to ``task_status.started()``.

        Raises:
            ChildFailedToStart: The child raised or returned before calling
                ``started()``, or the supervisor stopped meanwhile; the cause
                is chained. It does not count against the budget (OTP: the
                caller, not the supervisor, handles a failed start_child).
            SupervisorError: If the supervisor is not running.
            ValueError: If a live child already has this id.

        Error handling:
            Cancelling the caller while the child is still starting cancels
            the child's start too; a child that already started stays
            supervised.
        """
        if self._restart_send is None:
            raise SupervisorError(f"supervisor {self.name!r} is not running")
        if spec.id in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        child = _Child(spec)
        self._children[spec.id] = child
        run = Run()
        failure: StartFailed | None = None
        try:
            failure = await self._start_run(child, run)
        finally:
            # If the caller was cancelled mid-start, a child that did start
            # is still supervised; only one that never started is dropped.
            # (It may already have crashed and be restarting under a new run.)
            if not run.started or failure is not None:
                self._forget(child)
        if failure is not None:
            if failure.error is not None:
                self._failed_total += 1
            # The caller gets the exception; log quietly to avoid double reports.
            logger.debug(
                "supervisor %s: child %r failed to start", self.name, spec.id, exc_info=failure.error
            )
            raise ChildFailedToStart(self.name, spec.id, failure.error) from failure.error
        self._started_total += 1
        return run.value

    def start_child_soon(self, spec: ChildSpec) -> None:
        """Starts a TEMPORARY child without waiting for it to be ready.

        For children that are started by the thousand and whose starter needs nothing back
        (a client connection's actor): `start_child` costs a temporary nursery, a cancel scope
        and a round of the scheduler per child to hand back a value nobody uses. A child
        that fails before calling ``started()`` is logged and counted as a failed start, and
        forgotten.

        Raises:
            SupervisorError: If the supervisor is not running.
            ValueError: If a live child already has this id, or the child would be restarted
                (only TEMPORARY children may start this way: a restart needs a known start).
        """
        if self._restart_send is None or self._nursery is None:
            raise SupervisorError(f"supervisor {self.name!r} is not running")
        if spec.id in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        if spec.restart.wants_restart(failed=True):
            raise ValueError(f"child {spec.id!r} is not TEMPORARY: start it with start_child")
        child = _Child(spec)
        self._children[spec.id] = child
        run = Run()
        child.run, child.state = run, ChildState.RUNNING
        self._started_total += 1
        start = functools.partial(run_child, task_status=_SoonStatus(self, child))
        self._nursery.start_soon(start, spec, run, self._on_exit, child)

    async def terminate_child(self, child_id: str) -> bool:
        """Stops a child and forgets it; it is not restarted.

        Args:
            child_id: The child's ``ChildSpec.id``.

        Returns:
            True if the child was live and has now been stopped (or its
            ``shutdown`` deadline passed); False if there was no such child
            or it is already being stopped.
        """
        child = self._children.get(child_id)
        if child is None or child.state is ChildState.STOPPING:
            return False
        child.state = ChildState.STOPPING
        if child.run is not None:
            await stop_run(child.run, child.spec, self.name)
        self._forget(child)
        return True

    def lookup(self, child_id: str) -> object:
        """Returns the value a running child passed to ``task_status.started()``.

        Raises:
            KeyError: If there is no such child or it is not running.
        """
        child = self._children.get(child_id)
        run = child.run if child is not None else None
        if child is None or child.state is not ChildState.RUNNING or run is None or run.done:
            raise KeyError(f"supervisor {self.name!r} has no running child {child_id!r}")
        return run.value

    def statistics(self) -> DynamicSupervisorStatistics:
        """Returns frozen counters; O(1) whatever the number of children."""
        return DynamicSupervisorStatistics(
            name=self.name,
            active=len(self._children),
            started_total=self._started_total,
            failed_total=self._failed_total,
            restarts_total=self._restarts_total,
        )

    async def _start_run(self, child: _Child, run: Run) -> StartFailed | None:
        assert self._nursery is not None
        child.run, child.state = run, ChildState.STARTING
        failure: StartFailed | None = await self._nursery.start(
            run_child, child.spec, run, self._on_exit, child
        )
        if failure is None and child.run is run and child.state is ChildState.STARTING:
            child.state = ChildState.RUNNING
        return failure

    def _on_exit(self, child: _Child, exit_: Exit) -> None:
        """Runs in the child's wrapper as it ends: count, log, maybe queue a restart."""
        if exit_.run.stopping:
            # Stopped on purpose: whoever stopped it owns the bookkeeping.
            log_error_while_stopping(exit_, child.spec.id, self.name)
            return
        if exit_.run is not child.run:
            return  # a stale incarnation; defensive, stopping covers the known cases
        failed = exit_.error is not None
        if failed:
            self._failed_total += 1
            logger.error("supervisor %s: child %r crashed", self.name, child.spec.id, exc_info=exit_.error)
        send = self._restart_send
        if exit_.interrupted or send is None or not child.spec.restart.wants_restart(failed=failed):
            child.state = ChildState.TERMINATED
            self._forget(child)
            return
        child.state = ChildState.RESTARTING
        send.send_nowait((child, exit_.error))

    async def _restart(self, child: _Child, error: Exception | None) -> None:
        """Charges the budget and restarts ``child`` until a start succeeds."""
        while True:
            self._restarts_total += 1
            if not self._budget.charge(trio.current_time()):
                logger.critical("supervisor %s: restart budget exceeded, escalating", self.name)
                raise RestartBudgetExceeded(self.name, child.spec.id, error) from error
            failure = await self._start_run(child, Run())
            if failure is None:
                return
            if child.state is ChildState.STOPPING or self._children.get(child.spec.id) is not child:
                return  # terminated while restarting
            child.state = ChildState.RESTARTING
            error = failure.error
            if error is not None:
                self._failed_total += 1
            logger.error(
                "supervisor %s: child %r failed to restart", self.name, child.spec.id, exc_info=error
            )

    async def _stop_all(self) -> None:
        # Nothing joins once _restart_send is None (start_child checks it
        # before its first await); the loop only guards that invariant.
        while self._children:
            children = list(self._children.values())
            # One common deadline base: stopping N stubborn children takes
            # at most max(shutdown), not the sum.
            since = trio.current_time()
            for child in children:
                child.state = ChildState.STOPPING
                if child.run is not None:
                    child.run.stopping = True
                    child.run.scope.cancel()
            for child in children:
                if child.run is not None:
                    await stop_run(child.run, child.spec, self.name, since=since)
                child.state = ChildState.TERMINATED
                self._forget(child)

    def _forget(self, child: _Child) -> None:
        if self._children.get(child.spec.id) is child:
            del self._children[child.spec.id]


class _SoonStatus(trio.TaskStatus[StartFailed | None]):
    """The status `start_child_soon` hands to `run_child` instead of Trio's: nobody waits for
    the start, so a start that failed is reported here (logged, counted, forgotten)."""

    __slots__ = ("_child", "_supervisor")

    def __init__(self, supervisor: DynamicSupervisor, child: _Child) -> None:
        self._supervisor = supervisor
        self._child = child

    def started(self, value: StartFailed | None = None) -> None:
        if value is None:
            return
        supervisor, child = self._supervisor, self._child
        supervisor._started_total -= 1
        if value.error is not None:
            supervisor._failed_total += 1
            logger.error("supervisor %s: child %r failed to start", supervisor.name, child.spec.id,
                         exc_info=value.error)  # fmt: skip
        supervisor._forget(child)
