"""XEP-0198 Stream Management against the real server: acks, then resumption, raw and with libraries.

The module runs its own server with a short `[limits] resume_timeout`, so that a detached session
expires within a test. A broken connection is made by closing the client's TCP socket under TLS
(no </stream:stream>, no close_notify), which is what a phone losing its network looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aioxmpp
import aioxmpp.dispatcher
import pytest
import slixmpp
import trio
from lxml import etree

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import HOST, Clients, event_queue, raw_authenticated, run
from tests.support.raw import STREAM_NS, RawClient
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

SM = "urn:xmpp:sm:3"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
C = "{jabber:client}"
RESUME_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("sm-server")
    with running_server(directory, extra=f"[limits]\nresume_timeout = {RESUME_TIMEOUT}\n") as process:
        yield process


# ---- helpers -------------------------------------------------------------------------------------


def tag(name: str) -> str:
    return f"{{{SM}}}{name}"


def is_message(element: etree._Element) -> bool:
    return element.tag == f"{C}message"


def body(element: etree._Element) -> str | None:
    return element.findtext(f"{C}body")


def failed_condition(element: etree._Element) -> str:
    assert element.tag == tag("failed"), etree.tostring(element)
    return next(etree.QName(child).localname for child in element if etree.QName(child).namespace == STANZAS)


async def login(server: ServerProcess, username: str, resource: str) -> RawClient:
    client = await RawClient.connect(server.c2s_port)
    await client.login(username, PASSWORD, resource)
    return client


async def enable(client: RawClient, resume: bool = True) -> etree._Element:
    extra = " resume='true'" if resume else ""
    await client.send(f"<enable xmlns='{SM}'{extra}/>")
    return await client.next_element(lambda e: e.tag in (tag("enabled"), tag("failed")))


async def ack(client: RawClient, until: int | None = None) -> int:
    """Ask the server for its count of our stanzas.

    The answer comes at once and counts a message only once it is stored; when messages were
    pending the server sends another <a/> when they are: `until` waits for a count that high.
    """
    await client.send(f"<r xmlns='{SM}'/>")
    while True:
        answer = await client.expect(tag("a"))
        h = int(answer.get("h", "-1"))
        if until is None or h >= until:
            return h


async def message(client: RawClient, to: str, text: str) -> None:
    await client.send(f"<message to='{to}' type='chat'><body>{text}</body></message>")


async def messages(client: RawClient, count: int) -> list[str]:
    return [body(await client.next_element(is_message)) or "" for _ in range(count)]


def drop_connection(client: RawClient) -> None:
    """Close the TCP socket under TLS without a word: the server sees the transport break."""
    tls = client.stream
    assert isinstance(tls, trio.SSLStream)
    tcp = tls.transport_stream
    assert isinstance(tcp, trio.SocketStream)
    tcp.socket.close()


async def resume(
    server: ServerProcess, username: str, previd: str, h: int
) -> tuple[RawClient, etree._Element]:
    client = await raw_authenticated(server.c2s_port, username, PASSWORD)
    await client.open_stream()
    await client.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    answer = await client.next_element(lambda e: e.tag in (tag("resumed"), tag("failed")))
    return client, answer


async def ping_echo(client: RawClient, marker: str, own: str) -> list[str]:
    """Send a marker message to ourselves; return the bodies of messages received before it."""
    await message(client, own, marker)
    seen = []
    while (text := body(await client.next_element(is_message))) != marker:
        seen.append(text or "")
    return seen


# ---- stage 1: acks -------------------------------------------------------------------------------


async def test_sm_is_offered_once_authenticated(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        features = await client.open_stream()
        assert features.find(tag("sm")) is not None, etree.tostring(features)
        await client.aclose()


async def test_enable_and_count_both_ways(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "pc")
        b = await login(server, bob, "pc")
        enabled = await enable(a, resume=False)
        assert enabled.tag == tag("enabled")
        assert enabled.get("id") is None
        assert enabled.get("resume") is None
        assert await ack(a) == 0
        for i in range(3):
            await a.send(f"<iq type='get' id='p{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert await ack(a) == 3
        # Server → client: an <r/> comes after a few stanzas, or once the queue is quiet.
        for i in range(7):
            await message(b, f"{alice}@localhost/pc", f"m{i}")
        assert await messages(a, 7) == [f"m{i}" for i in range(7)]
        request = await a.expect(tag("r"))
        assert request is not None
        # Pings already answered (3) and the 7 messages: acknowledge them all, no error follows.
        await a.send(f"<a xmlns='{SM}' h='10'/>")
        assert await ack(a) == 3
        await a.aclose()
        await b.aclose()


async def test_a_quiet_stream_is_asked_for_an_ack(server: ServerProcess, accounts: Accounts) -> None:
    # Fewer stanzas than ask for an <r/> by count: the session timers ask once the stream has
    # been quiet for a tick or two, so unacknowledged stanzas do not wait for more traffic.
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "pc")
        b = await login(server, bob, "pc")
        await enable(a, resume=False)
        start = trio.current_time()
        await message(b, f"{alice}@localhost/pc", "only one")
        assert await messages(a, 1) == ["only one"]
        request = await a.expect(tag("r"))
        assert request is not None
        assert trio.current_time() - start < 5  # one to two ticks of a second
        await a.send(f"<a xmlns='{SM}' h='1'/>")
        assert await ack(a) == 0
        await a.aclose()
        await b.aclose()


def offline_rows(database: Path, username: str, text: str) -> int:
    """Offline messages of `username` holding `text`, read straight from the server's database."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM offline_message WHERE username = ? AND CAST(stanza AS TEXT) LIKE ?",
            (username, f"%{text}%"),
        ).fetchone()
    return int(count)


