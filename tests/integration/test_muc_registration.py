"""Registering with a room (XEP-0045 §7.10, §7.12) and muc#roomconfig_presencebroadcast, on a
two-worker node: the rooms live on worker 1 and the clients' sessions on worker 0, so every
request crosses the mesh. Raw XML where the bytes matter, slixmpp (its XEP-0077 and XEP-0030
plugins, as a client would fetch the form and discover its nick) for the client's view.

The last test has a server of its own: the registration outlives a restart of the node and the
death of the room's worker (the room comes back at its next home from storage).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import slixmpp
import trio
from slixmpp.exceptions import PresenceError

from imactor.cluster.placement import home
from tests.integration.conftest import PASSWORD, Accounts
from tests.support.chaos import kill_worker, land_on, wait_for_workers, wait_mesh_views
from tests.support.clients import Clients, run
from tests.support.muc import (
    admin,
    configure,
    create_instant,
    from_room,
    join,
    join_error,
    muc_item,
    status_codes,
)
from tests.support.peer import C, Element, Peer, error_condition, show
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import WORKERS_TIMEOUT as TIMEOUT

pytestmark = pytest.mark.cluster

WORKERS = 2
SERVICE = "conference.localhost"
NS_REGISTER = "jabber:iq:register"
NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
WAIT = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's two-worker node (the `accounts` and `clients` fixtures use it)."""
    with running_server(tmp_path_factory.mktemp("node"), workers=WORKERS) as process:
        yield process


def room_homed_on(worker: int, prefix: str) -> str:
    name = next(f"{prefix}{n}" for n in range(10_000) if home("room", f"{prefix}{n}", (0, 1)) == worker)
    return f"{name}@{SERVICE}"


async def peer_on(server: ServerProcess, worker: int, username: str) -> Peer:
    open_ = partial(Peer.online, server.c2s_port, username, PASSWORD, "r")
    return await land_on(server.status_socket, worker, open_, Peer.aclose)


def register_form(nick: str) -> str:
    return (
        f"<query xmlns='{NS_REGISTER}'><x xmlns='{NS_DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{NS_MUC_REGISTER}</value></field>"
        f"<field var='muc#register_first'><value>Given</value></field>"
        f"<field var='muc#register_roomnick'><value>{nick}</value></field></x></query>"
    )


async def register(peer: Peer, room: str, nick: str) -> Element:
    return await peer.iq(register_form(nick), type_="set", to=room)


async def unregister(peer: Peer, room: str) -> Element:
    return await peer.iq(f"<query xmlns='{NS_REGISTER}'><remove/></query>", type_="set", to=room)


async def reserved_nick(peer: Peer, room: str) -> str | None:
    """§7.12: the nick the room keeps for `peer`, by disco#info on node x-roomuser-item."""
    reply = await peer.iq(f"<query xmlns='{NS_DISCO_INFO}' node='x-roomuser-item'/>", to=room)
    assert reply.get("type") == "result", show(reply)
    identity = reply.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    return identity.get("name") if identity is not None else None


def ok(reply: Element) -> None:
    assert reply.get("type") == "result", show(reply)


async def test_register_reserve_and_unregister_across_workers(
    server: ServerProcess, accounts: Accounts
) -> None:
    owner_name, bob_name, carol_name = accounts(3)
    room = room_homed_on(1, "registry")
    with trio.fail_after(TIMEOUT):
        await wait_for_workers(server.status_socket, WORKERS)
        owner = await peer_on(server, 0, owner_name)
        bob = await peer_on(server, 0, bob_name)
        carol = await peer_on(server, 0, carol_name)
        await create_instant(owner, room, "owner")

        info = await bob.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=room)
        features = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
        assert {NS_REGISTER, "urn:xmpp:occupant-id:0"} <= features

        form = await bob.iq(f"<query xmlns='{NS_REGISTER}'/>", to=room)
        ok(form)
        fields = {f.get("var") for f in form.iter(f"{{{NS_DATA}}}field")}
        assert {"FORM_TYPE", "muc#register_roomnick", "muc#register_first", "muc#register_last"} <= fields
        assert await reserved_nick(bob, room) is None

        ok(await register(bob, room, "bobby"))
        assert await reserved_nick(bob, room) == "bobby"
        again = await bob.iq(f"<query xmlns='{NS_REGISTER}'/>", to=room)
        assert again.find(f"{{{NS_REGISTER}}}query/{{{NS_REGISTER}}}registered") is not None, show(again)
        assert again.findtext(f"{{{NS_REGISTER}}}query/{{{NS_REGISTER}}}username") == "bobby"
        # §7.10 errors: another nick while registered; a nick someone else reserved
        assert error_condition(await register(bob, room, "robert")) == "conflict"
        assert error_condition(await register(carol, room, "bobby")) == "conflict"
        # the owner's member list has Bob, with his nick (§9.5)
        members = await owner.iq(
            "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query>",
            to=room,
        )
        (item,) = members.iter("{http://jabber.org/protocol/muc#admin}item")
        assert (item.get("jid"), item.get("nick")) == (f"{bob_name}@localhost", "bobby")

        # the reserved nick is enforced: Carol may not enter with it, Bob may
        assert await join_error(carol, room, "bobby") == "conflict"
        entered = await join(bob, room, "bobby")
        assert muc_item(entered.self_presence).get("affiliation") == "member"

        # unregistering frees the nick and ends the membership, which the room shows
        ok(await unregister(bob, room))
        update = await owner.expect(
            lambda e: e.get("from") == f"{room}/bobby" and muc_item(e).get("affiliation") == "none"
        )
        assert update.get("type") is None, show(update)  # an open room: he stays
        assert await reserved_nick(bob, room) is None
        assert error_condition(await unregister(bob, room)) == "item-not-found"
        ok(await register(carol, room, "carol"))
        for peer in (owner, bob, carol):
            await peer.aclose()


