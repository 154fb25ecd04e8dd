"""RFC 6121 §8.5 delivery rules, offline storage (XEP-0160/0203) and IQ routing, end to end."""

from __future__ import annotations

import asyncio
import calendar
import time

import aioxmpp
import aioxmpp.dispatcher
import aioxmpp.misc  # (registers Message.xep0203_delay)
import pytest
import trio

from tests.integration.conftest import Accounts, server_log
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import (
    C,
    Element,
    Peer,
    Peers,
    any_message,
    bare,
    error_condition,
    kind,
    marker,
    message,
    new_id,
    nothing_before_marker,
    show,
    stanza_error,
)
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT

NS_DELAY = "urn:xmpp:delay"
NOT_FOUND = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"


@pytest.fixture(scope="module")
def server(server_on_each_backend: ServerProcess) -> ServerProcess:
    """Offline storage and the account reads of every login: on SQLite and on PostgreSQL."""
    return server_on_each_backend


def messages(elements: list[Element]) -> list[str]:
    return [show(e) for e in elements if kind(e) == "message"]


async def send_message(sender: Peer, to: str, type_: str | None = "chat", body: str = "hello") -> str:
    message_id = new_id("m")
    type_attr = "" if type_ is None else f" type='{type_}'"
    await sender.send(f"<message to='{to}' id='{message_id}'{type_attr}><body>{body}</body></message>")
    return message_id


async def with_priority(peers: Peers, username: str, resource: str, priority: int) -> Peer:
    peer = await peers.login(username, resource)
    await peer.available(f"<priority>{priority}</priority>")
    return peer


