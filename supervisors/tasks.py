"""`TaskSupervisor`: an OTP supervisor over an ordered, static list of Trio tasks.

A Trio nursery is one-cancels-all; this builds OTP's strategies on top of
it. Every child runs in a wrapper task with its own cancel scope
(`supervisors._child`), which turns a crash into a message for the
supervisor's loop. That single loop charges the budget and performs
restarts, so a restart that touches several children (ONE_FOR_ALL,
REST_FOR_ONE) never races with another child's crash.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

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
from supervisors.dynamic import DynamicSupervisor
from supervisors.errors import ChildFailedToStart, RestartBudgetExceeded, SupervisorError
from supervisors.spec import ChildSpec, Restart, Strategy
from supervisors.statistics import ChildState, ChildStatistics, SupervisorStatistics

__all__ = ["DynamicSupervisor", "TaskSupervisor"]


class _Slot:
    """A position in the child list and the child's current run, if any."""

    __slots__ = ("index", "restarts", "run", "spec", "state")

    def __init__(self, index: int, spec: ChildSpec) -> None:
        self.index = index
        self.spec = spec
        self.run: Run | None = None
        self.state = ChildState.TERMINATED
        self.restarts = 0


class TaskSupervisor:
    """Starts an ordered list of children and keeps them running.

    Args:
        name: Used in logs, statistics and escalation errors.
        children: Child specs in start order (the dependency order: a child
            may rely on those before it). Ids must be unique.
        strategy: Which children are restarted when one must be.
        budget: Restart intensity; defaults to 5 restarts in 30 seconds. The
            supervisor keeps its own fresh copy for every ``run()``, so one
            budget object may serve as the policy of many supervisors.

    Raises:
        ValueError: If two children share an id.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget | None = None,
    ) -> None:
        duplicates = sorted(i for i, n in Counter(spec.id for spec in children).items() if n > 1)
        if duplicates:
            raise ValueError(f"supervisor {name!r}: duplicate child ids {duplicates}")
        self.name = name
        self.strategy = strategy
        self._policy = budget if budget is not None else RestartBudget(5, 30.0)
        self._budget = self._policy.fresh()
        self._slots = [_Slot(i, spec) for i, spec in enumerate(children)]
        self._by_id = {slot.spec.id: slot for slot in self._slots}
        self._nursery: trio.Nursery | None = None
        self._exits_send: trio.MemorySendChannel[tuple[_Slot, Exit]] | None = None
        self._restarts_total = 0

    async def run(self, *, task_status: trio.TaskStatus[TaskSupervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Starts the children in order, then supervises them until cancelled.

        Calls ``task_status.started(self)`` once every child has started.

        Args:
            task_status: Trio's ``nursery.start`` protocol.

        Raises:
            ChildFailedToStart: A child failed during the initial start; the
                children already started are stopped in reverse order first.
            RestartBudgetExceeded: Restarts exceeded the budget. All children
                are stopped in reverse order before it propagates, unwrapped,
                so the parent can supervise this supervisor.
            RuntimeError: If this supervisor is already running.

        Error handling:
            A child's ``Exception`` is logged (logger ``"supervisors"``) and
            handled per its restart type and the strategy; it never cancels
            the siblings. When ``run()`` is cancelled, children are stopped
            one at a time in reverse start order, each for at most its
            ``shutdown`` seconds, and then ``run()`` returns or re-raises.
        """
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._budget = self._policy.fresh()
        # Unbounded: each run reports at most once, and _on_exit cannot wait.
        send, receive = trio.open_memory_channel[tuple[_Slot, Exit]](math.inf)
        escalation: SupervisorError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._exits_send = nursery, send
                try:
                    await self._start_initial()
                    task_status.started(self)
                    async for slot, exit_ in receive:
                        # A group restart may already have replaced this run.
                        if slot.run is exit_.run and slot.state is ChildState.RESTARTING:
                            await self._recover(slot, exit_.error)
                except SupervisorError as exc:
                    # Raised after the nursery closes so the parent sees it bare,
                    # not inside an ExceptionGroup.
                    escalation = exc
                finally:
                    self._exits_send = None
                    with trio.CancelScope(shield=True):
                        await self._stop(self._slots)
        finally:
            # Only once the nursery is closed: a child past its shutdown
            # deadline still runs until then.
            self._nursery = None
        if escalation is not None:
            raise escalation

    def lookup(self, child_id: str) -> object:
        """Returns the value a running child passed to ``task_status.started()``.

        Args:
            child_id: The child's ``ChildSpec.id``.

        Returns:
            The value of the child's current incarnation (a new value after
            each restart).

        Raises:
            KeyError: If there is no such child or it is not running.
        """
        slot = self._by_id.get(child_id)
        if slot is None:
            raise KeyError(f"supervisor {self.name!r} has no child {child_id!r}")
        run = slot.run
        if slot.state is not ChildState.RUNNING or run is None or run.done:
            raise KeyError(f"child {child_id!r} of supervisor {self.name!r} is not running")
        return run.value

    def statistics(self) -> SupervisorStatistics[ChildStatistics]:
        """Returns a frozen snapshot of the supervisor and its children."""
        children = tuple(
            ChildStatistics(id=s.spec.id, restart=s.spec.restart, state=s.state, restarts=s.restarts)
            for s in self._slots
        )
        return SupervisorStatistics(self.name, self.strategy, children, self._restarts_total)

    async def _start_initial(self) -> None:
        self._restarts_total = 0
        for slot in self._slots:
            slot.restarts, slot.state = 0, ChildState.TERMINATED
        failure = await self._start(self._slots, restarting=False)
        if failure is not None:
            slot, error = failure
            # OTP: a supervisor whose init fails does not retry; its parent decides.
            raise ChildFailedToStart(self.name, slot.spec.id, error) from error

    async def _start(
        self, slots: Sequence[_Slot], *, restarting: bool
    ) -> tuple[_Slot, Exception | None] | None:
        """Starts ``slots`` in order; stops at the first failure and returns it."""
        assert self._nursery is not None
        for slot in slots:
            run = Run()
            slot.run, slot.state = run, ChildState.STARTING
            result = await self._nursery.start(run_child, slot.spec, run, self._on_exit, slot)
            if isinstance(result, StartFailed):
                slot.run, slot.state = None, ChildState.TERMINATED
                logger.error(
                    "supervisor %s: child %r failed to start",
                    self.name,
                    slot.spec.id,
                    exc_info=result.error,
                )
                return slot, result.error
            if restarting:
                slot.restarts += 1
            if slot.run is run and slot.state is ChildState.STARTING:
                slot.state = ChildState.RUNNING
        return None

    def _on_exit(self, slot: _Slot, exit_: Exit) -> None:
        """Runs in the child's wrapper as it ends: log, decide, notify the loop."""
        if exit_.run.stopping:
            # Stopped on purpose: whoever stopped it owns the bookkeeping.
            log_error_while_stopping(exit_, slot.spec.id, self.name)
            return
        if exit_.run is not slot.run:
            return  # a stale incarnation; defensive, stopping covers the known cases
        failed = exit_.error is not None
        if failed:
            logger.error("supervisor %s: child %r crashed", self.name, slot.spec.id, exc_info=exit_.error)
        else:
            logger.info("supervisor %s: child %r exited normally", self.name, slot.spec.id)
        send = self._exits_send
        if exit_.interrupted or send is None or not slot.spec.restart.wants_restart(failed=failed):
            slot.run, slot.state = None, ChildState.TERMINATED
            return
        slot.state = ChildState.RESTARTING
        send.send_nowait((slot, exit_))

    async def _recover(self, slot: _Slot, error: Exception | None) -> None:
        """Charges the budget and restarts per strategy until the starts succeed."""
        while True:
            self._restarts_total += 1
            if not self._budget.charge(trio.current_time()):
                logger.critical("supervisor %s: restart budget exceeded, escalating", self.name)
                raise RestartBudgetExceeded(self.name, slot.spec.id, error) from error
            group = self._group(slot)
            await self._stop([s for s in group if s is not slot])
            # As in OTP: temporary siblings caught up in a group restart stay
            # stopped, while the other members of the group are all started
            # again, including one that had ended normally (a TRANSIENT child).
            restartable = [s for s in group if s is slot or s.spec.restart is not Restart.TEMPORARY]
            failure = await self._start(restartable, restarting=True)
            if failure is None:
                return
            slot, error = failure

    def _group(self, slot: _Slot) -> list[_Slot]:
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._slots)
        if self.strategy is Strategy.REST_FOR_ONE:
            return self._slots[slot.index :]
        return [slot]

    async def _stop(self, slots: Sequence[_Slot]) -> None:
        """Stops the running ones among ``slots``, in reverse order, one at a time."""
        for slot in reversed(slots):
            run = slot.run
            if run is None:
                continue
            slot.state = ChildState.STOPPING
            await stop_run(run, slot.spec, self.name)
            slot.run, slot.state = None, ChildState.TERMINATED
