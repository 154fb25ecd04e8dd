"""RFC 6121 §4: presence broadcast, probes, own resources, unavailable, directed presence."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator

import aioxmpp
import aioxmpp.disco
import trio

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import Clients, aioxmpp_client, event_queue, run
from tests.support.muc import NS_MUC, create_instant
from tests.support.peer import (
    C,
    Element,
    Peers,
    any_presence,
    befriend,
    marker,
    new_id,
    presence,
    show,
    subscribe,
)
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT


def presences_from(elements: list[Element], jid_prefix: str) -> list[str]:
    """The presence stanzas among `elements` whose 'from' starts with `jid_prefix`, as text."""
    return [show(e) for e in elements if any_presence(e) and (e.get("from") or "").startswith(jid_prefix)]


async def test_initial_presence_goes_to_from_and_both_contacts_only(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user("setup")
        b, c, d, e = await peers.online_users(4)
        await subscribe(b, a)  # Bob: To Alice (Alice: From Bob)
        await subscribe(a, b)  # now Both
        await subscribe(c, a)  # Carol: To Alice (Alice: From Carol)
        await subscribe(a, d)  # Alice: To Dave (Dave gets no presence from Alice)
        await a.roster_set(f"<item jid='{e.bare}' name='Eve'/>")  # Eve: None
        await a.aclose()
        for peer in (b, c):
            await peer.expect(presence(from_=a.jid, type_="unavailable"))
        for peer in (b, c, d, e):
            peer.inbox.clear()

        pc = await peers.login(a.username, "pc")
        await pc.send("<presence><show>away</show><status>lunch</status><priority>3</priority></presence>")
        await pc.expect(presence(from_=pc.jid))
        for peer in (b, c):
            got = await peer.expect(presence(from_=pc.jid))
            assert got.get("to") == peer.bare, show(got)
            assert got.findtext(f"{C}show") == "away"
            assert got.findtext(f"{C}status") == "lunch"
            assert got.findtext(f"{C}priority") == "3"
        await pc.sync()  # the broadcast was handed to every recipient's actor
        for peer in (d, e):
            earlier = await marker(b, peer)
            assert presences_from(earlier, a.bare) == [], earlier


async def test_probes_at_login_bring_contacts_presence(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user("setup")
        b, c = await peers.online_users(2, resource="desk")
        await subscribe(a, b)
        await subscribe(b, a)  # Both
        await subscribe(a, c)  # Alice: To Carol
        await a.aclose()
        await b.send("<presence><show>dnd</show><status>busy</status></presence>")
        await b.expect(presence(from_=b.jid))
        b2 = await peers.login(b.username, "phone")
        await b2.available("<show>xa</show>")

        pc = await peers.login(a.username, "pc")
        await pc.send("<presence/>")
        # §4.2.3 / §4.3.2: the probes bring the current presence of every available resource.
        desk = await pc.expect(presence(from_=b.jid))
        assert desk.findtext(f"{C}show") == "dnd", show(desk)
        assert desk.findtext(f"{C}status") == "busy", show(desk)
        phone = await pc.expect(presence(from_=b2.jid))
        assert phone.findtext(f"{C}show") == "xa", show(phone)
        await pc.expect(presence(from_=c.jid))


async def test_probe_is_not_answered_for_non_subscribers(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user("setup")
        b, c = await peers.online_users(2)
        await subscribe(b, a)  # Bob may see Alice: Alice has From Bob
        await a.aclose()
        # Carol (no subscription) is in Alice's roster as a plain item; Bob is To Alice.
        await b.roster_set(f"<item jid='{c.bare}'/>")
        # Alice logs in again; she is To nobody, so she probes nobody and gets nothing.
        pc = await peers.login(a.username, "pc")
        await pc.roster_set(f"<item jid='{c.bare}' name='Carol'/>")
        await pc.available()
        await pc.sync()
        # Bob's presence must not reach Alice: she has no subscription to it.
        await b.send("<presence><show>away</show></presence>")
        await b.expect(presence(from_=b.jid))
        await b.sync()
        earlier = await marker(c, pc)
        assert presences_from(earlier, b.bare) == [], earlier
        assert presences_from(earlier, c.bare) == [], earlier
        # A probe sent by a client is not the server's to send (§4.3): nothing comes back.
        await c.send(f"<presence type='probe' to='{a.bare}'/>")
        await c.sync()
        earlier = await marker(pc, c)
        assert presences_from(earlier, a.bare) == [], earlier


async def test_own_resources_see_each_other(peers: Peers, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        pc = await peers.online(alice, "pc", "<status>at the desk</status>")
        phone = await peers.login(alice, "phone")
        await phone.send("<presence><priority>-1</priority></presence>")
        # §4.2.2: the new resource learns the presence of the others...
        other = await phone.expect(presence(from_=pc.jid))
        assert other.findtext(f"{C}status") == "at the desk", show(other)
        assert other.get("to") in (phone.jid, phone.bare), show(other)
        await phone.expect(presence(from_=phone.jid))
        # ...and the others learn its presence, negative priority included.
        mine = await pc.expect(presence(from_=phone.jid))
        assert mine.findtext(f"{C}priority") == "-1", show(mine)

        await pc.send("<presence><show>away</show></presence>")
        update = await phone.expect(presence(from_=pc.jid))
        assert update.findtext(f"{C}show") == "away", show(update)
        await phone.send("<presence type='unavailable'/>")
        await pc.expect(presence(from_=phone.jid, type_="unavailable"))


async def test_unavailable_is_broadcast(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, phone = await peers.devices("pc", "phone")
        b = await peers.online_user()
        await subscribe(b, a)
        phone.inbox.clear()

        await a.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        for peer in (b, phone):
            gone = await peer.expect(presence(from_=a.jid, type_="unavailable"))
            assert gone.findtext(f"{C}status") == "gone fishing", show(gone)
        # A second unavailable is not broadcast again; available presence is initial presence again.
        await a.send("<presence type='unavailable'/>")
        await a.send("<presence><show>chat</show></presence>")
        back = await b.expect(lambda e: any_presence(e) and e.get("from") == a.jid)
        assert back.get("type") is None, show(back)
        assert back.findtext(f"{C}show") == "chat"


async def test_unavailable_is_broadcast_when_the_connection_drops(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, phone = await peers.devices("pc", "phone")
        b = await peers.online_user()
        await subscribe(b, a)
        phone.inbox.clear()
        await a.drop()  # no </stream:stream>, no TLS close_notify: the TCP connection just ends
        for peer in (b, phone):
            gone = await peer.expect(presence(from_=a.jid, type_="unavailable"))
            assert gone.get("to") == peer.bare, show(gone)
        # A clean close is announced the same way.
        await phone.aclose()
        await b.expect(presence(from_=phone.jid, type_="unavailable"))


async def test_directed_presence_to_a_non_contact(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, phone = await peers.devices("pc", "phone")
        c, d = await peers.online_users(2)
        await phone.sync()
        phone.inbox.clear()

        # §4.6: directed presence goes to the addressee only.
        await a.send(f"<presence to='{c.jid}'><status>psst</status></presence>")
        got = await c.expect(presence(from_=a.jid))
        assert got.findtext(f"{C}status") == "psst", show(got)
        assert got.get("to") == c.jid
        await a.send(f"<presence to='{d.bare}'/>")
        await d.expect(presence(from_=a.jid))
        # Directed unavailable to Dave before leaving: he is not told twice.
        await a.send(f"<presence to='{d.bare}' type='unavailable'/>")
        await d.expect(presence(from_=a.jid, type_="unavailable"))
        # The directed presence was not broadcast to Alice's own other resource.
        await a.sync()
        earlier = await marker(a, phone)
        assert presences_from(earlier, a.jid) == [], earlier

        # §4.6.3: when the resource goes away, the addressee learns it.
        await a.drop()
        gone = await c.expect(presence(from_=a.jid, type_="unavailable"))
        assert gone.get("to") == c.jid, show(gone)
        await phone.expect(presence(from_=a.jid, type_="unavailable"))
        await phone.sync()  # the user actor finished with the dropped resource
        earlier = await marker(phone, d)
        assert presences_from(earlier, a.bare) == [], earlier


async def test_no_presence_leaks(peers: Peers) -> None:
    """Contacts that are To, None, pending in or pending out, and strangers, get nothing."""
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user("pc")
        # Bob, whom Alice's presence may reach; her To contact, pending in, pending out; a stranger.
        b, t, pi, po, s = await peers.online_users(5)
        await subscribe(b, a)  # the one who may see Alice
        await subscribe(a, t)  # Alice: To t
        await pi.send(f"<presence to='{a.bare}' type='subscribe'/>")  # unanswered
        await a.expect(presence(from_=pi.bare, type_="subscribe"))
        await a.send(f"<presence to='{po.bare}' type='subscribe'/>")  # unanswered
        await po.expect(presence(from_=a.bare, type_="subscribe"))
        await a.roster_set(f"<item jid='{s.bare}'/>")

        await a.send("<presence><show>away</show></presence>")
        await b.expect(presence(from_=a.jid))
        await a.send("<presence type='unavailable'/>")
        await b.expect(presence(from_=a.jid, type_="unavailable"))
        await a.sync()
        for peer in (t, pi, po, s):
            earlier = await marker(b, peer)
            assert presences_from(earlier, a.bare) == [], (peer.bare, earlier)


# ---- real client libraries ----------------------------------------------------------------------


def test_slixmpp_sees_contact_come_and_go(
    server: ServerProcess, clients: Clients, accounts: Accounts
) -> None:
    alice, bob = accounts(2)
    befriend(server.c2s_port, [(alice, bob, "both")], PASSWORD)

    async def scenario() -> None:
        async with clients.slixmpp(alice) as a:
            await a.get_roster()
            online = event_queue(a, "got_online")
            offline = event_queue(a, "got_offline")
            changed = event_queue(a, "changed_status")
            a.send_presence()
            async with clients.slixmpp(bob) as b:
                await b.get_roster()
                b.send_presence(pshow="away", pstatus="coffee", ppriority=2)
                got = await asyncio.wait_for(online.get(), TIMEOUT)
                while got["from"] != f"{bob}@localhost/sx":
                    got = await asyncio.wait_for(online.get(), TIMEOUT)
                assert got["show"] == "away"
                assert got["status"] == "coffee"
                assert got["priority"] == 2
                b.send_presence(pshow="dnd")
                while True:
                    update = await asyncio.wait_for(changed.get(), TIMEOUT)
                    if update["from"] == f"{bob}@localhost/sx" and update["show"] == "dnd":
                        break
            # Bob's client closed its stream: his unavailable presence reaches Alice.
            gone = await asyncio.wait_for(offline.get(), TIMEOUT)
            assert gone["from"] == f"{bob}@localhost/sx"

    run(scenario())


def test_aioxmpp_presence_client(server: ServerProcess, clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    befriend(server.c2s_port, [(alice, bob, "both")], PASSWORD)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with clients.aioxmpp(bob) as b:
            bob_watcher = b.summon(aioxmpp.PresenceClient)  # (tracks Alice from her first presence on)
            gone: asyncio.Future[aioxmpp.JID] = loop.create_future()
            bob_watcher.on_unavailable.connect(lambda jid, stanza: gone.done() or gone.set_result(jid))
            b.summon(aioxmpp.PresenceServer).set_presence(
                aioxmpp.PresenceState(True, aioxmpp.PresenceShow.AWAY)
            )
            async with clients.aioxmpp(alice) as a:
                watcher = a.summon(aioxmpp.PresenceClient)
                available: asyncio.Future[aioxmpp.JID] = loop.create_future()

                def on_available(jid: aioxmpp.JID, stanza: aioxmpp.Presence) -> None:
                    # (aioxmpp disconnects a callback that returns a true value: return None.)
                    if jid.localpart == bob and not available.done():
                        available.set_result(jid)

                watcher.on_available.connect(on_available)
                a.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
                # Her initial presence probes Bob; his current presence comes back.
                jid = await asyncio.wait_for(available, TIMEOUT)
                assert jid == aioxmpp.JID.fromstr(f"{bob}@localhost/ax")
                state = watcher.get_most_available_stanza(jid.bare())
                assert state is not None
                assert state.show == aioxmpp.PresenceShow.AWAY

            assert await asyncio.wait_for(gone, TIMEOUT) == aioxmpp.JID.fromstr(f"{alice}@localhost/ax")

    run(scenario())


CAPS_SERVICES = (aioxmpp.EntityCapsService, aioxmpp.PresenceServer, aioxmpp.PresenceClient)


def test_aioxmpp_entity_caps_are_asked_once(server: ServerProcess, accounts: Accounts) -> None:
    """Issue 13 (8), aioxmpp's own check (its entitycaps end-to-end test): Bob's and Carol's
    clients, of the same caps, send Alice's client directed presence (no subscription); Alice's
    EntityCapsService asks Bob's node#ver once and serves Carol from its cache. Nobody else asks
    them: the server's PEP service asks only for the caps of its auto-subscribers (XEP-0163 §4.1),
    so Bob answers one disco#info and Carol none."""
    alice, bob, carol = accounts(3)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            clients = {name: await stack.enter_async_context(caps_client(name, server.c2s_port))
                       for name in (alice, bob, carol)}  # fmt: skip
            asked = {name: count_disco_info(clients[name]) for name in (bob, carol)}
            sent = {name: outbound_presence(clients[name]) for name in (bob, carol)}
            seen = watch_available(clients[alice], loop, (bob, carol))
            for name in (bob, carol):
                to = aioxmpp.JID.fromstr(f"{alice}@localhost/caps")
                await clients[name].send(aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE, to=to))
            got = {name: await asyncio.wait_for(seen[name], TIMEOUT) for name in (bob, carol)}
            for name in (bob, carol):
                assert_same_caps(sent[name][0], got[name])
            assert sent[bob][0].xep0115_caps.ver == sent[carol][0].xep0115_caps.ver  # the same caps

            disco = clients[alice].summon(aioxmpp.DiscoClient)
            bob_info = await asyncio.wait_for(disco.query_info(got[bob].from_), TIMEOUT)
            carol_info = await asyncio.wait_for(disco.query_info(got[carol].from_), TIMEOUT)
            assert bob_info.features == carol_info.features
            assert (len(asked[bob]), asked[carol]) == (1, []), asked

    run(scenario())