async def test_bare_jid_goes_to_the_highest_priority(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        high = await with_priority(peers, bob, "high", 5)
        low = await with_priority(peers, bob, "low", 1)
        for type_ in ("chat", None):  # chat and normal (§8.5.2.1.1)
            message_id = await send_message(a, bare(bob), type_)
            got = await high.expect(message(id_=message_id))
            assert got.get("from") == a.jid, show(got)
            assert got.get("to") == bare(bob), show(got)
            await nothing_before_marker(a, low, any_message)

        # The priorities change: so does the target.
        await low.send("<presence><priority>10</priority></presence>")
        await low.expect(lambda e: kind(e) == "presence" and e.get("from") == low.jid)  # processed
        message_id = await send_message(a, bare(bob))
        await low.expect(message(id_=message_id))
        await nothing_before_marker(a, high, any_message)


async def test_equal_priorities_all_get_it(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        one = await with_priority(peers, bob, "one", 3)
        two = await with_priority(peers, bob, "two", 3)
        message_id = await send_message(a, bare(bob))
        await one.expect(message(id_=message_id))
        await two.expect(message(id_=message_id))


async def test_negative_priority_gets_no_bare_jid_messages(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        shy = await with_priority(peers, bob, "shy", -1)
        normal = await with_priority(peers, bob, "normal", 0)
        for type_ in ("chat", None, "headline"):
            message_id = await send_message(a, bare(bob), type_)
            await normal.expect(message(id_=message_id))
        await nothing_before_marker(a, shy, any_message)
        # Addressed to its full JID, it gets the message.
        message_id = await send_message(a, shy.jid)
        await shy.expect(message(id_=message_id))

        # With only the negative resource online, a chat message is stored, not given to it.
        await normal.aclose()
        await shy.expect(lambda e: kind(e) == "presence" and e.get("type") == "unavailable")
        stored_id = await send_message(a, bare(bob), body="for later")
        await nothing_before_marker(a, shy, any_message)
        later = await peers.login(bob, "later")
        await later.available()
        got = await later.expect(message(id_=stored_id))
        assert got.find(f"{{{NS_DELAY}}}delay") is not None, show(got)


async def test_full_jid(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        high = await with_priority(peers, bob, "high", 5)
        low = await with_priority(peers, bob, "low", 1)
        # §8.5.3.1: a full JID goes to that resource, whatever its priority.
        message_id = await send_message(a, low.jid)
        got = await low.expect(message(id_=message_id))
        assert got.get("to") == low.jid, show(got)
        await nothing_before_marker(a, high, any_message)

        # §8.5.3.2.1: a full JID with no such resource. A chat message is handled as if sent to
        # the bare JID...
        message_id = await send_message(a, f"{bare(bob)}/gone", "chat")
        got = await high.expect(message(id_=message_id))
        assert got.get("to") == f"{bare(bob)}/gone", show(got)
        await nothing_before_marker(a, low, any_message)
        # ...normal and groupchat messages are refused...
        for type_ in (None, "groupchat"):
            message_id = await send_message(a, f"{bare(bob)}/gone", type_)
            error = await a.expect(message(id_=message_id))
            assert error_condition(error) == "service-unavailable", show(error)
            assert error.get("from") == f"{bare(bob)}/gone"
        # ...and headline and error messages are dropped.
        await send_message(a, f"{bare(bob)}/gone", "headline")
        await a.send(f"<message to='{bare(bob)}/gone' type='error' id='e1'>{NOT_FOUND}</message>")
        await nothing_before_marker(a, high, any_message)
        await nothing_before_marker(a, low, any_message)
        # An error message is not routed by priority either (§8.5.2.1.1): only a full JID gets it.
        await a.send(f"<message to='{bare(bob)}' type='error' id='e2'>{NOT_FOUND}</message>")
        await nothing_before_marker(a, high, any_message)
        await nothing_before_marker(a, low, any_message)
        await a.send(f"<message to='{low.jid}' type='error' id='e3'>{NOT_FOUND}</message>")
        await low.expect(message(id_="e3"))
        # Nobody sent an error back for the dropped ones: an IQ answered by Bob's user actor
        # (which would have sent them first) comes back with nothing before it.
        reply = await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))
        assert reply.get("type") == "result"
        assert messages(a.inbox) == [], a.inbox


async def test_headline_goes_to_all_non_negative(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        high = await with_priority(peers, bob, "high", 5)
        low = await with_priority(peers, bob, "low", 0)
        negative = await with_priority(peers, bob, "negative", -5)
        message_id = await send_message(a, bare(bob), "headline")
        await high.expect(message(id_=message_id))
        await low.expect(message(id_=message_id))
        await nothing_before_marker(a, negative, any_message)
        # Nobody available: a headline is not stored.
        for peer in (high, low, negative):
            await peer.aclose()
        await send_message(a, bare(bob), "headline", body="news")
        later = await peers.login(bob, "later")
        await later.available()
        await nothing_before_marker(a, later, any_message)


async def test_groupchat_to_a_user_is_refused(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        b = await with_priority(peers, bob, "r", 1)
        message_id = await send_message(a, bare(bob), "groupchat")
        error = await a.expect(message(id_=message_id))
        assert error_condition(error) == "service-unavailable", show(error)
        assert error.get("from") == bare(bob)
        assert error.get("to") == a.jid
        await nothing_before_marker(a, b, any_message)


async def test_offline_storage(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        sent = []
        before = time.time()
        for index, type_ in enumerate(("chat", None, "chat")):
            sent.append(await send_message(a, bare(bob), type_, body=f"number {index}"))
        await send_message(a, bare(bob), "headline", body="not stored")
        # The messages are stored by Bob's user actor as it gets them; a round trip through it
        # (a vCard get it answers) makes sure they all are before he logs in.
        reply = await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))
        assert reply.get("type") == "result", show(reply)

        b = await peers.login(bob, "first")
        # Not before initial presence (XEP-0160 §2).
        await b.sync()
        assert messages(b.inbox) == [], b.inbox
        await b.send("<presence/>")
        got = [await b.expect(lambda e: kind(e) == "message") for _ in sent]
        assert [m.get("id") for m in got] == sent, "in the order they were sent"
        assert [m.findtext(f"{C}body") for m in got] == ["number 0", "number 1", "number 2"]
        for stored in got:
            assert stored.get("from") == a.jid, show(stored)
            assert stored.get("to") == bare(bob), show(stored)
            delay = stored.find(f"{{{NS_DELAY}}}delay")
            assert delay is not None, show(stored)
            assert delay.get("from") == "localhost"
            stamp = calendar.timegm(time.strptime(delay.get("stamp", ""), "%Y-%m-%dT%H:%M:%SZ"))
            assert before - 2 <= stamp <= time.time() + 2, delay.get("stamp")
        await nothing_before_marker(a, b, any_message)  # and the headline was not stored
        await b.aclose()

        # Delivered means gone from storage: the next login gets nothing.
        again = await peers.login(bob, "second")
        await again.available()
        await nothing_before_marker(a, again, any_message)


async def test_offline_messages_wait_for_a_non_negative_priority(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        stored_id = await send_message(a, bare(bob), body="stored")
        await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))  # (stored by now)
        b = await with_priority(peers, bob, "r", -1)
        await nothing_before_marker(a, b, any_message)
        # XEP-0160 §2: delivered once the resource has a non-negative priority.
        await b.send("<presence><priority>1</priority></presence>")
        got = await b.expect(message(id_=stored_id))
        assert got.find(f"{{{NS_DELAY}}}delay") is not None, show(got)


@pytest.mark.parametrize(
    "server_on_each_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_database_restart_bounces_what_was_not_stored_and_the_server_stores_again(
    server: ServerProcess, postgres: PostgresServer, peers: Peers, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))  # Bob's user actor is up
        log_before = len(server_log(server))
        await trio.to_thread.run_sync(postgres.halt)
        try:
            # Down: the message to offline Bob cannot be stored, and Alice is told so
            # (RFC 6120 §8.3.3.6): never acknowledged as if it were kept.
            lost = await send_message(a, bare(bob), body="lost")
            error = await a.expect(message(id_=lost, type_="error"))
            assert stanza_error(error)[1] == "internal-server-error", show(error)
        finally:
            await trio.to_thread.run_sync(postgres.resume)
        # Back: the same server, with no restart of its own, stores again.
        kept = await send_message(a, bare(bob), body="kept")
        reply = await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))  # (stored by now)
        assert reply.get("type") == "result", show(reply)
        b = await peers.login(bob)
        await b.send("<presence/>")
        got = await b.expect(lambda e: kind(e) == "message")
        assert (got.get("id"), got.findtext(f"{C}body")) == (kept, "kept")
        await nothing_before_marker(a, b, any_message)  # and "lost" was not stored after all
    log = server_log(server)[log_before:]
    assert "PostgreSQL server is unreachable or restarting" in log, log
    assert "writes succeed again" in log, log


