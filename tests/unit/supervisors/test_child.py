"""The wrapper's own bookkeeping (`supervisors._child.Run`)."""

from __future__ import annotations

import trio
import trio.testing

from supervisors._child import Run


async def test_wait_done_wakes_a_waiter_and_returns_at_once_afterwards(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = Run()
    woken: list[float] = []

    async def waiter() -> None:
        await run.wait_done()
        woken.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(1)
        assert not woken
        run.set_done()
    assert run.done
    assert woken == [1.0]
    with trio.move_on_after(1) as scope:
        await run.wait_done()
    assert not scope.cancelled_caught
