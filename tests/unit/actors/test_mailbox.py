"""Mailbox: the semantics of a one-receiver Trio memory channel, without its per-instance cost."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
import trio.testing

from imactor.actors.mailbox import Mailbox


async def test_fifo_and_statistics() -> None:
    mailbox: Mailbox[int] = Mailbox(3)
    for n in (1, 2, 3):
        mailbox.send_nowait(n)
    with pytest.raises(trio.WouldBlock):
        mailbox.send_nowait(4)
    assert mailbox.statistics().size == 3
    assert [await mailbox.receive(), mailbox.receive_nowait(), await mailbox.receive()] == [1, 2, 3]
    with pytest.raises(trio.WouldBlock):
        mailbox.receive_nowait()
    stats = mailbox.statistics()
    assert (stats.size, stats.capacity, stats.received_total, stats.high_watermark) == (0, 3, 3, 3)


async def test_an_empty_mailbox_holds_no_queue() -> None:
    mailbox: Mailbox[int] = Mailbox(8)
    assert mailbox._queue is None  # white box: the point of the class (memory per idle actor)
    mailbox.send_nowait(1)
    assert mailbox.receive_nowait() == 1
    assert mailbox._queue is None
    assert mailbox._senders is None


async def test_a_waiting_receiver_gets_the_message(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[str] = Mailbox(1)
    got: list[str] = []

    async def receiver() -> None:
        got.append(await mailbox.receive())
        got.append(await mailbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.send_nowait("a")
        mailbox.send_nowait("b")  # the receiver has not run yet: this one is queued
        await trio.sleep(1)
    assert got == ["a", "b"]
    assert mailbox.statistics().received_total == 2


async def test_full_mailbox_makes_senders_wait_in_order(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    mailbox.send_nowait(0)
    sent: list[int] = []

    async def sender(n: int) -> None:
        await mailbox.send(n)
        sent.append(n)

    async with trio.open_nursery() as nursery:
        for n in (1, 2):
            nursery.start_soon(sender, n)
            await trio.testing.wait_all_tasks_blocked()
        assert sent == []
        received = [await mailbox.receive() for _ in range(3)]
    assert received == [0, 1, 2]
    assert sent == [1, 2]


async def test_cancelled_sender_does_not_deliver(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    mailbox.send_nowait(0)
    with trio.move_on_after(1):
        await mailbox.send(1)
    assert mailbox._senders is None  # white box
    assert mailbox.receive_nowait() == 0
    with pytest.raises(trio.WouldBlock):
        mailbox.receive_nowait()


async def test_cancelled_receiver_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    with trio.move_on_after(1):
        await mailbox.receive()
    mailbox.send_nowait(7)  # nobody waits any more: it is queued
    assert await mailbox.receive() == 7


async def test_send_and_receive_are_checkpoints() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await mailbox.send(1)
    assert mailbox.statistics().size == 0
    mailbox.send_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await mailbox.receive()
    assert mailbox.receive_nowait() == 1


async def test_close_fails_waiting_senders_and_receivers(autojump_clock: trio.testing.MockClock) -> None:
    full: Mailbox[int] = Mailbox(1)
    full.send_nowait(0)
    empty: Mailbox[int] = Mailbox(1)
    errors: list[type[BaseException]] = []

    async def expect(error: type[BaseException], waiting: object) -> None:
        with pytest.raises(error):
            await waiting  # type: ignore[misc]
        errors.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(expect, trio.BrokenResourceError, full.send(1))
        nursery.start_soon(expect, trio.ClosedResourceError, empty.receive())
        await trio.testing.wait_all_tasks_blocked()
        full.close()
        empty.close()
    assert sorted(e.__name__ for e in errors) == ["BrokenResourceError", "ClosedResourceError"]
    with pytest.raises(trio.BrokenResourceError):
        full.send_nowait(2)
    with pytest.raises(trio.ClosedResourceError):
        full.receive_nowait()
    full.close()  # idempotent


async def test_one_receiver_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await mailbox.receive()
        mailbox.send_nowait(1)


async def test_send_that_finds_room_does_not_yield() -> None:
    # A message that arrives alone must not cost its sender a scheduler round (the receiver runs
    # at the sender's next wait); a send that waits for room is a schedule point as before.
    mailbox: Mailbox[int] = Mailbox(1)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await mailbox.send(1)
        assert ran == []  # `other` has not run: the send did not yield
        await trio.testing.wait_all_tasks_blocked()
        assert ran == ["other"]
    assert mailbox.receive_nowait() == 1


async def test_a_sealed_mailbox_is_read_to_its_last_message_and_refuses_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`seal` (an actor whose home moved): what was queued and the last message are read; a
    sender waiting for room, and every later sender, learn the actor is gone."""
    mailbox: Mailbox[str] = Mailbox(2)
    mailbox.send_nowait("a")
    mailbox.send_nowait("b")
    refused: list[str] = []

    async def waiting_sender() -> None:
        try:
            await mailbox.send("c")
        except trio.BrokenResourceError:
            refused.append("c")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiting_sender)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.seal("last")  # even into a full mailbox
    assert refused == ["c"]
    with pytest.raises(trio.BrokenResourceError):
        mailbox.send_nowait("d")
    with pytest.raises(trio.BrokenResourceError):
        mailbox.seal("again")
    assert [mailbox.receive_nowait() for _ in range(3)] == ["a", "b", "last"]


async def test_sealing_hands_the_last_message_to_a_waiting_receiver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[str] = Mailbox(2)
    got: list[str] = []

    async def receiver() -> None:
        got.append(await mailbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.seal("last")
    assert got == ["last"]


def test_a_closed_mailbox_lets_its_owner_go_without_the_cyclic_collector() -> None:
    """An actor gives its mailbox a bound method of its own (`on_queued`): a reference cycle. A
    worker runs a full collection rarely (`imactor.worker.process.tune_gc`), so an ended actor
    kept by such a cycle, and all it references, waited for one; closing the mailbox breaks it."""

    class Owner:
        def __init__(self) -> None:
            self.mailbox: Mailbox[int] = Mailbox(4)
            self.mailbox.on_queued = self.wake

        def wake(self) -> None:
            pass

    gc.collect()
    gc.disable()
    try:
        owner = Owner()
        gone = weakref.ref(owner)
        owner.mailbox.close()
        del owner
        assert gone() is None  # freed by reference counting alone
    finally:
        gc.enable()