async def test_bad_registrations(server: ServerProcess, accounts: Accounts) -> None:
    owner_name, guest_name = accounts(2)
    room = room_homed_on(1, "closed")
    with trio.fail_after(TIMEOUT):
        owner = await Peer.online(server.c2s_port, owner_name, PASSWORD)
        guest = await Peer.online(server.c2s_port, guest_name, PASSWORD)
        missing = f"nosuchroom@{SERVICE}"
        assert (
            error_condition(await guest.iq(f"<query xmlns='{NS_REGISTER}'/>", to=missing)) == "item-not-found"
        )
        assert error_condition(await register(guest, missing, "guest")) == "item-not-found"
        await create_instant(owner, room, "owner")
        no_form = f"<query xmlns='{NS_REGISTER}'><username>guest</username></query>"
        assert error_condition(await guest.iq(no_form, type_="set", to=room)) == "bad-request"
        no_var = f"<query xmlns='{NS_REGISTER}'><x xmlns='{NS_DATA}' type='submit'><field/></x></query>"
        assert error_condition(await guest.iq(no_var, type_="set", to=room)) == "bad-request"
        assert error_condition(await register(guest, room, "   ")) == "not-acceptable"
        assert error_condition(await unregister(guest, room)) == "item-not-found"
        # members-only: an outsider may not register, until the owner opens registration
        ok(await configure(owner, room, {"muc#roomconfig_membersonly": "1"}))
        assert error_condition(await guest.iq(f"<query xmlns='{NS_REGISTER}'/>", to=room)) == "not-allowed"
        assert error_condition(await register(guest, room, "guest")) == "not-allowed"
        assert await join_error(guest, room, "guest") == "registration-required"
        ok(await configure(owner, room, {"x-muc#roomconfig_registration": "1"}))
        ok(await register(guest, room, "guest"))
        entered = await join(guest, room, "guest")
        assert muc_item(entered.self_presence).get("affiliation") == "member"
        # a banned user may not register
        ok(await admin(owner, room, f"<item affiliation='outcast' jid='{guest_name}@localhost'/>"))
        assert error_condition(await register(guest, room, "again")) == "not-allowed"
        for peer in (owner, guest):
            await peer.aclose()


def test_slixmpp_fetches_the_form_and_discovers_the_reserved_nick(
    clients: Clients, accounts: Accounts
) -> None:
    """A client's view: slixmpp's XEP-0077 plugin fetches the room's form and submits it,
    XEP-0030 finds the reserved nick (§7.12), and XEP-0045 joining with another's reserved nick fails."""
    alice, bob, carol = accounts(3)
    room = slixmpp.JID(room_homed_on(1, "slixreg"))
    plugins = ("xep_0030", "xep_0004", "xep_0045", "xep_0077")

    async def scenario() -> None:
        async with clients.slixmpp(alice, plugins=plugins) as a, clients.slixmpp(bob, plugins=plugins) as b:
            muc = a.plugin["xep_0045"]
            await muc.join_muc_wait(room, "alice", maxstanzas=0, timeout=WAIT)
            config = await muc.get_room_config(room, timeout=WAIT)
            await muc.set_room_config(room, config, timeout=WAIT)
            answer = await b.plugin["xep_0077"].get_registration(jid=room, timeout=WAIT)
            form = answer["register"]["form"]
            assert form["type"] == "form"
            assert "muc#register_roomnick" in form.get_fields()
            submit = b.Iq()
            submit["type"], submit["to"] = "set", room
            filled = b.plugin["xep_0004"].make_form(ftype="submit")
            filled.add_field(var="FORM_TYPE", ftype="hidden", value=NS_MUC_REGISTER)
            filled.add_field(var="muc#register_roomnick", value="bobster")
            submit["register"].append(filled)
            await submit.send(timeout=WAIT)
            info = await b.plugin["xep_0030"].get_info(jid=room, node="x-roomuser-item", timeout=WAIT)
            assert [i[3] for i in info["disco_info"]["identities"]] == ["bobster"]
            async with clients.slixmpp(carol, plugins=plugins) as c:
                with pytest.raises(PresenceError) as refused:
                    await c.plugin["xep_0045"].join_muc_wait(room, "bobster", maxstanzas=0, timeout=WAIT)
            assert refused.value.presence["error"]["condition"] == "conflict"

    run(scenario())


