"""DynamicSupervisor (OTP simple_one_for_one): many children, O(1) bookkeeping."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from supervisors import (
    ChildFailedToStart,
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorStatistics,
    Restart,
    RestartBudget,
    RestartBudgetExceeded,
    SupervisorError,
)

Fake = Callable[..., Any]


async def supervise(
    sup: DynamicSupervisor, outcome: list[SupervisorError], *, task_status: trio.TaskStatus[DynamicSupervisor]
) -> None:
    try:
        await sup.run(task_status=task_status)
    except SupervisorError as exc:
        outcome.append(exc)


async def test_start_lookup_and_terminate(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    sup = DynamicSupervisor("sessions")
    a = fake("a", restart=Restart.TEMPORARY)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(sup.run) is sup
        assert await sup.start_child(a.spec) == "a#1"
        assert sup.lookup("a") == "a#1"
        assert sup.statistics() == DynamicSupervisorStatistics("sessions", 1, 1, 0, 0)
        assert await sup.terminate_child("a") is True
        assert events == ["start a", "stop a"]
        assert sup.statistics().active == 0
        assert await sup.terminate_child("a") is False
        with pytest.raises(KeyError):
            sup.lookup("a")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("restart", list(Restart))
async def test_a_terminated_child_is_never_restarted(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str], restart: Restart
) -> None:
    sup = DynamicSupervisor("users")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(fake("a", restart=restart).spec)
        assert await sup.terminate_child("a") is True
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["start a", "stop a"]
        assert sup.statistics() == DynamicSupervisorStatistics("users", 0, 1, 0, 0)
        nursery.cancel_scope.cancel()


async def test_a_started_child_keeps_none_of_trios_start_machinery(
    autojump_clock: trio.testing.MockClock, fake: Fake
) -> None:
    # Trio's task status holds the temporary nursery of nursery.start (~1 KB); kept by the child's
    # wrapper, it would live as long as the child, and a session lives for hours.
    status_types: list[type[object]] = []

    async def probe(*, task_status: trio.TaskStatus[None]) -> None:
        status_types.append(type(task_status))
        task_status.started()

    def live_trio_statuses() -> int:
        gc.collect()
        return sum(isinstance(o, status_types[0]) for o in gc.get_objects())

    sup = DynamicSupervisor("sessions")
    async with trio.open_nursery() as nursery:
        await nursery.start(probe)
        await nursery.start(sup.run)
        before = live_trio_statuses()
        for name in "abc":
            await sup.start_child(fake(name, restart=Restart.TEMPORARY).spec)
        assert live_trio_statuses() == before
        nursery.cancel_scope.cancel()


async def test_ten_thousand_temporary_children(autojump_clock: trio.testing.MockClock) -> None:
    gate = trio.Event()
    running = 0

    async def session(i: int, *, task_status: trio.TaskStatus[int]) -> None:
        nonlocal running
        running += 1
        task_status.started(i)
        await gate.wait()
        running -= 1
        if i % 100 == 0:
            raise ValueError(f"session {i} lost its socket")

    sup = DynamicSupervisor("sessions", budget=RestartBudget(0, 1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for i in range(10_000):
            spec = ChildSpec(
                f"s{i}", lambda *, task_status, i=i: session(i, task_status=task_status), Restart.TEMPORARY
            )
            assert await sup.start_child(spec) == i
        assert running == 10_000
        assert sup.statistics().active == 10_000
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        # Temporary failures are counted but never restarted (budget 0 would escalate).
        assert sup.statistics() == DynamicSupervisorStatistics("sessions", 0, 10_000, 100, 0)
        assert running == 0
        nursery.cancel_scope.cancel()


async def test_child_outlives_the_task_that_started_it(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    sup = DynamicSupervisor("rooms")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        async with trio.open_nursery() as callers:
            callers.start_soon(sup.start_child, fake("r", restart=Restart.TEMPORARY).spec)
        await trio.sleep(60)
        assert sup.lookup("r") == "r#1"
        assert events == ["start r"]
        nursery.cancel_scope.cancel()
    assert events == ["start r", "stop r"]


async def test_start_failure_is_raised_to_the_caller_only(
    autojump_clock: trio.testing.MockClock, fake: Fake, boom: type[Exception]
) -> None:
    sup = DynamicSupervisor("users", budget=RestartBudget(0, 1.0))
    bad = fake("u", fail_starts=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(ChildFailedToStart) as info:
            await sup.start_child(bad.spec)
        assert info.value.__cause__ is bad.last_error
        assert isinstance(bad.last_error, boom)
        assert sup.statistics() == DynamicSupervisorStatistics("users", 0, 0, 1, 0)
        # Not charged to the (zero) budget, and the id is free again.
        assert await sup.start_child(bad.spec) == "u#2"
        nursery.cancel_scope.cancel()


async def test_duplicate_live_id_is_rejected_until_it_exits(
    autojump_clock: trio.testing.MockClock, fake: Fake
) -> None:
    sup = DynamicSupervisor("sessions")
    a = fake("a", restart=Restart.TEMPORARY)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(a.spec)
        with pytest.raises(ValueError, match="already has a child 'a'"):
            await sup.start_child(a.spec)
        a.exit()
        await trio.testing.wait_all_tasks_blocked()
        assert await sup.start_child(a.spec) == "a#2"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("restart", "crash", "restarted"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
    ],
)
async def test_permanent_and_transient_children_restart_one_for_one(
    autojump_clock: trio.testing.MockClock, fake: Fake, restart: Restart, crash: bool, restarted: bool
) -> None:
    sup = DynamicSupervisor("users")
    x, y = fake("x", restart=restart), fake("y")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(x.spec)
        await sup.start_child(y.spec)
        if crash:
            x.crash()
        else:
            x.exit()
        await trio.testing.wait_all_tasks_blocked()
        stats = sup.statistics()
        if restarted:
            assert sup.lookup("x") == "x#2"
        else:
            with pytest.raises(KeyError):
                sup.lookup("x")
        nursery.cancel_scope.cancel()
    assert stats == DynamicSupervisorStatistics("users", 1 + restarted, 2, int(crash), int(restarted))
    assert y.starts == 1


async def test_budget_exceeded_stops_everything_and_escalates(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    sup = DynamicSupervisor("users", budget=RestartBudget(1, 10.0))
    p, t = fake("p"), fake("t", restart=Restart.TEMPORARY)
    outcome: list[SupervisorError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, sup, outcome)
        await sup.start_child(t.spec)
        await sup.start_child(p.spec)
        p.crash()
        await trio.testing.wait_all_tasks_blocked()
        p.crash()
    [error] = outcome
    assert type(error) is RestartBudgetExceeded
    assert (error.child_id, error.__cause__) == ("p", p.last_error)
    assert events[-1] == "stop t"
    with pytest.raises(SupervisorError, match="not running"):
        await sup.start_child(fake("late").spec)


async def test_shutdown_cancels_all_children_at_once(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    sup = DynamicSupervisor("sessions")
    with pytest.raises(SupervisorError, match="not running"):
        await sup.start_child(fake("early").spec)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for n in "abc":
            await sup.start_child(fake(n, stop_delay=1.0).spec)
        events.clear()
        before = trio.current_time()
        nursery.cancel_scope.cancel()
    assert sorted(events[:3]) == ["stop a", "stop b", "stop c"]  # all cancelled before any finished
    assert trio.current_time() - before == 1.0
    assert sup.statistics().active == 0


async def test_start_child_soon_runs_temporary_children_without_waiting(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    sup = DynamicSupervisor("sessions")
    good = fake("a", restart=Restart.TEMPORARY)
    bad = fake("b", restart=Restart.TEMPORARY, fail_starts=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.start_child_soon(good.spec)
        assert events == []  # not started yet: nobody waited
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["start a"]
        assert sup.lookup("a") == "a#1"
        # A start that fails is logged and forgotten, and its id is free again.
        sup.start_child_soon(bad.spec)
        await trio.testing.wait_all_tasks_blocked()
        assert "child 'b' failed to start" in caplog.text
        assert sup.statistics() == DynamicSupervisorStatistics("sessions", 1, 1, 1, 0)
        sup.start_child_soon(bad.spec)
        await trio.testing.wait_all_tasks_blocked()
        assert events[-1] == "start b"
        # Only TEMPORARY children: the others would need a start to restart with.
        with pytest.raises(ValueError, match="TEMPORARY"):
            sup.start_child_soon(fake("c", restart=Restart.PERMANENT).spec)
        good.crash()
        await trio.testing.wait_all_tasks_blocked()
        assert sup.statistics().active == 1  # crashed and forgotten: temporary
        nursery.cancel_scope.cancel()
