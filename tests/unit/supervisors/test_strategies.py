"""TaskSupervisor restart strategies, restart types and budget escalation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from supervisors import (
    ChildSpec,
    ChildState,
    Restart,
    RestartBudget,
    RestartBudgetExceeded,
    Strategy,
    SupervisorError,
    TaskSupervisor,
)

Fake = Callable[..., Any]


async def supervise(
    sup: TaskSupervisor, outcome: list[SupervisorError], *, task_status: trio.TaskStatus[TaskSupervisor]
) -> None:
    """Runs ``sup`` and keeps what it raised; a group would escape and fail the test."""
    try:
        await sup.run(task_status=task_status)
    except SupervisorError as exc:
        outcome.append(exc)


@pytest.mark.parametrize(
    ("strategy", "expected", "starts"),
    [
        (Strategy.ONE_FOR_ONE, ["crash b", "start b"], [1, 2, 1]),
        (
            Strategy.ONE_FOR_ALL,
            ["crash b", "stop c", "stop a", "start a", "start b", "start c"],
            [2, 2, 2],
        ),
        (Strategy.REST_FOR_ONE, ["crash b", "stop c", "start b", "start c"], [1, 2, 2]),
    ],
)
async def test_strategy(
    autojump_clock: trio.testing.MockClock,
    fake: Fake,
    events: list[str],
    strategy: Strategy,
    expected: list[str],
    starts: list[int],
) -> None:
    children = [fake(n) for n in "abc"]
    sup = TaskSupervisor("root", [ch.spec for ch in children], strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        events.clear()
        children[1].crash()
        await trio.testing.wait_all_tasks_blocked()
        assert events == expected
        assert [ch.starts for ch in children] == starts
        assert all(c.state is ChildState.RUNNING for c in sup.statistics().children)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_group_restart_stops_but_does_not_restart_temporary_siblings(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str], strategy: Strategy
) -> None:
    a, t = fake("a"), fake("t", restart=Restart.TEMPORARY)
    sup = TaskSupervisor("root", [a.spec, t.spec], strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        events.clear()
        a.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["crash a", "stop t", "start a"]
        assert sup.statistics().children[1].state is ChildState.TERMINATED
        nursery.cancel_scope.cancel()


async def test_simultaneous_crashes_cause_one_group_restart(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    a, b = fake("a"), fake("b")
    sup = TaskSupervisor("root", [a.spec, b.spec], Strategy.ONE_FOR_ALL)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        events.clear()
        a.crash()
        b.crash()
        await trio.testing.wait_all_tasks_blocked()
        # b's exit was already handled by the restart a's crash triggered.
        assert sorted(events[:2]) == ["crash a", "crash b"]
        assert events[2:] == ["start a", "start b"]
        assert sup.statistics().restarts_total == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("restart", "crash", "restarted"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
async def test_restart_types(
    autojump_clock: trio.testing.MockClock, fake: Fake, restart: Restart, crash: bool, restarted: bool
) -> None:
    child, other = fake("x", restart=restart), fake("other")
    sup = TaskSupervisor("root", [child.spec, other.spec])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        if crash:
            child.crash()
        else:
            child.exit()
        await trio.testing.wait_all_tasks_blocked()
        stats = sup.statistics()
        nursery.cancel_scope.cancel()
    assert child.starts == (2 if restarted else 1)
    assert stats.children[0].state is (ChildState.RUNNING if restarted else ChildState.TERMINATED)
    assert stats.restarts_total == int(restarted)
    assert other.starts == 1  # a sibling's exit never disturbs it under ONE_FOR_ONE


async def test_budget_exceeded_escalates_out_of_run(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    a, b, c = fake("a"), fake("b"), fake("c")
    sup = TaskSupervisor("root", [a.spec, b.spec, c.spec], budget=RestartBudget(2, 10.0))
    outcome: list[SupervisorError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, sup, outcome)
        for _ in range(3):
            b.crash()
            await trio.testing.wait_all_tasks_blocked()
    [error] = outcome
    assert type(error) is RestartBudgetExceeded
    assert (error.supervisor_name, error.child_id) == ("root", "b")
    assert error.__cause__ is b.last_error is error.last_error
    assert events[-3:] == ["crash b", "stop c", "stop a"]  # the others stopped in reverse
    assert b.starts == 3


async def test_restarts_spread_over_time_stay_within_budget(
    autojump_clock: trio.testing.MockClock, fake: Fake
) -> None:
    a = fake("a")
    sup = TaskSupervisor("root", [a.spec], budget=RestartBudget(1, 10.0))
    outcome: list[SupervisorError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, sup, outcome)
        for _ in range(5):
            a.crash()
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(10.5)
        assert sup.statistics().restarts_total == 5
        assert outcome == []
        # Two crashes within the period are one too many.
        a.crash()
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(9)
        a.crash()
    assert [type(e) for e in outcome] == [RestartBudgetExceeded]


async def test_normal_exit_of_a_permanent_child_is_charged(
    autojump_clock: trio.testing.MockClock, fake: Fake
) -> None:
    a = fake("a")
    sup = TaskSupervisor("root", [a.spec], budget=RestartBudget(0, 10.0))
    outcome: list[SupervisorError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, sup, outcome)
        a.exit()
    [error] = outcome
    assert isinstance(error, RestartBudgetExceeded)
    assert error.last_error is None


async def test_failed_restarts_are_charged_and_retried(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    a, b = fake("a"), fake("b")
    sup = TaskSupervisor("root", [a.spec, b.spec], Strategy.REST_FOR_ONE, RestartBudget(3, 10.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        events.clear()
        a.fail_starts = 2
        a.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["crash a", "stop b", "start-failed a", "start-failed a", "start a", "start b"]
        assert sup.statistics().restarts_total == 3
        assert sup.lookup("b") == "b#2"
        nursery.cancel_scope.cancel()


async def test_failed_restart_exhausting_the_budget_reports_the_start_error(
    autojump_clock: trio.testing.MockClock, fake: Fake
) -> None:
    a = fake("a")
    sup = TaskSupervisor("root", [a.spec], budget=RestartBudget(1, 10.0))
    outcome: list[SupervisorError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, sup, outcome)
        a.fail_starts = 5
        a.crash()
    [error] = outcome
    assert isinstance(error, RestartBudgetExceeded)
    assert error.__cause__ is a.last_error
    assert "failed to start" in str(error.__cause__)
    assert a.starts == 2  # first start, then one failed restart exhausted the budget


async def test_nested_supervisor_escalation_is_handled_by_the_parent(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    w = fake("worker")
    inner = TaskSupervisor("inner", [w.spec], budget=RestartBudget(0, 10.0))
    outer = TaskSupervisor("outer", [ChildSpec("inner", inner.run, shutdown=float("inf")), fake("peer").spec])
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        events.clear()
        w.crash()
        await trio.testing.wait_all_tasks_blocked()
        # inner gave up (intensity 0); outer restarted it, with a fresh budget.
        assert events == ["crash worker", "start worker"]
        assert outer.lookup("inner") is inner
        assert outer.statistics().children[0].restarts == 1
        w.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert w.starts == 3
        nursery.cancel_scope.cancel()
    assert events[-2:] == ["stop peer", "stop worker"]
