"""XEP-0280 Message Carbons with the XEP-0334 hints, end to end (raw XML and slixmpp).

To show that a copy did NOT arrive, a test sends a marker through the same user actor after the
message (`Peer.before`): whatever the actor sent that resource first has arrived by then.
"""

from __future__ import annotations

import asyncio

import trio

from tests.integration.conftest import Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import C, Element, Peer, Peers, bare, error_condition, message, new_id, show
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DISCO = "http://jabber.org/protocol/disco#info"
CARBONS = f"{{{NS_CARBONS}}}"


async def enable(peer: Peer) -> None:
    reply = await peer.iq(f"<enable xmlns='{NS_CARBONS}'/>", type_="set")
    assert reply.get("type") == "result", show(reply)


async def send(sender: Peer, to: str, body: str = "hi", extra: str = "", type_: str = "chat") -> str:
    message_id = new_id("m")
    body_xml = f"<body>{body}</body>" if body else ""
    await sender.send(f"<message to='{to}' id='{message_id}' type='{type_}'>{body_xml}{extra}</message>")
    return message_id


def copy_of(direction: str, message_id: str):  # type: ignore[no-untyped-def]
    """Matches the carbon copy (<sent/> or <received/>) of the message with this id."""

    def match(element: Element) -> bool:
        inner = element.find(f"{CARBONS}{direction}/{{{NS_FORWARD}}}forwarded/{C}message")
        return element.tag == f"{C}message" and inner is not None and inner.get("id") == message_id

    return match


def inner(copy: Element, direction: str) -> Element:
    found = copy.find(f"{CARBONS}{direction}/{{{NS_FORWARD}}}forwarded/{C}message")
    assert found is not None, show(copy)
    return found


async def marker(sender: Peer, target: Peer) -> None:
    """Send `target` a marker through its account's actor and wait for it: whatever that actor
    sent `target` before has arrived; every stanza that came first stays in `target.inbox`."""
    marker_id = await send(sender, target.jid, "marker", type_="normal")
    target.inbox.extend(await target.before(message(id_=marker_id)))


def copies(peer: Peer) -> list[Element]:
    return [
        e
        for e in peer.inbox
        if e.find(f"{CARBONS}sent") is not None or e.find(f"{CARBONS}received") is not None
    ]