def test_caps_pass_through_presence_unchanged(server: ServerProcess, accounts: Accounts) -> None:
    """Issue 13 (8): the <c/> of Bob's aioxmpp client (EntityCapsService) reaches, attribute for
    attribute, his contact Alice by broadcast, his own other resource, and Dave (subscribed to him)
    as the answer to the probe of Dave's later initial presence (RFC 6121 §4.3.2)."""
    alice, bob, dave = accounts(3)
    befriend(server.c2s_port, [(alice, bob, "both"), (dave, bob, "to")], PASSWORD)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(caps_client(alice, server.c2s_port))
            b2 = await stack.enter_async_context(caps_client(bob, server.c2s_port, "other"))
            seen_by_alice = watch_available(a, loop, (bob,), resource="caps")
            seen_by_self = watch_available(b2, loop, (bob,), resource="caps")
            a.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
            b2.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
            b = await stack.enter_async_context(caps_client(bob, server.c2s_port))
            sent = outbound_presence(b)
            b.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
            by_alice = await asyncio.wait_for(seen_by_alice[bob], TIMEOUT)
            by_self = await asyncio.wait_for(seen_by_self[bob], TIMEOUT)
            d = await stack.enter_async_context(caps_client(dave, server.c2s_port))
            seen_by_dave = watch_available(d, loop, (bob,), resource="caps")
            d.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
            by_dave = await asyncio.wait_for(seen_by_dave[bob], TIMEOUT)
            for received in (by_alice, by_self, by_dave):
                assert_same_caps(sent[0], received)

    run(scenario())


