"""XEP-0352 Client State Indication, end to end over raw XML (the test is about what goes on the wire).

How a test knows a stanza is *held* rather than not yet arrived: the sender makes a round trip
through the recipient's user actor (an IQ to the recipient's bare JID) after sending it, so the
actor has queued it for the recipient's session; the recipient then pings the server, whose
answer the session writes itself, unfiltered: whatever the session did not hold has been
written before that answer (`pinged`).
"""

from __future__ import annotations

import asyncio
import contextlib

import trio
from lxml import etree
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import Clients, event_queue, raw_authenticated, run
from tests.support.peer import C, Element, Peer, Peers, bare, message, new_id, show
from tests.support.raw import RawClient
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT

NS_CSI = "urn:xmpp:csi:0"
NS_SM = "urn:xmpp:sm:3"
NS_DISCO = "http://jabber.org/protocol/disco#info"
CHATSTATES = "http://jabber.org/protocol/chatstates"


async def pinged(peer: Peer) -> list[Element]:
    """Ping the server; return (and consume) what arrived before the answer."""
    ping_id = new_id("ping")
    await peer.send(f"<iq type='get' id='{ping_id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return await peer.before(lambda e: e.get("id") == ping_id)


async def through_actor(sender: Peer, recipient: str) -> None:
    """A round trip through `recipient`'s user actor: what `sender` sent it before is queued."""
    await sender.iq(f"<query xmlns='{NS_DISCO}'/>", to=recipient)


async def presence_to(sender: Peer, to: str, show_: str) -> None:
    """Directed presence; it travels through the sender's own actor, so a round trip there
    (`sync`) puts it in the recipient's actor's mailbox before anything the sender sends next."""
    await sender.send(f"<presence to='{to}'><show>{show_}</show></presence>")
    await sender.sync()


def shows(elements: list[Element]) -> list[str]:
    """Each stanza as one word: its <show/> for presence, its chat state or body for messages."""
    words = []
    for e in elements:
        if e.tag == f"{C}presence":
            words.append(e.findtext(f"{C}show") or "available")
        elif e.find(f"{C}body") is not None:
            words.append(e.findtext(f"{C}body") or "")
        else:
            words.append(next((etree.QName(c).localname for c in e), "?"))
    return words


async def test_csi_is_a_stream_feature(server: ServerProcess, accounts: Accounts) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        try:
            features = await client.open_stream()
            assert features.find(f"{{{NS_CSI}}}csi") is not None, show(features)
        finally:
            await client.aclose()


async def test_inactive_client_gets_unimportant_stanzas_with_the_next_message(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await a.send(f"<inactive xmlns='{NS_CSI}'/>")
        assert await pinged(a) == []  # the nonza is handled, in order, before the ping
        await presence_to(b, a.jid, "away")
        await presence_to(b, a.jid, "dnd")  # replaces the held "away"
        await b.send(f"<message to='{a.jid}' type='chat'><composing xmlns='{CHATSTATES}'/></message>")
        await through_actor(b, a.bare)
        assert await pinged(a) == [], "held while inactive"
        message_id = new_id("m")
        await b.send(f"<message to='{a.jid}' id='{message_id}' type='chat'><body>wake up</body></message>")
        earlier = await a.before(message(id_=message_id))
        assert shows(earlier) == ["dnd", "composing"], [show(e) for e in earlier]
        # Still inactive: the next presence waits again, until <active/> releases it.
        await presence_to(b, a.jid, "xa")
        await through_actor(b, a.bare)
        assert await pinged(a) == []
        await a.send(f"<active xmlns='{NS_CSI}'/>")
        assert shows(await pinged(a)) == ["xa"]
        # Active again: nothing is held.
        await presence_to(b, a.jid, "chat")
        await through_actor(b, a.bare)
        assert shows(await pinged(a)) == ["chat"]


async def test_iq_and_encrypted_messages_are_not_held(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await a.send(f"<inactive xmlns='{NS_CSI}'/>")
        await pinged(a)
        await presence_to(b, a.jid, "away")
        omemo_id = new_id("m")
        await b.send(
            f"<message to='{a.jid}' id='{omemo_id}' type='chat'>"
            "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>eA==</payload>"
            "</encrypted></message>"
        )
        got = await a.before(message(id_=omemo_id))
        assert shows(got) == ["away"], [show(e) for e in got]
        iq_id = new_id("iq")
        await b.send(f"<iq to='{a.jid}' id='{iq_id}' type='get'><query xmlns='jabber:iq:version'/></iq>")
        request = await a.expect(lambda e: e.get("id") == iq_id)
        assert request.tag == f"{C}iq", show(request)


async def test_held_stanzas_survive_a_resumption(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        b = await peers.online(bob)
        raw = await RawClient.connect(server.c2s_port)
        jid = await raw.login(alice, PASSWORD, "phone")
        a = Peer(raw, jid)
        await a.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        enabled = await a.expect(lambda e: e.tag == f"{{{NS_SM}}}enabled")
        previd = enabled.get("id")
        await a.send(f"<inactive xmlns='{NS_CSI}'/>")
        assert await pinged(a) == []
        await presence_to(b, a.jid, "away")
        await through_actor(b, bare(alice))
        assert await pinged(a) == []
        # Two stanzas reached the client (the ping answers): it acknowledges exactly those; the
        # held presence was never sent, so it is not counted as sent either.
        await a.send(f"<a xmlns='{NS_SM}' h='2'/>")
        await a.drop()
        resumed_client = await raw_authenticated(server.c2s_port, alice, PASSWORD)
        await resumed_client.open_stream()
        await resumed_client.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='2'/>")
        resumed = Peer(resumed_client, jid)
        peers.opened.append(resumed)
        answer = await resumed.expect(
            lambda e: etree.QName(e).namespace == NS_SM and e.tag != f"{{{NS_SM}}}r"
        )
        assert answer.tag == f"{{{NS_SM}}}resumed", show(answer)
        # §5.2: the resumed stream is active: the held presence comes now, nothing else.
        assert shows([e for e in await pinged(resumed) if e.tag != f"{{{NS_SM}}}r"]) == ["away"]
        await presence_to(b, a.jid, "dnd")
        await through_actor(b, bare(alice))
        assert shows([e for e in await pinged(resumed) if e.tag != f"{{{NS_SM}}}r"]) == ["dnd"]


def test_slixmpp_client_state_indication(clients: Clients, accounts: Accounts) -> None:
    """slixmpp's XEP-0352 plugin finds the feature; while it says inactive, presence waits."""
    alice, bob = accounts(2)

    async def scenario() -> None:
        phone_plugins = ("xep_0030", "xep_0199", "xep_0352")
        async with (
            clients.slixmpp(alice, "phone", plugins=phone_plugins, send_presence=True) as a,
            clients.slixmpp(bob, "pc", plugins=("xep_0030",), send_presence=True) as b,
        ):
            assert a.plugin["xep_0352"].enabled
            seen: list[str] = []
            from_bob = f"{bob}@localhost/pc"
            a.add_event_handler(
                "presence", lambda p: seen.append(f"presence {p['show']}") if p["from"] == from_bob else None
            )
            a.add_event_handler("message", lambda m: seen.append(f"message {m['body']}"))
            a.plugin["xep_0352"].send_inactive()
            await a.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)  # the nonza is handled
            b.send_presence(pto=f"{alice}@localhost/phone", pshow="away")
            await b.get_roster()  # through Bob's actor, which forwards the presence first
            with contextlib.suppress(IqError):  # a round trip through Alice's actor
                await b.plugin["xep_0030"].get_info(jid=f"{alice}@localhost", timeout=TIMEOUT)
            await a.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
            assert seen == [], "held while inactive"
            done = event_queue(a, "message")
            b.send_message(mto=f"{alice}@localhost/phone", mbody="wake up", mtype="chat")
            await asyncio.wait_for(done.get(), TIMEOUT)
            assert seen == ["presence away", "message wake up"]

    run(scenario())
