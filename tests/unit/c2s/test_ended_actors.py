"""Ended sessions, accounts and rooms are freed by reference counting, not left in reference
cycles for the cyclic collector, which a worker runs rarely (`imactor.worker.process.tune_gc`):
in the hour-long soak, the memory such cycles held grew by about 0.35 MB a minute per worker
(docs/hardening.md, "Reference cycles")."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import trio

from imactor.c2s.writer import ClientWriter
from imactor.rooms.actor import RoomActor, _RoomApi
from imactor.server.modules import AccountApi
from imactor.user.account import Account
from imactor.xmpp import sm
from imactor.xmpp.jid import JID
from imactor.xmpp.stream import ServerStream, StreamConfig


@pytest.fixture
def no_cyclic_collector() -> Iterator[None]:
    """What is not freed by reference counting stays alive while the test looks."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def freed(make: Callable[[], Any], end: Callable[[Any], None] = lambda _owner: None) -> bool:
    owner = make()
    gone = weakref.ref(owner)
    end(owner)
    del owner
    return gone() is None


class _Session:
    """What a session holds of its writer: the writer calls back its bound method."""

    def __init__(self) -> None:
        stream = ServerStream(StreamConfig(domain="example.com"), stream_id_factory=lambda: "s1")
        self.writer = ClientWriter(
            cast(trio.abc.Stream, object()), stream, sm.StreamManagement(ack_every=5),
            unacked_limit=10, on_lost=self.lost,
        )  # fmt: skip

    def lost(self, exc: BaseException) -> None:
        pass


@pytest.mark.usefixtures("no_cyclic_collector")
def test_a_detached_writer_lets_its_session_go() -> None:
    assert not freed(_Session)  # the cycle this guards against is real...
    gc.collect()
    assert freed(_Session, lambda session: session.writer.detach())  # ...and detach breaks it


class _Actor:
    def __init__(self) -> None:
        self.username = "alice"
        self.name = "room"
        self.jid = JID.parse("alice@example.com")
        self.account = Account(cast(AccountApi, self))
        self.api = _RoomApi(cast(RoomActor, self))


@pytest.mark.usefixtures("no_cyclic_collector")
def test_the_views_modules_get_do_not_keep_their_actor() -> None:
    assert freed(_Actor)


def test_a_view_of_an_ended_actor_says_so() -> None:
    actor = _Actor()
    account = actor.account
    assert account.username == "alice"
    del actor
    gc.collect()
    with pytest.raises(ReferenceError):
        account.username  # noqa: B018 - the read is the test