async def test_caps_pass_through_room_presence(peers: Peers) -> None:
    """Issue 13 (8): an occupant's <c/> reaches the other occupants and itself in the room's
    presence (XEP-0045 §7.2.3 reflects the occupant's presence), also in a presence update."""
    room = f"caps-{new_id()}@conference.localhost"
    caps = "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test:caps' ver='{}'/>"
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await create_instant(a, room, "alice")
        await b.send(f"<presence to='{room}/bob'><x xmlns='{NS_MUC}'/>{caps.format('one=')}</presence>")
        from_bob = presence(from_=f"{room}/bob")
        for peer in (a, b):
            got = await peer.expect(from_bob)
            assert caps_of(got) == ("sha-1", "urn:test:caps", "one="), show(got)
        await b.send(f"<presence to='{room}/bob'><show>away</show>{caps.format('two=')}</presence>")
        got = await a.expect(from_bob)
        assert caps_of(got) == ("sha-1", "urn:test:caps", "two="), show(got)


def caps_of(element: Element) -> tuple[str | None, ...] | None:
    c = element.find("{http://jabber.org/protocol/caps}c")
    return None if c is None else (c.get("hash"), c.get("node"), c.get("ver"))


@contextlib.asynccontextmanager
async def caps_client(name: str, port: int, resource: str = "caps") -> AsyncIterator[aioxmpp.Client]:
    """An aioxmpp client with the entity caps and presence services (the same caps for all)."""
    async with aioxmpp_client(f"{name}@localhost/{resource}", PASSWORD, port) as client:
        for service in CAPS_SERVICES:
            client.summon(service)
        yield client