async def test_errors_for_unknown_and_remote_addressees(peers: Peers, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    ghost = bare("nobody-" + new_id())
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        for to in (ghost, f"{ghost}/res"):
            message_id = await send_message(a, to)
            error = await a.expect(message(id_=message_id))
            assert error_condition(error) == "service-unavailable", show(error)  # §8.5.1
            assert error.get("from") == to
        # A headline to nobody is dropped silently: the error for the IQ sent after it (which
        # the same user actor answers) is the first thing that comes back.
        await send_message(a, ghost, "headline")
        reply = await a.iq("<query xmlns='jabber:iq:version'/>", to=ghost)
        assert error_condition(reply) == "service-unavailable", show(reply)
        assert messages(a.inbox) == [], a.inbox

        for to in ("bob@elsewhere.example", "elsewhere.example"):
            message_id = await send_message(a, to)
            error = await a.expect(message(id_=message_id))
            assert error_condition(error) == "remote-server-not-found", show(error)
            assert error.get("from") == to
        reply = await a.iq("<ping xmlns='urn:xmpp:ping'/>", to="bob@elsewhere.example/x")
        assert error_condition(reply) == "remote-server-not-found", show(reply)


async def test_iq_routing(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        b = await with_priority(peers, bob, "desk", 1)
        # Bob has a vCard.
        reply = await b.iq("<vCard xmlns='vcard-temp'><FN>Bob Builder</FN></vCard>", type_="set")
        assert reply.get("type") == "result", show(reply)

        # §8.5.3.1: an IQ to a full JID goes to that resource, which answers it.
        iq_id = new_id("iq")
        await a.send(f"<iq type='get' id='{iq_id}' to='{b.jid}'><query xmlns='jabber:iq:version'/></iq>")
        request = await b.expect(lambda e: kind(e) == "iq" and e.get("id") == iq_id)
        assert request.get("from") == a.jid
        await b.send(
            f"<iq type='result' id='{iq_id}' to='{a.jid}'><query xmlns='jabber:iq:version'>"
            "<name>raw</name><version>1</version></query></iq>"
        )
        answer = await a.expect(lambda e: kind(e) == "iq" and e.get("id") == iq_id)
        assert answer.get("type") == "result"
        assert answer.get("from") == b.jid
        assert answer.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == "raw"

        # §8.5.3.2.1: an IQ to an unavailable full JID is answered with service-unavailable.
        reply = await a.iq("<query xmlns='jabber:iq:version'/>", to=f"{bare(bob)}/gone")
        assert error_condition(reply) == "service-unavailable", show(reply)
        assert reply.get("from") == f"{bare(bob)}/gone"

        # §8.5.2.1.3: an IQ to the bare JID is answered by the server for the account...
        reply = await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))
        assert reply.get("type") == "result", show(reply)
        assert reply.get("from") == bare(bob)
        assert reply.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Bob Builder"
        # ...and an unknown namespace gets service-unavailable.
        reply = await a.iq("<query xmlns='urn:example:unknown'/>", to=bare(bob))
        assert error_condition(reply) == "service-unavailable", show(reply)
        # Bob's client saw none of the IQs to his bare JID.
        earlier = await marker(a, b)
        assert [show(e) for e in earlier if kind(e) == "iq"] == [], earlier

        # The account answers even when nobody is online.
        await b.aclose()
        reply = await a.iq("<vCard xmlns='vcard-temp'/>", to=bare(bob))
        assert reply.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Bob Builder", show(reply)


