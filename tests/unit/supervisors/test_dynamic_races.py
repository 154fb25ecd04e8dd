"""DynamicSupervisor edge cases: cancellation and termination races."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from supervisors import ChildSpec, DynamicSupervisor, DynamicSupervisorStatistics, Restart


async def test_an_error_raised_while_terminating_is_logged_not_counted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def grumpy(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("cleanup failed")

    sup = DynamicSupervisor("users")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(ChildSpec("g", grumpy))  # PERMANENT, yet not restarted
        assert await sup.terminate_child("g") is True
        await trio.testing.wait_all_tasks_blocked()
        assert sup.statistics() == DynamicSupervisorStatistics("users", 0, 1, 0, 0)
        nursery.cancel_scope.cancel()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "supervisor users: child 'g' raised while stopping")
    ]


async def test_cancelling_the_caller_aborts_a_starting_child(
    autojump_clock: trio.testing.MockClock, events: list[str]
) -> None:
    async def hangs(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await trio.sleep_forever()
        finally:
            events.append("aborted")

    sup = DynamicSupervisor("sessions")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.move_on_after(1):
            await sup.start_child(ChildSpec("h", hangs, Restart.TEMPORARY))
        assert events == ["aborted"]
        assert sup.statistics().active == 0
        nursery.cancel_scope.cancel()


async def test_terminate_a_child_while_it_is_being_restarted(
    autojump_clock: trio.testing.MockClock, events: list[str]
) -> None:
    incarnations = 0

    async def flaky(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal incarnations
        incarnations += 1
        if incarnations == 1:
            task_status.started()
            raise ValueError("crash right away")
        events.append("restart blocked")
        await trio.sleep_forever()  # the restart never becomes ready

    sup = DynamicSupervisor("users")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(ChildSpec("f", flaky))
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["restart blocked"]
        assert await sup.terminate_child("f") is True
        await trio.testing.wait_all_tasks_blocked()
        assert sup.statistics().active == 0
        assert incarnations == 2  # not retried after the termination
        nursery.cancel_scope.cancel()


async def test_child_ready_only_after_its_caller_gave_up_is_not_kept(
    autojump_clock: trio.testing.MockClock, events: list[str]
) -> None:
    async def slow(*, task_status: trio.TaskStatus[str]) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(2)  # ignores the caller's cancellation at t=1
        task_status.started("late")
        try:
            await trio.sleep_forever()
        finally:
            events.append("cancelled after started")

    sup = DynamicSupervisor("sessions")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.move_on_after(1):
            await sup.start_child(ChildSpec("s", slow, Restart.TEMPORARY))
        # Trio did not move the child into the supervisor's nursery (its starter
        # was cancelled), so it must not shield itself: it ends with its caller.
        assert trio.current_time() == 2.0
        assert events == ["cancelled after started"]
        assert sup.statistics().active == 0
        nursery.cancel_scope.cancel()
