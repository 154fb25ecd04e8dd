"""RFC 6121 §3 and Appendix A: presence subscriptions end to end, as both parties see them.

Each test logs its accounts in over real sockets and follows the stanzas and roster pushes both
sides receive. "Never delivered" is shown with a marker message that reaches the recipient
through the same user actor afterwards: what arrived before the marker is checked.
"""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.roster
import pytest
import trio

from tests.integration.conftest import PASSWORD, Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import (
    Peer,
    Peers,
    any_presence,
    bare,
    item_state,
    new_id,
    nothing_before_marker,
    presence,
    push_until,
    show,
    subscribe,
)
from tests.support.server import ServerProcess, add_users
from tests.support.timeouts import TIMEOUT


@pytest.fixture(scope="module")
def server(server_on_each_backend: ServerProcess) -> ServerProcess:
    """Subscription states are stored: these tests run on SQLite and on PostgreSQL."""
    return server_on_each_backend


async def roster_state(peer: Peer, jid: str) -> tuple[str, str | None] | None:
    return item_state((await peer.roster_items()).get(jid))


async def test_request_then_approval(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2, resource="pc")

        # A.2.1 outbound subscribe from None: None + Pending Out, pushed with ask='subscribe'.
        await a.send(f"<presence to='{b.bare}/pc' type='subscribe' id='sub1'/>")
        assert item_state(await a.push_for(b.bare)) == ("none", "subscribe")
        # §3.1.3: delivered to the contact from the user's bare JID, to the contact's bare JID.
        request = await b.expect(presence(from_=a.bare, type_="subscribe"))
        assert request.get("to") == b.bare, show(request)
        assert request.get("id") == "sub1"
        # The request alone does not put the user into the contact's roster.
        assert a.bare not in await b.roster_items()
        assert await roster_state(a, b.bare) == ("none", "subscribe")

        # §3.1.5 / A.2.3 outbound subscribed from None + Pending In: From.
        await b.send(f"<presence to='{a.bare}' type='subscribed'/>")
        assert item_state(await b.push_for(a.bare)) == ("from", None)
        # §3.1.6 / A.3.3 inbound subscribed at None + Pending Out: To.
        approval = await a.expect(presence(from_=b.bare, type_="subscribed"))
        assert approval.get("to") == a.bare, show(approval)
        assert item_state(await a.push_for(b.bare)) == ("to", None)
        # The contact's server then sends the contact's current presence to the user.
        await a.expect(presence(from_=b.jid))
        assert await roster_state(a, b.bare) == ("to", None)
        assert await roster_state(b, a.bare) == ("from", None)