async def test_message_without_to_goes_to_own_bare_jid(peers: Peers, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        pc = await with_priority(peers, alice, "pc", 5)
        phone = await with_priority(peers, alice, "phone", 1)
        await phone.send("<message id='note1' type='chat'><body>remember the milk</body></message>")
        got = await pc.expect(message(id_="note1"))
        assert got.get("from") == phone.jid, show(got)
        assert got.get("to") == pc.bare, show(got)
        assert got.findtext(f"{C}body") == "remember the milk"
        await nothing_before_marker(pc, phone, any_message)


# ---- real client libraries ----------------------------------------------------------------------


def test_slixmpp_chat_follows_priority(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice) as a,
            clients.slixmpp(bob, "high") as high,
            clients.slixmpp(bob, "low") as low,
        ):
            high_messages = event_queue(high, "message")
            low_messages = event_queue(low, "message")
            own = event_queue(high, "presence_available")
            high.send_presence(ppriority=5)
            low.send_presence(ppriority=1)
            while True:  # both of Bob's resources are available (high sees low's presence)
                got = await asyncio.wait_for(own.get(), TIMEOUT)
                if str(got["from"]) == f"{bob}@localhost/low":
                    break
            a.send_message(mto=f"{bob}@localhost", mbody="to the bare JID", mtype="chat")
            a.send_message(mto=f"{bob}@localhost/low", mbody="to low", mtype="chat")
            first = await asyncio.wait_for(high_messages.get(), TIMEOUT)
            assert first["body"] == "to the bare JID"
            assert str(first["from"]) == f"{alice}@localhost/sx"
            # Low gets only the message addressed to it (it was sent second).
            second = await asyncio.wait_for(low_messages.get(), TIMEOUT)
            assert second["body"] == "to low"

    run(scenario())


def test_slixmpp_offline_message_has_delay(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=("xep_0054",)) as a:
            a.send_message(mto=f"{bob}@localhost", mbody="while you were out", mtype="chat")
            await a.plugin["xep_0054"].get_vcard(f"{bob}@localhost")  # a round trip through Bob's actor
        async with clients.slixmpp(bob, plugins=("xep_0203",)) as b:
            received = event_queue(b, "message")
            b.send_presence()
            got = await asyncio.wait_for(received.get(), TIMEOUT)
            assert got["body"] == "while you were out"
            assert str(got["from"]) == f"{alice}@localhost/sx"
            stamp = got["delay"]["stamp"]
            assert stamp is not None
            assert abs(stamp.timestamp() - time.time()) < 60

    run(scenario())


def test_aioxmpp_offline_message_and_full_jid(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with clients.aioxmpp(alice) as a:
            note = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr(f"{bob}@localhost"))
            note.body[None] = "stored for you"
            await a.send(note)
            async with clients.aioxmpp(bob) as b:
                inbox: asyncio.Queue[aioxmpp.Message] = asyncio.Queue()
                b.summon(aioxmpp.dispatcher.SimpleMessageDispatcher).register_callback(
                    aioxmpp.MessageType.CHAT, None, inbox.put_nowait
                )
                b.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
                stored = await asyncio.wait_for(inbox.get(), TIMEOUT)
                assert stored.body.any() == "stored for you"
                assert stored.xep0203_delay, "offline messages carry a delay stamp"
                # A live message to his full JID has none.
                live = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=b.local_jid)
                live.body[None] = "now"
                await a.send(live)
                got = await asyncio.wait_for(inbox.get(), TIMEOUT)
                assert got.body.any() == "now"
                assert got.from_ == a.local_jid
                assert not got.xep0203_delay

    run(scenario())
