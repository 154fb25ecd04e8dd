"""RFC 6121 §2: roster get, set, push, remove, versioning and errors, against the real server."""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.roster
import pytest
import trio

from tests.integration.conftest import Accounts
from tests.support.clients import Clients, event_queue, run
from tests.support.peer import (
    NS_ROSTER,
    Peers,
    error_condition,
    message,
    pushed_item,
    roster_push,
    show,
)
from tests.support.server import ServerProcess
from tests.support.timeouts import TIMEOUT


@pytest.fixture(scope="module")
def server(server_on_each_backend: ServerProcess) -> ServerProcess:
    """Rosters are stored: these tests run on SQLite and on PostgreSQL."""
    return server_on_each_backend


def groups_of(item: object) -> list[str]:
    return sorted(g.text or "" for g in item.findall(f"{{{NS_ROSTER}}}group"))  # type: ignore[attr-defined]


async def test_get_empty_then_with_items(peers: Peers, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        got = await a.roster()
        assert got is not None
        ver, items = got
        assert items == {}
        assert ver, "the server supports versioning (§2.6): every result carries ver"

        reply = await a.roster_set(
            f"<item jid='{bob}@localhost' name='Bob'><group>Friends</group><group>Work</group></item>"
        )
        assert reply.get("type") == "result", show(reply)
        assert len(reply) == 0, "a roster set result carries no payload (§2.3.2)"
        reply = await a.roster_set(f"<item jid='{carol}@localhost/ignored'/>")
        assert reply.get("type") == "result", show(reply)

        items = await a.roster_items()
        assert sorted(items) == [f"{bob}@localhost", f"{carol}@localhost"], "item JIDs are bare"
        item = items[f"{bob}@localhost"]
        assert item.get("name") == "Bob"
        assert item.get("subscription") == "none"
        assert item.get("ask") is None
        assert groups_of(item) == ["Friends", "Work"]
        assert items[f"{carol}@localhost"].get("name") is None


async def test_update_replaces_name_and_groups(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        await a.roster()
        await a.roster_set(f"<item jid='{bob}@localhost' name='Bob'><group>Friends</group></item>")
        await a.push_for(f"{bob}@localhost")
        reply = await a.roster_set(f"<item jid='{bob}@localhost' name='Robert'><group>Work</group></item>")
        assert reply.get("type") == "result", show(reply)
        pushed = await a.push_for(f"{bob}@localhost")
        assert pushed.get("name") == "Robert"
        assert groups_of(pushed) == ["Work"]
        item = (await a.roster_items())[f"{bob}@localhost"]
        assert item.get("name") == "Robert"
        assert groups_of(item) == ["Work"], "groups are replaced, not merged (§2.4)"
        # An update without name or groups clears them.
        await a.roster_set(f"<item jid='{bob}@localhost'/>")
        item = (await a.roster_items())[f"{bob}@localhost"]
        assert item.get("name") is None
        assert groups_of(item) == []


async def test_push_reaches_every_interested_resource(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        pc = await peers.login(alice, "pc")
        phone = await peers.login(alice, "phone")
        tv = await peers.login(alice, "tv")  # never asks for the roster
        await pc.roster()
        await phone.roster()
        reply = await pc.roster_set(f"<item jid='{bob}@localhost' name='Bob'/>")
        assert reply.get("type") == "result", show(reply)
        for resource in (pc, phone):
            push = await resource.expect(roster_push)
            assert push.get("to") == resource.jid, show(push)
            assert push.get("from") in (None, resource.bare), "a push comes from the account (§2.1.6)"
            assert push.get("id"), show(push)
            query = push.find(f"{{{NS_ROSTER}}}query")
            assert query is not None, show(push)
            assert query.get("ver"), show(push)
            item = pushed_item(push)
            assert (item.get("jid"), item.get("name"), item.get("subscription")) == (
                f"{bob}@localhost", "Bob", "none",
            )  # fmt: skip
            # The client acknowledges the push; the server must swallow the result.
            await resource.send(f"<iq type='result' id='{push.get('id')}'/>")
        # The tv never requested the roster: no push for it. The marker goes through the same
        # user actor after the push was handed out.
        await pc.send(f"<message to='{tv.jid}' id='marker'><body>marker</body></message>")
        earlier = await tv.before(message(id_="marker"))
        assert not [e for e in earlier if roster_push(e)], [show(e) for e in earlier]


async def test_client_cannot_set_subscription_or_ask(peers: Peers, accounts: Accounts) -> None:
    alice, bob = accounts(2)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        await a.roster()
        await a.roster_set(f"<item jid='{bob}@localhost' subscription='both' ask='subscribe'/>")
        pushed = await a.push_for(f"{bob}@localhost")
        assert (pushed.get("subscription"), pushed.get("ask")) == ("none", None), show(pushed)
        item = (await a.roster_items())[f"{bob}@localhost"]
        assert (item.get("subscription"), item.get("ask")) == ("none", None), show(item)


async def test_remove(peers: Peers, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        await a.roster()
        await a.roster_set(f"<item jid='{bob}@localhost' name='Bob'/>")
        await a.roster_set(f"<item jid='{carol}@localhost'/>")
        await a.push_for(f"{bob}@localhost")
        await a.push_for(f"{carol}@localhost")
        reply = await a.roster_set(f"<item jid='{bob}@localhost' subscription='remove'/>")
        assert reply.get("type") == "result", show(reply)
        pushed = await a.push_for(f"{bob}@localhost")
        assert pushed.get("subscription") == "remove", show(pushed)
        assert sorted(await a.roster_items()) == [f"{carol}@localhost"]

        # §2.5.3: removing an item that is not there.
        reply = await a.roster_set(f"<item jid='{bob}@localhost' subscription='remove'/>")
        assert error_condition(reply) == "item-not-found", show(reply)
        reply = await a.roster_set("<item jid='nobody@localhost' subscription='remove'/>")
        assert error_condition(reply) == "item-not-found", show(reply)


async def test_versioning(peers: Peers, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        await a.roster_set(f"<item jid='{bob}@localhost'/>")
        got = await a.roster(ver="")  # §2.6.2: empty ver: "I have no cached roster"
        assert got is not None
        v1, items = got
        assert v1
        assert sorted(items) == [f"{bob}@localhost"]

        assert await a.roster(ver=v1) is None, "unchanged version: empty result (§2.6.3)"

        await a.roster_set(f"<item jid='{carol}@localhost' name='Carol'/>")
        push = await a.expect(lambda e: roster_push(e) and pushed_item(e).get("jid") == f"{carol}@localhost")
        v2 = push.find(f"{{{NS_ROSTER}}}query").get("ver")  # type: ignore[union-attr]
        assert v2
        assert v2 != v1

        got = await a.roster(ver=v1)
        assert got is not None, "an old version gets the full roster"
        ver, items = got
        assert ver == v2
        assert sorted(items) == [f"{bob}@localhost", f"{carol}@localhost"]
        assert await a.roster(ver=v2) is None
        # A version the server never issued is treated as stale.
        got = await a.roster(ver="no-such-version")
        assert got is not None
        assert got[0] == v2
        await a.aclose()

        # The version survives a new session (it is stored with the roster).
        a = await peers.login(alice, "again")
        assert await a.roster(ver=v2) is None


async def test_bad_requests(peers: Peers, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        reply = await a.roster_set(f"<item jid='{bob}@localhost'/><item jid='{carol}@localhost'/>")
        assert error_condition(reply) == "bad-request", show(reply)
        reply = await a.roster_set(f"<item jid='{bob}@localhost'><group>A</group><group>A</group></item>")
        assert error_condition(reply) == "bad-request", show(reply)
        reply = await a.roster_set("")
        assert error_condition(reply) == "bad-request", show(reply)
        reply = await a.roster_set("<item jid='not@@valid'/>")
        assert error_condition(reply) in ("jid-malformed", "bad-request"), show(reply)
        assert await a.roster_items() == {}, "nothing was stored by the failed sets"


async def test_someone_elses_roster_is_forbidden(peers: Peers, accounts: Accounts) -> None:
    alice, bob, carol = accounts(3)
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)
        b = await peers.login(bob)
        await b.roster_set(f"<item jid='{carol}@localhost' name='Secret'/>")

        reply = await a.iq(f"<query xmlns='{NS_ROSTER}'/>", to=f"{bob}@localhost")
        assert error_condition(reply) == "forbidden", show(reply)
        assert reply.get("from") == f"{bob}@localhost"
        assert b"Secret" not in show(reply).encode()

        reply = await a.iq(
            f"<query xmlns='{NS_ROSTER}'><item jid='{alice}@localhost'/></query>",
            type_="set",
            to=f"{bob}@localhost",
        )
        assert error_condition(reply) == "forbidden", show(reply)
        assert sorted(await b.roster_items()) == [f"{carol}@localhost"]

        # A roster IQ to the own bare JID is the same as one without 'to'.
        reply = await a.iq(f"<query xmlns='{NS_ROSTER}'/>", to=f"{alice}@localhost")
        assert reply.get("type") == "result", show(reply)


# ---- real client libraries ----------------------------------------------------------------------


def test_slixmpp_roster_roundtrip(clients: Clients, accounts: Accounts) -> None:
    alice, bob = accounts(2)

    async def scenario() -> None:
        async with clients.slixmpp(alice) as xmpp:
            await xmpp.get_roster()
            assert list(xmpp.client_roster) == []
            updates = event_queue(xmpp, "roster_update")
            await xmpp.client_roster.update(f"{bob}@localhost", name="Bob", groups=["Friends"])
            await asyncio.wait_for(updates.get(), TIMEOUT)  # the push
            entry = xmpp.client_roster[f"{bob}@localhost"]
            assert entry["name"] == "Bob"
            assert entry["groups"] == ["Friends"]
            assert entry["subscription"] == "none"

        # A second session sees the stored roster.
        async with clients.slixmpp(alice, "sx2") as xmpp:
            await xmpp.get_roster()
            assert f"{bob}@localhost" in xmpp.client_roster
            assert xmpp.client_roster[f"{bob}@localhost"]["name"] == "Bob"
            removed = event_queue(xmpp, "roster_update")
            await xmpp.del_roster_item(f"{bob}@localhost")
            await asyncio.wait_for(removed.get(), TIMEOUT)
            assert f"{bob}@localhost" not in xmpp.client_roster

    run(scenario())


def test_aioxmpp_push_to_two_resources(clients: Clients, accounts: Accounts) -> None:

    alice, bob = accounts(2)

    async def scenario() -> None:
        async with (
            clients.aioxmpp(alice, "one") as one,
            clients.aioxmpp(alice, "two") as two,
        ):
            roster_one = one.summon(aioxmpp.roster.RosterClient)
            roster_two = two.summon(aioxmpp.roster.RosterClient)
            # Summoned after the stream started, the service missed its automatic initial
            # request (which also marks the resource as interested in pushes): make it now.
            for roster in (roster_one, roster_two):
                await roster._request_initial_roster()
            added: asyncio.Future[aioxmpp.roster.Item] = asyncio.get_running_loop().create_future()
            roster_two.on_entry_added.connect(lambda item: added.done() or added.set_result(item))
            bob_jid = aioxmpp.JID.fromstr(f"{bob}@localhost")
            await roster_one.set_entry(bob_jid, name="Bob", add_to_groups={"Team"})
            item = await asyncio.wait_for(added, TIMEOUT)
            assert item.jid == bob_jid
            assert item.name == "Bob"
            assert item.groups == {"Team"}
            assert item.subscription == "none"
            assert bob_jid in roster_one.items

    run(scenario())