async def test_server_advertises_carbons(server: ServerProcess, accounts: Accounts, peers: Peers) -> None:
    (alice,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        reply = await a.iq(f"<query xmlns='{NS_DISCO}'/>", to="localhost")
        features = {f.get("var") for f in reply.iter(f"{{{NS_DISCO}}}feature")}
        assert NS_CARBONS in features, show(reply)


async def test_received_copy_goes_to_other_enabled_resources(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        # The tablet never enables carbons.
        phone, laptop, tablet = await peers.devices("phone", "laptop", "tablet")
        b = await peers.online_user()
        await enable(phone)
        await enable(laptop)
        message_id = await send(b, phone.jid, "to the phone")
        original = await phone.expect(message(id_=message_id))
        assert original.find(f"{CARBONS}received") is None, show(original)
        copy = await laptop.expect(copy_of("received", message_id))
        assert copy.get("from") == phone.bare, show(copy)
        assert copy.get("to") == laptop.jid, show(copy)
        assert copy.get("type") == "chat", show(copy)
        forwarded = inner(copy, "received")
        assert forwarded.get("from") == b.jid, show(copy)
        assert forwarded.get("to") == phone.jid, show(copy)
        assert forwarded.findtext(f"{C}body") == "to the phone", show(copy)
        await marker(b, tablet)
        await marker(b, phone)
        assert copies(tablet) == [], [show(e) for e in tablet.inbox]
        assert copies(phone) == [], [show(e) for e in phone.inbox]  # it got the original


async def test_bare_jid_message_copies_reach_lower_priority_resources(
    server: ServerProcess, accounts: Accounts, peers: Peers
) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        high = await peers.online(alice, "high", "<priority>5</priority>")
        low = await peers.online(alice, "low", "<priority>1</priority>")
        b = await peers.online(bob)
        await enable(high)
        await enable(low)
        message_id = await send(b, bare(alice), "to the bare JID")
        await high.expect(message(id_=message_id))
        copy = await low.expect(copy_of("received", message_id))
        assert inner(copy, "received").findtext(f"{C}body") == "to the bare JID", show(copy)


async def test_sent_copy_goes_to_other_resources_but_not_the_sender(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        phone, laptop = await peers.devices("phone", "laptop")
        b = await peers.online_user()
        await enable(phone)
        await enable(laptop)
        message_id = await send(phone, b.bare, "from the phone")
        got = await b.expect(message(id_=message_id))
        assert got.find(f"{CARBONS}sent") is None, show(got)
        copy = await laptop.expect(copy_of("sent", message_id))
        assert copy.get("from") == phone.bare, show(copy)
        assert copy.get("to") == laptop.jid, show(copy)
        forwarded = inner(copy, "sent")
        assert forwarded.get("from") == phone.jid, show(copy)
        assert forwarded.get("to") == b.bare, show(copy)
        await marker(b, phone)
        assert copies(phone) == [], [show(e) for e in phone.inbox]


async def test_chat_states_and_receipts_pass_through_and_are_copied(
    server: ServerProcess, peers: Peers
) -> None:
    with trio.fail_after(TIMEOUT):
        phone, laptop = await peers.devices("phone", "laptop")
        b = await peers.online_user()
        await enable(laptop)
        composing = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
        state_id = await send(b, phone.jid, "", composing)
        got = await phone.expect(message(id_=state_id))
        assert got.find("{http://jabber.org/protocol/chatstates}composing") is not None, show(got)
        await laptop.expect(copy_of("received", state_id))
        receipt = "<received xmlns='urn:xmpp:receipts' id='abc'/>"
        receipt_id = await send(phone, b.jid, "", receipt, type_="normal")
        got = await b.expect(message(id_=receipt_id))
        assert got.find("{urn:xmpp:receipts}received") is not None, show(got)
        await laptop.expect(copy_of("sent", receipt_id))


async def test_private_and_no_copy_hints_stop_copies(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        phone, laptop = await peers.devices("phone", "laptop")
        b = await peers.online_user()
        await enable(phone)
        await enable(laptop)
        private = f"<private xmlns='{NS_CARBONS}'/>"
        no_copy = "<no-copy xmlns='urn:xmpp:hints'/>"
        sent_private = await send(phone, b.bare, "private out", private)
        sent_no_copy = await send(phone, b.bare, "no-copy out", no_copy)
        in_private = await send(b, phone.jid, "private in", private)
        in_no_copy = await send(b, phone.jid, "no-copy in", no_copy)
        await b.expect(message(id_=sent_private))
        await b.expect(message(id_=sent_no_copy))
        await phone.expect(message(id_=in_private))
        await phone.expect(message(id_=in_no_copy))
        await marker(b, laptop)
        assert copies(laptop) == [], [show(e) for e in laptop.inbox]


async def test_disable_stops_copies(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        phone, laptop = await peers.devices("phone", "laptop")
        b = await peers.online_user()
        await enable(laptop)
        await enable(laptop)  # §10.1: enabling twice is no error
        reply = await laptop.iq(f"<disable xmlns='{NS_CARBONS}'/>", type_="set")
        assert reply.get("type") == "result", show(reply)
        message_id = await send(b, phone.jid, "after disable")
        await phone.expect(message(id_=message_id))
        await marker(b, laptop)
        assert copies(laptop) == [], [show(e) for e in laptop.inbox]


async def test_another_account_cannot_switch_my_carbons(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        reply = await b.iq(f"<enable xmlns='{NS_CARBONS}'/>", type_="set", to=a.bare)
        assert error_condition(reply) == "not-allowed", show(reply)


async def test_forged_carbons_are_refused(server: ServerProcess, peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, other = await peers.devices("phone", "laptop")
        m = await peers.online_user()
        await enable(a)
        forged = (
            f"<received xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>"
            f"<message xmlns='jabber:client' from='boss@localhost/office' to='{a.jid}' type='chat'>"
            "<body>wire the money</body></message></forwarded></received>"
        )
        forged_id = await send(m, a.jid, "", forged)
        bounce = await m.expect(message(id_=forged_id))
        assert error_condition(bounce) == "not-acceptable", show(bounce)
        # Not even the account's own other resource may forge one (it is not the bare JID).
        own_id = await send(other, a.jid, "", forged.replace("received", "sent"))
        bounce = await other.expect(message(id_=own_id))
        assert error_condition(bounce) == "not-acceptable", show(bounce)
        await marker(m, a)
        assert all(e.get("id") not in (forged_id, own_id) for e in a.inbox), [show(e) for e in a.inbox]
        assert copies(a) == [], [show(e) for e in a.inbox]


def test_slixmpp_sees_carbons_of_both_directions(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0280")
        async with (
            clients.slixmpp(alice, "pc", plugins=plugins, send_presence=True) as pc,
            clients.slixmpp(alice, "phone", plugins=plugins, send_presence=True) as phone,
            clients.slixmpp(bob, "desk", send_presence=True) as b,
        ):  # fmt: skip
            await pc.plugin["xep_0280"].enable()
            received = event_queue(pc, "carbon_received")
            sent = event_queue(pc, "carbon_sent")
            b.send_message(mto=f"{alice}@localhost/phone", mbody="to your phone", mtype="chat")
            carbon = await asyncio.wait_for(received.get(), TIMEOUT)
            assert carbon["carbon_received"]["body"] == "to your phone"
            assert str(carbon["carbon_received"]["from"]) == f"{bob}@localhost/desk"
            phone.send_message(mto=f"{bob}@localhost", mbody="answered on the phone", mtype="chat")
            carbon = await asyncio.wait_for(sent.get(), TIMEOUT)
            assert carbon["carbon_sent"]["body"] == "answered on the phone"
            assert str(carbon["carbon_sent"]["to"]) == f"{bob}@localhost"

    run(scenario())
