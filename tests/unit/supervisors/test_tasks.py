"""TaskSupervisor: start order, stop order, lookup, statistics, start failures.

Strategies, restart types and the budget are in test_strategies.py. Every
test runs on Trio's autojump MockClock: no real sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from supervisors import (
    ChildFailedToStart,
    ChildSpec,
    ChildState,
    ChildStatistics,
    Restart,
    Strategy,
    SupervisorStatistics,
    TaskSupervisor,
)

Fake = Callable[..., Any]


async def test_children_start_in_order_and_run_reports_the_supervisor(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    a, b, c = fake("a"), fake("b"), fake("c")
    sup = TaskSupervisor("root", [a.spec, b.spec, c.spec])
    async with trio.open_nursery() as nursery:
        assert await nursery.start(sup.run) is sup
        assert events == ["start a", "start b", "start c"]
        assert [sup.lookup(i) for i in "abc"] == ["a#1", "b#1", "c#1"]
        nursery.cancel_scope.cancel()


async def test_each_child_is_started_only_after_the_previous_one_is_ready(
    autojump_clock: trio.testing.MockClock, events: list[str]
) -> None:
    async def slow(name: str, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(1)
        events.append(f"ready {name} at {trio.current_time():g}")
        task_status.started()
        await trio.sleep_forever()

    specs = [ChildSpec(n, lambda *, task_status, n=n: slow(n, task_status=task_status)) for n in "ab"]
    async with trio.open_nursery() as nursery:
        await nursery.start(TaskSupervisor("root", specs).run)
        assert events == ["ready a at 1", "ready b at 2"]
        nursery.cancel_scope.cancel()


async def test_cancel_stops_children_in_reverse_order_one_at_a_time(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    children = [fake(n, stop_delay=1.0) for n in "abc"]
    sup = TaskSupervisor("root", [ch.spec for ch in children])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        events.clear()
        before = trio.current_time()
        nursery.cancel_scope.cancel()
    # Each child finishes its cleanup before the next one is even cancelled.
    assert events == ["stop c", "stopped c", "stop b", "stopped b", "stop a", "stopped a"]
    assert trio.current_time() - before == 3.0


async def test_shutdown_deadline_stops_waiting_but_never_abandons_the_child(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    times: dict[str, float] = {}

    async def watcher(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            times["a stopped"] = trio.current_time()

    stubborn = fake("b", shutdown=2.0, stop_delay=100.0)
    sup = TaskSupervisor("root", [ChildSpec("a", watcher), stubborn.spec])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        start = trio.current_time()
        nursery.cancel_scope.cancel()
    assert times["a stopped"] - start == 2.0  # moved on after b's shutdown deadline
    assert trio.current_time() - start == 100.0  # but run() still waited for b
    assert events[-1] == "stopped b"
    assert any(r.levelno == logging.WARNING and "'b'" in r.getMessage() for r in caplog.records)


async def test_lookup(autojump_clock: trio.testing.MockClock, fake: Fake) -> None:
    a, t = fake("a"), fake("t", restart=Restart.TEMPORARY)
    sup = TaskSupervisor("root", [a.spec, t.spec])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert sup.lookup("t") == "t#1"
        a.crash()
        t.exit()
        await trio.testing.wait_all_tasks_blocked()
        assert sup.lookup("a") == "a#2"  # the new incarnation's value
        with pytest.raises(KeyError, match="not running"):
            sup.lookup("t")
        with pytest.raises(KeyError, match="no child 'zzz'"):
            sup.lookup("zzz")
        nursery.cancel_scope.cancel()


async def test_statistics(autojump_clock: trio.testing.MockClock, fake: Fake) -> None:
    a, t = fake("a"), fake("t", restart=Restart.TEMPORARY)
    sup = TaskSupervisor("root", [a.spec, t.spec], Strategy.REST_FOR_ONE)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        a.crash()
        await trio.testing.wait_all_tasks_blocked()
        stats = sup.statistics()
        nursery.cancel_scope.cancel()
    assert stats == SupervisorStatistics(
        name="root",
        strategy=Strategy.REST_FOR_ONE,
        children=(
            ChildStatistics("a", Restart.PERMANENT, ChildState.RUNNING, restarts=1),
            # stopped with a, but temporary children are not restarted
            ChildStatistics("t", Restart.TEMPORARY, ChildState.TERMINATED, restarts=0),
        ),
        restarts_total=1,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.restarts_total = 0  # type: ignore[misc]
    assert [c.state for c in sup.statistics().children] == [ChildState.TERMINATED] * 2


async def test_initial_start_failure_raises_and_stops_the_started_children(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str], boom: type[Exception]
) -> None:
    a, b, c = fake("a"), fake("b", fail_starts=1), fake("c")
    sup = TaskSupervisor("root", [a.spec, b.spec, c.spec])
    async with trio.open_nursery() as nursery:
        with pytest.raises(ChildFailedToStart) as info:
            await nursery.start(sup.run)
    assert info.value.child_id == "b"
    assert info.value.__cause__ is b.last_error
    assert isinstance(b.last_error, boom)
    assert events == ["start a", "start-failed b", "stop a"]
    assert c.starts == 0


async def test_child_returning_before_started_is_a_start_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def lazy(*, task_status: trio.TaskStatus[None]) -> None:
        return None

    async with trio.open_nursery() as nursery:
        with pytest.raises(ChildFailedToStart) as info:
            await nursery.start(TaskSupervisor("root", [ChildSpec("lazy", lazy)]).run)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "without calling task_status.started()" in str(info.value.__cause__)


async def test_cancelling_the_starter_aborts_a_child_that_is_still_starting(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    async def hangs(*, task_status: trio.TaskStatus[None]) -> None:
        events.append("starting h")
        await trio.sleep_forever()

    sup = TaskSupervisor("root", [fake("a").spec, ChildSpec("h", hangs)])
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(1):
            await nursery.start(sup.run)
    assert trio.current_time() == 1.0
    assert events == ["start a", "starting h", "stop a"]


async def test_a_base_exception_passes_through_and_still_stops_siblings(
    autojump_clock: trio.testing.MockClock, fake: Fake, events: list[str]
) -> None:
    class Fatal(BaseException):
        pass

    async def fatal(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep(1)
        raise Fatal

    sup = TaskSupervisor("root", [fake("a").spec, ChildSpec("f", fatal), fake("c").spec])
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert info.group_contains(Fatal, depth=None)
    assert events == ["start a", "start c", "stop c", "stop a"]


async def test_run_twice_and_duplicate_ids_are_rejected(
    autojump_clock: trio.testing.MockClock, fake: Fake
) -> None:
    with pytest.raises(ValueError, match=r"duplicate child ids \['a'\]"):
        TaskSupervisor("root", [fake("a").spec, fake("a").spec])
    sup = TaskSupervisor("root", [fake("b").spec])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(RuntimeError, match="already running"):
            await sup.run()
        nursery.cancel_scope.cancel()
    # A stopped supervisor can run again from scratch.
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert sup.lookup("b") == "b#2"
        assert sup.statistics().children[0].restarts == 0
        nursery.cancel_scope.cancel()


async def grumpy(*, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        raise ValueError("cleanup failed")


async def test_an_error_raised_while_stopping_is_logged_not_escalated(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    sup = TaskSupervisor("root", [ChildSpec("grumpy", grumpy)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.cancel_scope.cancel()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "'grumpy' raised while stopping" in record.getMessage()
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "cleanup failed"