async def test_presence_broadcast_hides_visitors(server: ServerProcess, accounts: Accounts) -> None:
    owner_name, visitor_name = accounts(2)
    room = room_homed_on(1, "quiet")
    with trio.fail_after(TIMEOUT):
        owner = await Peer.online(server.c2s_port, owner_name, PASSWORD)
        visitor = await Peer.online(server.c2s_port, visitor_name, PASSWORD)
        await create_instant(owner, room, "owner")
        form = await owner.iq("<query xmlns='http://jabber.org/protocol/muc#owner'/>", to=room)
        (field,) = [
            f for f in form.iter(f"{{{NS_DATA}}}field") if f.get("var") == "muc#roomconfig_presencebroadcast"
        ]
        assert field.get("type") == "list-multi"
        quiet: dict[str, str | list[str]] = {
            "muc#roomconfig_moderatedroom": "1",
            "muc#roomconfig_presencebroadcast": ["moderator", "participant"],
        }
        ok(await configure(owner, room, quiet))
        bad = await configure(owner, room, {"muc#roomconfig_presencebroadcast": ["moderator", "king"]})
        assert error_condition(bad) == "bad-request"

        entered = await join(visitor, room, "shy")
        assert muc_item(entered.self_presence).get("role") == "visitor"
        assert [p.get("from") for p in entered.presences] == [f"{room}/owner"]
        # The owner learns of the visitor only once he has voice; the message after the join
        # proves that no presence of his came before.
        await owner.send(f"<message to='{room}' type='groupchat'><body>marker</body></message>")
        earlier = await owner.before(
            lambda e: from_room(room, "groupchat")(e) and e.findtext(f"{C}body") == "marker"
        )
        assert [e for e in earlier if e.get("from") == f"{room}/shy"] == []
        ok(await admin(owner, room, "<item nick='shy' role='participant'/>"))
        shown = await owner.expect(lambda e: e.get("from") == f"{room}/shy")
        assert (shown.get("type"), muc_item(shown).get("role")) == (None, "participant")
        ok(await admin(owner, room, "<item nick='shy' role='visitor'/>"))
        hidden = await owner.expect(lambda e: e.get("from") == f"{room}/shy")
        assert hidden.get("type") == "unavailable", show(hidden)
        own = await visitor.expect(
            lambda e: e.get("from") == f"{room}/shy" and muc_item(e).get("role") == "visitor"
        )
        assert "110" in status_codes(own)
        for peer in (owner, visitor):
            await peer.aclose()


async def test_a_registration_outlives_a_restart_and_its_worker(tmp_path: Path) -> None:
    users = [(name, PASSWORD) for name in ("keeper", "holder", "other")]
    room = room_homed_on(1, "lasting")
    with running_server(tmp_path, users=users, workers=WORKERS) as node, trio.fail_after(TIMEOUT):
        await wait_for_workers(node.status_socket, WORKERS)
        keeper = await peer_on(node, 0, "keeper")
        holder = await peer_on(node, 0, "holder")
        await create_instant(keeper, room, "keeper")
        ok(await configure(keeper, room, {"muc#roomconfig_persistentroom": "1"}))
        ok(await register(holder, room, "held"))
        for peer in (keeper, holder):
            await peer.aclose()
    with running_server(tmp_path, workers=WORKERS) as node, trio.fail_after(TIMEOUT):
        path = node.status_socket
        await wait_for_workers(path, WORKERS)
        holder = await peer_on(node, 0, "holder")
        other = await peer_on(node, 0, "other")
        assert await reserved_nick(holder, room) == "held"
        await kill_worker(path, WORKERS, index=1)
        await wait_mesh_views(path, live=[0, 1])
        # the room came back at its home from storage, with the registration
        assert await reserved_nick(holder, room) == "held"
        assert await join_error(other, room, "held") == "conflict"
        assert muc_item((await join(holder, room, "held")).self_presence).get("affiliation") == "member"
        for peer in (holder, other):
            await peer.aclose()