async def test_mutual_subscription_is_both(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await subscribe(a, b)
        # A.2.1 from From: From + Pending Out; A.3.3: To + From = Both.
        await b.send(f"<presence to='{a.bare}' type='subscribe'/>")
        assert item_state(await b.push_for(a.bare)) == ("from", "subscribe")
        await a.expect(presence(from_=b.bare, type_="subscribe"))
        await a.send(f"<presence to='{b.bare}' type='subscribed'/>")
        await push_until(a, b.bare, ("both", None))
        await b.expect(presence(from_=a.bare, type_="subscribed"))
        assert item_state(await b.push_for(a.bare)) == ("both", None)
        await b.expect(presence(from_=a.jid))
        assert await roster_state(a, b.bare) == ("both", None)
        assert await roster_state(b, a.bare) == ("both", None)


async def test_unsubscribe(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.friends()
        # §3.3: Alice unsubscribes from Bob's presence. Both → From on her side.
        await a.send(f"<presence to='{b.bare}' type='unsubscribe'/>")
        assert item_state(await a.push_for(b.bare)) == ("from", None)
        # §3.3.3 / A.3.2: Both → To on his side, the unsubscribe is delivered...
        await b.expect(presence(from_=a.bare, type_="unsubscribe"))
        assert item_state(await b.push_for(a.bare)) == ("to", None)
        # ...and his server tells her that his resources are unavailable to her now.
        await a.expect(presence(from_=b.jid, type_="unavailable"))
        assert await roster_state(a, b.bare) == ("from", None)
        assert await roster_state(b, a.bare) == ("to", None)

        # She no longer gets his presence; he still gets hers.
        await b.send("<presence><show>away</show></presence>")
        await b.expect(presence(from_=b.jid))
        await nothing_before_marker(b, a, any_presence)
        await a.send("<presence><show>dnd</show></presence>")
        await b.expect(presence(from_=a.jid))


async def test_unsubscribed_cancels_a_subscription(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await subscribe(a, b)
        # §3.2: Bob cancels Alice's subscription to his presence.
        await b.send(f"<presence to='{a.bare}' type='unsubscribed'/>")
        assert item_state(await b.push_for(a.bare)) == ("none", None)
        await a.expect(presence(from_=b.bare, type_="unsubscribed"))
        assert item_state(await a.push_for(b.bare)) == ("none", None)
        # §3.2.2: his server sends his unavailable presence to her.
        await a.expect(presence(from_=b.jid, type_="unavailable"))
        await b.send("<presence><show>chat</show></presence>")
        await b.expect(presence(from_=b.jid))
        await nothing_before_marker(b, a, any_presence)


async def test_unsubscribed_denies_a_request(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await a.send(f"<presence to='{b.bare}' type='subscribe'/>")
        await a.push_for(b.bare)
        await b.expect(presence(from_=a.bare, type_="subscribe"))
        await b.send(f"<presence to='{a.bare}' type='unsubscribed'/>")
        await a.expect(presence(from_=b.bare, type_="unsubscribed"))
        assert item_state(await a.push_for(b.bare)) == ("none", None)
        # The refused request leaves no trace in Bob's roster (it was never an item there).
        assert a.bare not in await b.roster_items()
        # A request made again is delivered again.
        await a.send(f"<presence to='{b.bare}' type='subscribe'/>")
        await b.expect(presence(from_=a.bare, type_="subscribe"))


async def test_a_request_leaves_a_listed_contact_on_the_roster(peers: Peers) -> None:
    """An item the user put on the roster with no name and no group (subscription none) stays
    there when the contact then asks to subscribe: only an item that holds nothing but the
    contact's request is hidden (RFC 6121 §3.1.3). It used to vanish from roster gets, without a
    push, as soon as the request arrived; likewise an item left at none by a refused request."""
    with trio.fail_after(TIMEOUT):
        a, b, c = await peers.online_users(3)
        # A lists B by a bare roster set; A's own request to C is refused.
        result = await a.roster_set(f"<item jid='{b.bare}'/>")
        assert result.get("type") == "result", show(result)
        assert item_state(await a.push_for(b.bare)) == ("none", None)
        await a.send(f"<presence to='{c.bare}' type='subscribe'/>")
        assert item_state(await a.push_for(c.bare)) == ("none", "subscribe")
        await c.expect(presence(from_=a.bare, type_="subscribe"))
        await c.send(f"<presence to='{a.bare}' type='unsubscribed'/>")
        assert item_state(await a.push_for(c.bare)) == ("none", None)

        # Now both ask A.
        for contact in (b, c):
            await contact.send(f"<presence to='{a.bare}' type='subscribe'/>")
            await a.expect(presence(from_=contact.bare, type_="subscribe"))
        items = await a.roster_items()
        assert item_state(items.get(b.bare)) == ("none", None), "B left the roster"
        assert item_state(items.get(c.bare)) == ("none", None), "C left the roster"

        # And approving one is pushed as the item it is.
        await a.send(f"<presence to='{b.bare}' type='subscribed'/>")
        assert item_state(await a.push_for(b.bare)) == ("from", None)


async def test_pre_approval(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        # §3.4: Bob approves before any request: an item with approved='true', nothing is sent.
        await b.send(f"<presence to='{a.bare}' type='subscribed'/>")
        pushed = await b.push_for(a.bare)
        assert item_state(pushed) == ("none", None)
        assert pushed.get("approved") == "true", show(pushed)
        await nothing_before_marker(b, a, any_presence)

        # Alice's later request is approved by Bob's server at once.
        await a.send(f"<presence to='{b.bare}' type='subscribe'/>")
        await a.expect(presence(from_=b.bare, type_="subscribed"))
        pushed = await a.push_for(b.bare)
        while pushed.get("subscription") != "to":
            pushed = await a.push_for(b.bare)
        await a.expect(presence(from_=b.jid))  # and his presence follows
        pushed = await b.push_for(a.bare)
        assert item_state(pushed) == ("from", None)
        assert pushed.get("approved") is None, "the approval is used up"
        # Bob never saw the request.
        await nothing_before_marker(a, b, presence(type_="subscribe"))


async def test_pre_approval_can_be_withdrawn(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await b.send(f"<presence to='{a.bare}' type='subscribed'/>")
        assert (await b.push_for(a.bare)).get("approved") == "true"
        # A.2.4: unsubscribed cancels the pre-approval (nothing is sent to Alice).
        await b.send(f"<presence to='{a.bare}' type='unsubscribed'/>")
        pushed = await b.push_for(a.bare)
        assert pushed.get("approved") is None, show(pushed)
        await b.sync()
        await nothing_before_marker(b, a, any_presence)
        # Alice's request now goes to Bob like any other.
        await a.send(f"<presence to='{b.bare}' type='subscribe'/>")
        await b.expect(presence(from_=a.bare, type_="subscribe"))
        assert await roster_state(a, b.bare) == ("none", "subscribe")


async def test_simultaneous_requests(peers: Peers) -> None:
    """Both ask before either answers: A.3.1 None + Pending Out + Pending In, then Both."""
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await a.send(f"<presence to='{b.bare}' type='subscribe'/>")
        await b.expect(presence(from_=a.bare, type_="subscribe"))
        await b.send(f"<presence to='{a.bare}' type='subscribe'/>")
        assert item_state(await b.push_for(a.bare)) == ("none", "subscribe")
        await a.expect(presence(from_=b.bare, type_="subscribe"))
        assert await roster_state(a, b.bare) == ("none", "subscribe")

        # Alice approves: From + Pending Out for her, To + Pending In for him.
        await a.send(f"<presence to='{b.bare}' type='subscribed'/>")
        await push_until(a, b.bare, ("from", "subscribe"))
        await b.expect(presence(from_=a.bare, type_="subscribed"))
        await push_until(b, a.bare, ("to", None))
        # Bob approves: Both on each side.
        await b.send(f"<presence to='{a.bare}' type='subscribed'/>")
        await push_until(b, a.bare, ("both", None))
        await a.expect(presence(from_=b.bare, type_="subscribed"))
        await push_until(a, b.bare, ("both", None))
        await a.expect(presence(from_=b.jid))
        await b.expect(presence(from_=a.jid))
        assert await roster_state(a, b.bare) == ("both", None)
        assert await roster_state(b, a.bare) == ("both", None)


async def test_subscribe_when_already_subscribed_is_answered_by_server(
    server: ServerProcess, peers: Peers
) -> None:
    """§3.1.3: a request from a user who already has a subscription gets an automatic 'subscribed'.

    The user's side lost the subscription (the account was deleted and registered again), the
    contact's side still says From; the new request is answered without bothering the contact.
    """
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await subscribe(a, b)
        reply = await a.iq("<query xmlns='jabber:iq:register'><remove/></query>", type_="set")
        assert reply.get("type") == "result", show(reply)
        await a.raw.wait_closed()
        await trio.to_thread.run_sync(add_users, server.config_path, [(a.username, PASSWORD)])
        if await roster_state(b, a.bare) != ("from", None):
            raise AssertionError("precondition: the contact still holds the old subscription")

        a = await peers.online(a.username)  # the same account, registered again
        assert await a.roster_items() == {}
        await a.send(f"<presence to='{b.bare}' type='subscribe'/>")
        await a.expect(presence(from_=b.bare, type_="subscribed"))
        pushed = await a.push_for(b.bare)
        while pushed.get("subscription") != "to":
            pushed = await a.push_for(b.bare)
        await nothing_before_marker(a, b, any_presence)


async def test_pending_request_is_delivered_at_each_login(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        await a.send(
            f"<presence to='{bare(bob)}' type='subscribe'><status>hi, it is Alice</status></presence>"
        )
        assert item_state(await a.push_for(bare(bob))) == ("none", "subscribe")

        # Bob was offline; the request waits for his next available resource (§3.1.3).
        for resource in ("first", "second"):
            b = await peers.login(bob, resource)
            assert bare(alice) not in await b.roster_items()
            await b.send("<presence/>")
            request = await b.expect(presence(from_=bare(alice), type_="subscribe"))
            assert request.get("to") == bare(bob), show(request)
            await b.drop()

        b = await peers.online(bob, "third")
        await b.expect(presence(from_=bare(alice), type_="subscribe"))
        await b.send(f"<presence to='{bare(alice)}' type='subscribed'/>")
        await a.expect(presence(from_=bare(bob), type_="subscribed"))
        assert item_state(await a.push_for(bare(bob))) == ("to", None)
        await b.aclose()

        # Answered: not delivered any more.
        b = await peers.login(bob, "fourth")
        await b.available()
        await nothing_before_marker(a, b, presence(type_="subscribe"))


async def test_subscribe_to_nonexistent_user(peers: Peers) -> None:
    ghost = bare("nobody-" + new_id())
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user()
        await a.send(f"<presence to='{ghost}' type='subscribe'/>")
        assert item_state(await a.push_for(ghost)) == ("none", "subscribe")
        # §8.5.1 / §3.1.3: the server answers for the missing account.
        refusal = await a.expect(presence(from_=ghost, type_="unsubscribed"))
        assert refusal.get("to") == a.bare, show(refusal)
        assert item_state(await a.push_for(ghost)) == ("none", None)


async def test_roster_removal_cancels_both_directions(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        a, b = await peers.friends()
        # §2.5.2: removing a Both item sends unsubscribe and unsubscribed.
        reply = await a.roster_set(f"<item jid='{b.bare}' subscription='remove'/>")
        assert reply.get("type") == "result", show(reply)
        assert (await a.push_for(b.bare)).get("subscription") == "remove"
        await b.expect(presence(from_=a.bare, type_="unsubscribe"))
        await b.expect(presence(from_=a.bare, type_="unsubscribed"))
        # She no longer sees him and he no longer sees her.
        await b.expect(presence(from_=a.jid, type_="unavailable"))
        await a.expect(presence(from_=b.jid, type_="unavailable"))
        pushed = await b.push_for(a.bare)
        while item_state(pushed) != ("none", None):
            pushed = await b.push_for(a.bare)
        assert b.bare not in await a.roster_items()
        assert await roster_state(b, a.bare) == ("none", None)

        # Presence stops in both directions.
        await a.send("<presence><show>away</show></presence>")
        await a.expect(presence(from_=a.jid))
        await b.send("<presence><show>away</show></presence>")
        await b.expect(presence(from_=b.jid))
        await nothing_before_marker(a, b, any_presence)
        await nothing_before_marker(b, a, any_presence)


async def test_removing_a_pending_item_withdraws_the_request(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.online(alice)
        await a.send(f"<presence to='{bare(bob)}' type='subscribe'/>")
        await a.push_for(bare(bob))
        await a.roster_set(f"<item jid='{bare(bob)}' subscription='remove'/>")
        assert (await a.push_for(bare(bob))).get("subscription") == "remove"
        # Bob logs in later: the withdrawn request is not delivered (A.3.2: unsubscribe cancels it).
        b = await peers.online(bob)
        await nothing_before_marker(a, b, presence(type_="subscribe"))
        assert bare(alice) not in await b.roster_items()


# ---- real client libraries ----------------------------------------------------------------------


def test_slixmpp_mutual_subscription(clients: Clients, accounts: Accounts) -> None:
    """slixmpp approves requests and subscribes back on its own (auto_authorize, auto_subscribe)."""
    alice, bob = accounts(2)

    async def wait_subscription(xmpp: object, queue: asyncio.Queue[object], jid: str, wanted: str) -> None:
        roster = xmpp.client_roster  # type: ignore[attr-defined]
        while jid not in roster or roster[jid]["subscription"] != wanted:
            await asyncio.wait_for(queue.get(), TIMEOUT)

    async def scenario() -> None:
        async with (
            clients.slixmpp(alice) as a,
            clients.slixmpp(bob) as b,
        ):
            for xmpp in (a, b):
                xmpp.auto_authorize = True
                xmpp.auto_subscribe = True
                await xmpp.get_roster()
                xmpp.send_presence()
            a_updates = event_queue(a, "roster_update")
            b_updates = event_queue(b, "roster_update")
            available = event_queue(a, "got_online")
            a.send_presence_subscription(pto=bare(bob))
            await wait_subscription(a, a_updates, bare(bob), "both")
            await wait_subscription(b, b_updates, bare(alice), "both")
            while True:  # Bob's presence reaches Alice once she is subscribed to it
                online = await asyncio.wait_for(available.get(), TIMEOUT)
                if online["from"].bare == bare(bob):
                    break

    run(scenario())


def test_aioxmpp_subscribe_and_approve(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with (
            clients.aioxmpp(alice) as a,
            clients.aioxmpp(bob) as b,
        ):
            roster_a = a.summon(aioxmpp.roster.RosterClient)
            roster_b = b.summon(aioxmpp.roster.RosterClient)
            await roster_a._request_initial_roster()
            await roster_b._request_initial_roster()
            b.summon(aioxmpp.PresenceServer).set_presence(
                aioxmpp.PresenceState(True), "here"
            )  # the request needs an available resource
            requested: asyncio.Future[aioxmpp.Presence] = loop.create_future()
            roster_b.on_subscribe.connect(lambda stanza: requested.done() or requested.set_result(stanza))
            changed: asyncio.Queue[aioxmpp.roster.Item] = asyncio.Queue()
            roster_a.on_entry_subscription_state_changed.connect(changed.put_nowait)

            bob_jid = aioxmpp.JID.fromstr(bare(bob))
            roster_a.subscribe(bob_jid)
            stanza = await asyncio.wait_for(requested, TIMEOUT)
            assert stanza.from_ == aioxmpp.JID.fromstr(bare(alice))
            roster_b.approve(stanza.from_)
            while True:
                item = await asyncio.wait_for(changed.get(), TIMEOUT)
                if item.jid == bob_jid and item.subscription == "to":
                    break
            assert roster_a.items[bob_jid].ask is None
            alice_item = roster_b.items[aioxmpp.JID.fromstr(bare(alice))]
            assert alice_item.subscription == "from"

    run(scenario())