def outbound_presence(client: aioxmpp.Client) -> list[aioxmpp.Presence]:
    """Copies of the available presence `client` sends, as it leaves (its caps attached)."""
    sent: list[aioxmpp.Presence] = []

    def keep(stanza: aioxmpp.Presence) -> aioxmpp.Presence:
        if stanza.type_ == aioxmpp.PresenceType.AVAILABLE:
            sent.append(copy.deepcopy(stanza))
        return stanza

    # After the caps service's own filter, which adds the <c/> (filters run by ascending order;
    # services register theirs at their small order index).
    client.stream.service_outbound_presence_filter.register(keep, 1_000_000)
    return sent


def count_disco_info(client: aioxmpp.Client) -> list[str | None]:
    """The node of every disco#info request `client` answers, in order (its DiscoServer answers)."""
    server = client.summon(aioxmpp.DiscoServer)
    asked: list[str | None] = []

    async def counting(iq: aioxmpp.IQ) -> object:
        asked.append(iq.payload.node)
        return await server.handle_info_request(iq)

    client.stream.unregister_iq_request_handler(aioxmpp.IQType.GET, aioxmpp.disco.xso.InfoQuery)
    client.stream.register_iq_request_handler(aioxmpp.IQType.GET, aioxmpp.disco.xso.InfoQuery, counting)
    return asked


def watch_available(
    client: aioxmpp.Client, loop: asyncio.AbstractEventLoop, names: tuple[str, ...],
    resource: str | None = None,
) -> dict[str, asyncio.Future[aioxmpp.Presence]]:
    """A future per account in `names`: the first available presence `client` gets from it (from
    `resource`, when given)."""
    seen: dict[str, asyncio.Future[aioxmpp.Presence]] = {name: loop.create_future() for name in names}

    def on_available(jid: aioxmpp.JID, stanza: aioxmpp.Presence) -> None:
        future = seen.get(jid.localpart or "")
        if resource is not None and jid.resource != resource:
            return
        if future is not None and not future.done():
            future.set_result(stanza)

    client.summon(aioxmpp.PresenceClient).on_available.connect(on_available)
    return seen


def assert_same_caps(sent: aioxmpp.Presence, received: aioxmpp.Presence) -> None:
    assert sent.xep0115_caps is not None
    assert received.xep0115_caps is not None, "the <c/> was dropped"
    attributes = ("node", "ver", "hash_")
    pairs = [(getattr(sent.xep0115_caps, name), getattr(received.xep0115_caps, name)) for name in attributes]
    assert all(s == r for s, r in pairs), pairs
