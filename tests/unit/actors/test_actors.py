"""The actor runtime: mailboxes, refs, ask, idle stop, registry activation. Deterministic (autojump)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
import trio.testing

from imactor.actors import Actor, ActorAddress, ActorGone, AskTimeout, LocalRef, Registry, Reply, ask
from imactor.actors.registry import Retiring


@dataclass(frozen=True)
class Add:
    n: int


@dataclass(frozen=True)
class Get:
    reply: Reply[int]


@dataclass(frozen=True)
class Boom:
    reply: Reply[int]


Msg = Add | Get | Boom


class Counter(Actor[Msg]):
    def __init__(self, capacity: int = 4, idle: float = float("inf")) -> None:
        super().__init__(ActorAddress("counter", "c1"), capacity)
        self.total = 0
        self.idle_timeout = idle
        self.stopped = False

    async def handle(self, message: Msg) -> None:
        match message:
            case Add(n=n):
                self.total += n
            case Get(reply=reply):
                reply.send(self.total)
            case Boom(reply=reply):
                reply.fail(ValueError("no"))

    async def on_stop(self) -> None:
        self.stopped = True


async def test_send_and_ask(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        actor = Counter()
        ref: LocalRef[Msg] = await nursery.start(actor.run)
        await ref.send(Add(2))
        ref.send_nowait(Add(3))
        assert await ask(ref, Get) == 5
        with pytest.raises(ValueError, match="no"):
            await ask(ref, Boom)
        assert actor.statistics().handled_total == 4
        nursery.cancel_scope.cancel()


async def test_send_nowait_full_mailbox_raises_wouldblock() -> None:
    actor = Counter(capacity=2)
    # Not started: nothing drains the mailbox.
    actor.ref.send_nowait(Add(1))
    actor.ref.send_nowait(Add(1))
    with pytest.raises(trio.WouldBlock):
        actor.ref.send_nowait(Add(1))
    assert actor.statistics().mailbox.size == 2


async def test_ask_times_out(autojump_clock: trio.testing.MockClock) -> None:
    actor = Counter(capacity=2)  # never started: the ask cannot be answered
    with pytest.raises(AskTimeout):
        await ask(actor.ref, Get, timeout=5)


async def test_idle_actor_stops_and_refs_report_gone(autojump_clock: trio.testing.MockClock) -> None:
    actor = Counter(idle=10)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await ref.send(Add(1))
    # The nursery exits only because the actor stopped by itself once idle.
    assert actor.stopped
    with pytest.raises(ActorGone):
        await ref.send(Add(1))
    assert trio.current_time() >= 10


class Busy(Counter):
    """Idle only once its total reaches 3 (as an account is once its last session went)."""

    def is_idle(self) -> bool:
        return self.total >= 3


async def test_busy_actor_waits_without_timer_then_stops_once_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Busy(idle=10)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await ref.send(Add(1))
        await trio.sleep(100)
        assert not actor.stopped  # not idle: no timer stops it, however long it waits
        await ref.send(Add(2))  # idle from now on: it stops after idle_timeout
        sent_at = trio.current_time()
    assert actor.stopped
    assert trio.current_time() - sent_at >= 10


class Slow(Counter):
    async def handle(self, message: Msg) -> None:
        await trio.sleep(30)
        await super().handle(message)


async def test_idle_timer_never_cuts_a_handler_short(autojump_clock: trio.testing.MockClock) -> None:
    actor = Slow(idle=10)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await ref.send(Add(4))
    assert actor.total == 4  # the 30 s handler ran to the end, though idle_timeout is 10 s


async def test_queued_messages_are_handled_before_stop(autojump_clock: trio.testing.MockClock) -> None:
    actor = Counter(capacity=8)
    for _ in range(5):
        actor.ref.send_nowait(Add(1))
    actor.stop()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
    assert actor.total == 5


async def test_registry_starts_once_for_concurrent_callers(autojump_clock: trio.testing.MockClock) -> None:
    registry = Registry()
    starts = 0
    async with trio.open_nursery() as nursery:

        async def start() -> LocalRef[Msg]:
            nonlocal starts
            starts += 1
            await trio.sleep(1)  # loading from storage takes a while
            return await nursery.start(Counter().run)

        refs: list[object] = []

        async def caller() -> None:
            refs.append(await registry.get_or_start("counter", "c1", start))

        async with trio.open_nursery() as callers:
            for _ in range(10):
                callers.start_soon(caller)
        assert starts == 1
        assert len({id(r) for r in refs}) == 1
        assert registry.statistics().actors_by_kind == {"counter": 1}
        nursery.cancel_scope.cancel()


async def test_registry_failed_start_releases_waiters(autojump_clock: trio.testing.MockClock) -> None:
    registry = Registry()

    async def failing() -> LocalRef[Msg]:
        await trio.sleep(1)
        raise RuntimeError("storage down")

    with pytest.raises(RuntimeError):
        await registry.get_or_start("counter", "x", failing)
    assert registry.lookup("counter", "x") is None
    assert str(ActorAddress("user", "a@b", 2)) == "user:a@b@w2"


class LateArrival(Counter):
    """A message lands in the mailbox just as the idle timer fires (before the idle check)."""

    def __init__(self) -> None:
        super().__init__(idle=10)
        self.arrived = False

    def is_idle(self) -> bool:
        if not self.arrived and trio.current_time() >= 10:
            self.arrived = True
            self.ref.send_nowait(Add(1))
        return True


async def test_a_message_queued_as_the_idle_timer_fires_keeps_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A stopping actor has unregistered: a message it handles then may have side effects nobody
    # sees again (a room created in an actor that is going away). It must go on instead.
    async with trio.open_nursery() as nursery:
        actor = LateArrival()
        ref: LocalRef[Msg] = await nursery.start(actor.run)
        await trio.sleep(15)
        assert actor.arrived
        assert not actor.stopped  # the late message was handled by a live actor
        assert await ask(ref, Get) == 1
        nursery.cancel_scope.cancel()


class Saver(Counter):
    """Retires its key when it stops and stores its total in `stored` (slowly) on the way out,
    as a room does; a successor loads `stored` when it starts. With `forward`, the messages
    queued when it decided to stop go to its successor, as an account that handed off does."""

    def __init__(self, registry: Registry, stored: dict[str, int], starter: object, *, forward: bool) -> None:
        super().__init__(capacity=8)
        self.registry, self.stored, self.starter, self.forward = registry, stored, starter, forward
        self.retiring: Retiring | None = None

    async def on_start(self) -> None:
        self.total = self.stored.get("total", 0)

    async def handle(self, message: Msg) -> None:
        if self.retiring is not None and self.forward:
            successor = await self.registry.get_or_start("counter", "c1", self.starter)  # type: ignore[arg-type]
            await successor.send(message)
            return
        await super().handle(message)

    def before_stop(self) -> None:
        self.retiring = self.registry.retire("counter", "c1", self.ref)

    async def on_stop(self) -> None:
        if not self.forward:
            await trio.sleep(1)  # the write takes a while
            self.stored["total"] = self.total

    def after_stop(self) -> None:
        if self.retiring is not None:  # None: cancelled at the test's end
            self.registry.ended("counter", "c1", self.retiring)


async def test_a_successor_starts_after_its_retiring_predecessor_stored_its_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry, stored, savers = Registry(), dict[str, int](), list[Saver]()
    async with trio.open_nursery() as nursery:

        async def start() -> LocalRef[Msg]:
            savers.append(Saver(registry, stored, start, forward=False))
            return await nursery.start(savers[-1].run)

        first = await registry.get_or_start("counter", "c1", start)
        await first.send(Add(5))
        # Stop it (as an idle timer would), then ask for the key at once: the successor must
        # load what the predecessor stores in its on_stop, a second later.
        savers[0].stop()
        await first.send(Add(0))  # wakes its loop, which then sees the stop
        await trio.testing.wait_all_tasks_blocked()
        assert registry.lookup("counter", "c1") is None
        second = await registry.get_or_start("counter", "c1", start)
        assert second is not first
        assert await ask(second, Get) == 5
        nursery.cancel_scope.cancel()


async def test_a_retiring_actor_forwarding_to_its_own_key_starts_the_successor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry, stored, savers = Registry(), dict[str, int](), list[Saver]()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def start() -> LocalRef[Msg]:
                savers.append(Saver(registry, stored, start, forward=True))
                return await nursery.start(savers[-1].run)

            first = await registry.get_or_start("counter", "c1", start)
            savers[0].stop()
            # Add(0) wakes it and is its last message; the two queued behind it are forwarded
            # from its drain to a successor it starts itself (waiting for its own end there
            # would never end).
            first.send_nowait(Add(0))
            first.send_nowait(Add(2))
            first.send_nowait(Add(3))
            await trio.testing.wait_all_tasks_blocked()
            second = registry.lookup("counter", "c1")
            assert second is not None
            assert second is not first
            assert await ask(second, Get) == 5
            nursery.cancel_scope.cancel()