async def test_a_message_is_acked_once_it_is_stored(server: ServerProcess, accounts: Accounts) -> None:
    """docs/design.md "The failover promise": `h` counts a message only after its durable write."""
    alice, bob = accounts(2)  # bob stays offline: alice's messages go to offline storage
    database = server.data_dir / "imactor.sqlite3"
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "pc")
        await enable(a, resume=False)
        # Stanza 1 and 3 are messages, 2 a ping the session answers itself, then an <r/>.
        await message(a, f"{bob}@localhost", "durable-1")
        await a.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        await message(a, f"{bob}@localhost", "durable-3")
        await a.send(f"<r xmlns='{SM}'/>")
        seen = []
        while not seen or seen[-1] < 3:
            h = int((await a.expect(tag("a"))).get("h", "-1"))
            seen.append(h)
            assert 0 <= h <= 3, seen  # never more than was sent
            # Whatever the <a/> counts is in the database by the time it arrives.
            if h >= 1:
                assert offline_rows(database, bob, "durable-1") == 1
            if h >= 3:
                assert offline_rows(database, bob, "durable-3") == 1
        assert seen == sorted(seen)
        assert await ack(a) == 3
        await a.aclose()


async def test_enable_before_bind_or_twice_fails(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        await client.open_stream()
        assert failed_condition(await enable(client)) == "unexpected-request"
        await client.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        await client.next_element(lambda e: e.get("id") == "b1")
        assert (await enable(client)).tag == tag("enabled")
        assert failed_condition(await enable(client)) == "unexpected-request"
        assert await ack(client) == 0  # still usable
        await client.aclose()


async def test_ack_beyond_what_was_sent_is_a_stream_error(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await login(server, alice, "pc")
        await enable(client, resume=False)
        await client.send(f"<a xmlns='{SM}' h='5'/>")
        error = await client.expect(f"{{{STREAM_NS}}}error")
        assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}undefined-condition") is not None
        too_high = error.find(tag("handled-count-too-high"))
        assert too_high is not None, etree.tostring(error)
        assert (too_high.get("h"), too_high.get("send-count")) == ("5", "0")
        await client.wait_closed()


def test_slixmpp_acks(server: ServerProcess, clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with clients.slixmpp(alice, "pc", plugins=("xep_0198",)) as a:
            sm = a.plugin["xep_0198"]
            if not sm.enabled_in:
                await asyncio.wait_for(event_queue(a, "sm_enabled").get(), TIMEOUT)
            got = event_queue(a, "message")
            async with clients.slixmpp(bob, "pc") as b:
                for i in range(6):
                    b.send_message(mto=f"{alice}@localhost/pc", mbody=f"m{i}", mtype="chat")
                    a.send_message(mto=f"{bob}@localhost/pc", mbody=f"r{i}", mtype="chat")
                bodies = [str((await asyncio.wait_for(got.get(), TIMEOUT))["body"]) for _ in range(6)]
                assert bodies == [f"m{i}" for i in range(6)]
                # The server acknowledged what alice sent, and asked for (and got) her acks.
                deadline = asyncio.get_running_loop().time() + 10
                while sm.last_ack < 6 or not sm.handled:
                    assert asyncio.get_running_loop().time() < deadline, (sm.last_ack, sm.handled)
                    sm.request_ack()
                    await asyncio.sleep(0.2)
                assert sm.handled >= 6
                assert not sm.unacked_queue

    run(scenario())


def test_aioxmpp_enables_sm_and_talks(server: ServerProcess, clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with clients.aioxmpp(alice, "pc") as a:
            assert a.stream.sm_enabled
            assert a.stream.sm_resumable
            received: asyncio.Queue[aioxmpp.Message] = asyncio.Queue()
            dispatcher = a.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
            dispatcher.register_callback(aioxmpp.MessageType.CHAT, None, received.put_nowait)
            async with clients.aioxmpp(bob, "pc") as b:
                for i in range(8):
                    msg = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT,
                                          to=aioxmpp.JID.fromstr(f"{alice}@localhost/pc"))  # fmt: skip
                    msg.body[None] = f"m{i}"
                    await b.send(msg)
                bodies = [(await asyncio.wait_for(received.get(), TIMEOUT)).body.any() for _ in range(8)]
                assert bodies == [f"m{i}" for i in range(8)]
                # Alice's acks reached the server without a stream error: still connected.
                await asyncio.sleep(1.5)
                assert a.running
                assert a.established

    run(scenario())


# ---- stage 2: resumption -------------------------------------------------------------------------


async def test_resume_after_a_broken_connection(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    own = f"{alice}@localhost/phone"
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "phone")
        b = await login(server, bob, "pc")
        enabled = await enable(a)
        previd = enabled.get("id")
        assert previd
        assert enabled.get("resume") == "true"
        assert enabled.get("max") == str(RESUME_TIMEOUT)
        for i in range(4):
            await message(b, own, f"m{i}")
        assert await messages(a, 4) == ["m0", "m1", "m2", "m3"]
        await message(a, f"{bob}@localhost/pc", "from alice 1")
        assert await messages(b, 1) == ["from alice 1"]
        assert await ack(a, until=1) == 1
        # Alice tells the server she handled m0 and m1 only, then her network goes.
        await a.send(f"<a xmlns='{SM}' h='2'/>")
        assert await ack(a) == 1
        drop_connection(a)
        await a.aclose()
        for i in range(4, 7):
            await message(b, own, f"m{i}")
        await trio.sleep(0.3)  # they reach the detached session
        a2, resumed = await resume(server, alice, previd, 2)
        assert resumed.tag == tag("resumed"), etree.tostring(resumed)
        assert (resumed.get("previd"), resumed.get("h")) == (previd, "1")
        # m2, m3 again (not acknowledged), then what came while detached; nothing else.
        assert await ping_echo(a2, "marker", own) == ["m2", "m3", "m4", "m5", "m6"]
        # The session carries on: same resource, counts continue.
        await message(a2, f"{bob}@localhost/pc", "from alice 2")
        assert await messages(b, 1) == ["from alice 2"]
        assert await ack(a2, until=3) == 3  # 1 before + the marker + "from alice 2"
        await a2.aclose()
        await b.aclose()


async def test_resume_with_a_forged_or_foreign_id_fails(server: ServerProcess, accounts: Accounts) -> None:
    alice, mallory = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "phone")
        previd = (await enable(a)).get("id")
        assert previd
        drop_connection(a)
        await a.aclose()
        forged, answer = await resume(server, alice, previd + "x", 0)
        assert failed_condition(answer) == "item-not-found"
        assert answer.get("h") is None
        # Another account cannot take Alice's session, even knowing its id.
        stolen, answer = await resume(server, mallory, previd, 0)
        assert failed_condition(answer) == "item-not-found"
        # After a failed resume the stream may still bind normally (§5).
        await stolen.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        bound = await stolen.next_element(lambda e: e.get("id") == "b1")
        assert bound.get("type") == "result"
        # Alice herself still can.
        mine, answer = await resume(server, alice, previd, 0)
        assert answer.tag == tag("resumed")
        for client in (forged, stolen, mine):
            await client.aclose()


async def test_expired_session_goes_offline_and_late_resume_fails(
    server: ServerProcess, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    own = f"{alice}@localhost/phone"
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "phone")
        b = await login(server, bob, "pc")
        previd = (await enable(a)).get("id")
        assert previd
        await message(b, own, "unacked")
        assert await messages(a, 1) == ["unacked"]
        await message(a, f"{bob}@localhost/pc", "hello")
        assert await ack(a, until=1) == 1
        drop_connection(a)
        await a.aclose()
        await message(b, own, "while detached")
        await trio.sleep(RESUME_TIMEOUT + 1.5)
        late, answer = await resume(server, alice, previd, 1)
        assert failed_condition(answer) == "item-not-found"
        assert answer.get("h") == "1"  # §5: what the server had handled of the old session
        await late.aclose()
        # Nothing was lost: both messages wait in offline storage for the next login.
        fresh = await login(server, alice, "laptop")
        await fresh.send("<presence/>")
        assert await messages(fresh, 2) == ["unacked", "while detached"]
        await fresh.aclose()
        await b.aclose()


async def test_clean_close_is_not_resumable(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "phone")
        previd = (await enable(a)).get("id")
        assert previd
        await a.send("</stream:stream>")
        await a.wait_closed()
        await a.aclose()
        late, answer = await resume(server, alice, previd, 0)
        assert failed_condition(answer) == "item-not-found"
        await late.aclose()


async def test_resume_takes_over_a_half_open_connection(server: ServerProcess, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    own = f"{alice}@localhost/phone"
    with trio.fail_after(TIMEOUT):
        a = await login(server, alice, "phone")
        b = await login(server, bob, "pc")
        previd = (await enable(a)).get("id")
        assert previd
        await message(b, own, "m0")
        assert await messages(a, 1) == ["m0"]
        # The server still thinks the old connection is alive when the client resumes.
        a2, resumed = await resume(server, alice, previd, 0)
        assert resumed.tag == tag("resumed")
        assert await ping_echo(a2, "marker", own) == ["m0"]
        with pytest.raises(EOFError):
            await a.next_element(is_message)  # the old connection was closed with <conflict/>
        await a.aclose()
        await a2.aclose()
        await b.aclose()


def test_slixmpp_resumes(server: ServerProcess, clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with clients.slixmpp(alice, "pc", plugins=("xep_0198",)) as a:
            sm = a.plugin["xep_0198"]
            if not sm.enabled_in:
                await asyncio.wait_for(event_queue(a, "sm_enabled").get(), TIMEOUT)
            assert sm.sm_id
            resumed = event_queue(a, "session_resumed")
            got = event_queue(a, "message")
            async with clients.slixmpp(bob, "pc") as b:
                b.send_message(mto=f"{alice}@localhost/pc", mbody="before", mtype="chat")
                assert str((await asyncio.wait_for(got.get(), TIMEOUT))["body"]) == "before"
                assert a.transport is not None
                disconnected = event_queue(a, "disconnected")
                a.transport.abort()  # the connection breaks without a closing tag
                await asyncio.wait_for(disconnected.get(), TIMEOUT)
                b.send_message(mto=f"{alice}@localhost/pc", mbody="during", mtype="chat")
                await asyncio.sleep(0.3)
                a.connect(HOST, server.c2s_port)  # slixmpp then resumes the session
                await asyncio.wait_for(resumed.get(), TIMEOUT)
                assert str((await asyncio.wait_for(got.get(), TIMEOUT))["body"]) == "during"
                assert got.empty()

    run(scenario())


_ = slixmpp
