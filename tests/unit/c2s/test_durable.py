"""XEP-0198 durable acknowledgement (`imactor.c2s.durable.DurableAcks`): `h` counts a message only
once its recipient's account handled it, never ahead of an earlier one; a lost message is routed
again; an <r/> answered early is followed by an <a/> once the messages before it are handled."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from lxml import etree

from imactor import messages as m
from imactor.actors import ActorAddress
from imactor.c2s.durable import COMPLETION_TIMEOUT, MAX_ROUTE_ATTEMPTS, DurableAcks
from imactor.xmpp import sm
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Stanza

ENABLE = etree.fromstring(f"<enable xmlns='{sm.NS_SM}'/>")


class RecordingRouter:
    """Stands in for the router: keeps what was routed and its completion."""

    def __init__(self) -> None:
        self.routed: list[tuple[Stanza, m.Completion | None]] = []

    async def route(self, stanza: Stanza, *, wait: bool, completion: m.Completion | None = None) -> None:
        self.routed.append((stanza, completion))


def managed() -> sm.StreamManagement:
    state = sm.StreamManagement(ack_every=5)
    state.handle(ENABLE, bound=True, new_id=lambda: "id", max_resume=0)
    return state


def message(n: int) -> Stanza:
    alice, bob = JID.parse("alice@localhost/a"), JID.parse("bob@localhost")
    data = f"<message from='{alice}' to='{bob}' id='m{n}'><body>{n}</body></message>".encode()
    return Stanza("message", "", alice, bob, f"m{n}", data)


def acks_for(state: sm.StreamManagement, router: Any) -> DurableAcks:
    return DurableAcks(ActorAddress("session", "s1", 0), state, router)


async def test_a_pending_message_holds_back_the_stanzas_after_it() -> None:
    state = managed()
    acks = acks_for(state, RecordingRouter())
    first = acks.received()
    completion = acks.routed(message(1))
    acks.processed(first)
    second = acks.received()
    acks.processed(second)  # an IQ, say: handled at once, but after a pending message
    assert completion is not None
    assert state.h_in == 0
    completion.done()
    acks.collect()
    assert state.h_in == 2
    assert not acks.pending


async def test_unmanaged_streams_route_without_a_completion() -> None:
    state = sm.StreamManagement(ack_every=5)
    acks = acks_for(state, RecordingRouter())
    seq = acks.received()
    assert acks.routed(message(1)) is None
    acks.processed(seq)
    assert seq == sm.NOT_COUNTED
    assert not acks.pending


async def test_a_lost_message_is_routed_again_then_counted() -> None:
    state, router = managed(), RecordingRouter()
    acks = acks_for(state, router)
    async with trio.open_nursery() as nursery:
        acks.start(nursery.start_soon)
        seq = acks.received()
        completion = acks.routed(message(1))
        acks.processed(seq)
        assert completion is not None
        completion.lost()  # its recipient's worker died
        acks.collect()
        await trio.testing.wait_all_tasks_blocked()
        ((stanza, again),) = router.routed
        assert stanza.id == "m1"
        assert again is not None
        assert again.attempt == 2
        assert state.h_in == 0  # not counted while the second route is pending
        again.done()
        acks.collect()
        assert state.h_in == 1


async def test_a_message_never_confirmed_is_counted_after_its_last_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, router = managed(), RecordingRouter()
    acks = acks_for(state, router)
    async with trio.open_nursery() as nursery:
        acks.start(nursery.start_soon)
        seq = acks.received()
        acks.routed(message(1))
        acks.processed(seq)
        for _ in range(MAX_ROUTE_ATTEMPTS):
            await trio.sleep(COMPLETION_TIMEOUT + 1)
            acks.collect()
            await trio.testing.wait_all_tasks_blocked()
        assert len(router.routed) == MAX_ROUTE_ATTEMPTS - 1
        assert state.h_in == 1


async def test_an_early_answer_to_r_is_followed_by_an_a_once_handled() -> None:
    state = managed()
    acks = acks_for(state, RecordingRouter())
    sent: list[int] = []

    async def send_ack() -> None:
        sent.append(state.h_in)

    async with trio.open_nursery() as nursery:
        acks.start(nursery.start_soon)
        seq = acks.received()
        completion = acks.routed(message(1))
        acks.processed(seq)
        acks.ack_later(send_ack)  # <r/> answered with h=0
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []
        assert completion is not None
        completion.done()
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [1]


def test_nothing_pending_means_no_unasked_ack() -> None:
    acks = acks_for(managed(), RecordingRouter())

    async def send_ack() -> None:
        raise AssertionError("no <a/> is due")

    acks.ack_later(send_ack)  # not started and nothing pending: nothing to do
    assert not acks.pending
