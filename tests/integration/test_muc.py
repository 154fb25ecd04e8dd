"""Multi-user chat (XEP-0045) end to end: room actors behind the real server, raw XML on the wire.

The room's protocol logic is unit-tested in tests/unit/muc; these tests check what a client sees
through the whole server: routing to `conference.localhost`, the room actor and its storage
(persistence across restarts, the archive), the fan-out, and the service's discovery.
"""

from __future__ import annotations

import itertools

import trio

from tests.integration.conftest import Accounts
from tests.support.muc import (
    NS_DELAY,
    NS_MAM,
    NS_MUC,
    NS_MUC_USER,
    NS_SID,
    UNLOCK,
    admin,
    answer_to,
    configure,
    create_instant,
    create_without_waiting,
    from_room,
    heard,
    join,
    join_error,
    muc_item,
    room_with,
    say,
    status_codes,
)
from tests.support.peer import C, Peer, Peers, error_condition, show
from tests.support.timeouts import TIMEOUT

SERVICE = "conference.localhost"
_rooms = itertools.count()


def new_room(prefix: str = "room") -> str:
    return f"{prefix}{next(_rooms)}@{SERVICE}"


async def test_create_join_and_talk(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        created = await create_instant(a, room, "alice")
        assert {"110", "201"} <= status_codes(created.self_presence)
        assert muc_item(created.self_presence).get("affiliation") == "owner"
        joined = await join(b, room, "bob")
        assert [p.get("from") for p in joined.presences] == [f"{room}/alice"]
        assert "110" in status_codes(joined.self_presence)
        assert muc_item(joined.self_presence).get("role") == "participant"
        seen = await a.expect(lambda e: e.get("from") == f"{room}/bob" and e.tag == f"{C}presence")
        assert muc_item(seen).get("role") == "participant"

        await say(b, room, "hello room")
        for peer in (a, b):
            got = await heard(peer, room, "hello room")
            assert got.get("from") == f"{room}/bob"
            sid = got.find(f"{{{NS_SID}}}stanza-id")
            assert sid is not None, show(got)
            assert sid.get("by") == room


async def test_history_and_subject_on_join(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await create_instant(a, room, "alice")
        await a.send(f"<message to='{room}' type='groupchat'><subject>plans</subject></message>")
        await a.expect(lambda e: from_room(room, "groupchat")(e) and e.findtext(f"{C}subject") == "plans")
        for n in range(4):
            await say(a, room, f"m{n}")
            await heard(a, room, f"m{n}")
        joined = await join(b, room, "bob", history="<history maxstanzas='2'/>")
        assert [m.findtext(f"{C}body") for m in joined.history] == ["m2", "m3"]
        for old in joined.history:
            delay = old.find(f"{{{NS_DELAY}}}delay")
            assert delay is not None, show(old)
            assert delay.get("from") == room
        assert joined.subject.findtext(f"{C}subject") == "plans"


async def test_room_archive_query(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user()
        await create_instant(a, room, "alice")
        ids = []
        for n in range(3):
            await say(a, room, f"kept {n}")
            got = await heard(a, room, f"kept {n}")
            sid = got.find(f"{{{NS_SID}}}stanza-id")
            assert sid is not None
            ids.append(sid.get("id"))
        await a.send(f"<iq type='set' id='mamq' to='{room}'><query xmlns='{NS_MAM}' queryid='q1'/></iq>")
        results = await a.before(lambda e: e.tag == f"{C}iq" and e.get("id") == "mamq")
        found = [r for r in results if r.find(f"{{{NS_MAM}}}result") is not None]
        assert [r.find(f"{{{NS_MAM}}}result").get("id") for r in found] == ids  # type: ignore[union-attr]
        assert all(r.get("from") == room for r in found)
        form = await a.iq(f"<query xmlns='{NS_MAM}'/>", to=room)
        fields = {f.get("var") for f in form.iter("{jabber:x:data}field")}
        assert fields >= {"FORM_TYPE", "with", "start", "end"}


async def test_nick_conflict_change_and_leave(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await create_instant(a, room, "alice")
        assert await join_error(b, room, "alice") == "conflict"
        await join(b, room, "bob")
        await b.send(f"<presence to='{room}/robert'/>")
        changed = await a.expect(lambda e: e.get("from") == f"{room}/bob" and e.get("type") == "unavailable")
        assert "303" in status_codes(changed)
        assert muc_item(changed).get("nick") == "robert"
        await a.expect(lambda e: e.get("from") == f"{room}/robert" and e.get("type") is None)
        await b.send(f"<presence to='{room}/robert' type='unavailable'/>")
        left = await b.expect(lambda e: e.get("from") == f"{room}/robert" and e.get("type") == "unavailable")
        assert "110" in status_codes(left)
        await a.expect(lambda e: e.get("from") == f"{room}/robert" and e.get("type") == "unavailable")


async def test_private_message_through_the_room(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await room_with(peers, room, "alice", "bob")
        await a.send(f"<message to='{room}/bob' type='chat' id='pm1'><body>psst</body></message>")
        got = await b.expect(lambda e: e.get("id") == "pm1")
        assert got.get("from") == f"{room}/alice"
        assert got.findtext(f"{C}body") == "psst"
        await a.send(f"<message to='{room}/nobody' type='chat' id='pm2'><body>?</body></message>")
        error = await a.expect(lambda e: e.get("id") == "pm2")
        assert error_condition(error) == "item-not-found"


async def test_non_occupant_and_moderated_room_refusals(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b, c = await peers.online_users(3)
        await create_instant(a, room, "alice")
        reply = await configure(a, room, {"muc#roomconfig_moderatedroom": "1"})
        assert reply.get("type") == "result", show(reply)
        await c.send(f"<message to='{room}' type='groupchat' id='out'><body>let me in</body></message>")
        assert error_condition(await c.expect(lambda e: e.get("id") == "out")) == "not-acceptable"
        joined = await join(b, room, "bob")
        assert muc_item(joined.self_presence).get("role") == "visitor"
        await b.send(f"<message to='{room}' type='groupchat' id='v1'><body>can I talk?</body></message>")
        assert error_condition(await b.expect(lambda e: e.get("id") == "v1")) == "forbidden"
        # Voice granted: now it may speak.
        granted = await admin(a, room, "<item nick='bob' role='participant'/>")
        assert granted.get("type") == "result", show(granted)
        await say(b, room, "thanks")
        await heard(a, room, "thanks")


async def test_members_only_password_and_ban(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b, c = await peers.online_users(3)
        await create_instant(a, room, "alice")
        reply = await configure(a, room, {"muc#roomconfig_membersonly": "1"})
        assert reply.get("type") == "result", show(reply)
        assert await join_error(b, room, "bob") == "registration-required"
        member = await admin(a, room, f"<item affiliation='member' jid='{b.bare}'/>")
        assert member.get("type") == "result", show(member)
        await join(b, room, "bob")
        # Banned: removed with 301, and cannot come back.
        ban = await admin(a, room, f"<item affiliation='outcast' jid='{b.bare}'/>")
        assert ban.get("type") == "result", show(ban)
        banned = await b.expect(lambda e: e.get("from") == f"{room}/bob" and e.get("type") == "unavailable")
        assert "301" in status_codes(banned)
        assert await join_error(b, room, "bob") == "forbidden"

        locked = new_room("secret")
        await create_instant(a, locked, "alice")
        reply = await configure(a, locked, {"muc#roomconfig_passwordprotectedroom": "1",
                                            "muc#roomconfig_roomsecret": "s3cret"})  # fmt: skip
        assert reply.get("type") == "result", show(reply)
        assert await join_error(c, locked, "carol") == "not-authorized"
        await join(c, locked, "carol", password="s3cret")


async def test_kick_with_reason(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await room_with(peers, room, "alice", "bob")
        reply = await admin(a, room, "<item nick='bob' role='none'><reason>spam</reason></item>")
        assert reply.get("type") == "result", show(reply)
        kicked = await b.expect(lambda e: e.get("from") == f"{room}/bob" and e.get("type") == "unavailable")
        assert {"307", "110"} <= status_codes(kicked)
        assert muc_item(kicked).findtext(f"{{{NS_MUC_USER}}}reason") == "spam"
        # Bob is no owner: he may not kick Alice.
        refused = await admin(b, room, "<item nick='alice' role='none'/>")
        assert refused.get("type") == "error"


async def test_config_form_with_wrong_types_is_refused(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user()
        await create_instant(a, room, "alice")
        reply = await configure(a, room, {"muc#roomconfig_persistentroom": "maybe"})
        assert error_condition(reply) in ("bad-request", "not-acceptable"), show(reply)
        form = await a.iq(f"<query xmlns='{NS_MUC}#owner'/>", to=room)
        assert form.get("type") == "result", show(form)
        fields = {f.get("var") for f in form.iter("{jabber:x:data}field")}
        wanted = {"muc#roomconfig_persistentroom", "muc#roomconfig_membersonly", "muc#roomconfig_whois"}
        assert wanted <= fields


async def test_discovery_of_service_and_rooms(peers: Peers) -> None:
    room = new_room("listed")
    hidden = new_room("hidden")
    with trio.fail_after(TIMEOUT):
        a = await peers.online_user()
        await create_instant(a, room, "alice")
        await create_instant(a, hidden, "alice")
        assert (await configure(a, hidden, {"muc#roomconfig_publicroom": "0"})).get("type") == "result"
        info = await a.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=SERVICE)
        identity = info.find(".//{http://jabber.org/protocol/disco#info}identity")
        assert identity is not None
        assert identity.get("category") == "conference"
        items = await a.iq("<query xmlns='http://jabber.org/protocol/disco#items'/>", to=SERVICE)
        listed = {i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
        assert room in listed
        assert hidden not in listed
        room_info = await a.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=room)
        features = {f.get("var") for f in room_info.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert {NS_MUC, "muc_public", "muc_temporary", NS_MAM} <= features
        server_items = await a.iq("<query xmlns='http://jabber.org/protocol/disco#items'/>", to="localhost")
        services = {i.get("jid") for i in server_items.iter("{http://jabber.org/protocol/disco#items}item")}
        assert SERVICE in services


async def test_destroy_with_reason_and_alternate_venue(peers: Peers) -> None:
    room = new_room()
    venue = new_room("venue")
    with trio.fail_after(TIMEOUT):
        a, b = await room_with(peers, room, "alice", "bob")
        reply = await a.iq(f"<query xmlns='{NS_MUC}#owner'><destroy jid='{venue}'><reason>moved</reason>"
                           "</destroy></query>", type_="set", to=room)  # fmt: skip
        assert reply.get("type") == "result", show(reply)
        gone = await b.expect(lambda e: e.get("from") == f"{room}/bob" and e.get("type") == "unavailable")
        destroy = gone.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}destroy")
        assert destroy is not None, show(gone)
        assert destroy.get("jid") == venue
        assert destroy.findtext(f"{{{NS_MUC_USER}}}reason") == "moved"
        # Destroyed: the name is free again (a new join creates a new room).
        created = await join(b, room, "bob")
        assert "201" in status_codes(created.self_presence)


async def test_self_ping(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await create_instant(a, room, "alice")
        pong = await a.iq("<ping xmlns='urn:xmpp:ping'/>", to=f"{room}/alice")
        assert pong.get("type") == "result", show(pong)
        outsider = await b.iq("<ping xmlns='urn:xmpp:ping'/>", to=f"{room}/alice")
        assert error_condition(outsider) == "not-acceptable"


async def test_mediated_and_direct_invitations(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b, c = await peers.online_users(3)
        await create_instant(a, room, "alice")
        await a.send(f"<message to='{room}'><x xmlns='{NS_MUC_USER}'><invite to='{b.bare}'>"
                     "<reason>join us</reason></invite></x></message>")  # fmt: skip
        invitation = await b.expect(lambda e: e.get("from") == room and e.tag == f"{C}message")
        invite = invitation.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}invite")
        assert invite is not None, show(invitation)
        assert invite.get("from", "").startswith(a.bare)
        direct_invite = f"<x xmlns='jabber:x:conference' jid='{room}'/>"
        await a.send(f"<message to='{c.bare}'>{direct_invite}</message>")
        direct = await c.expect(lambda e: e.find("{jabber:x:conference}x") is not None)
        assert direct.find("{jabber:x:conference}x").get("jid") == room  # type: ignore[union-attr]


async def test_temporary_room_goes_away_when_empty(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await create_instant(a, room, "alice")
        await a.send(f"<presence to='{room}/alice' type='unavailable'/>")
        await a.expect(lambda e: e.get("from") == f"{room}/alice" and e.get("type") == "unavailable")
        again = await join(b, room, "bob")
        assert "201" in status_codes(again.self_presence)


async def test_join_beyond_max_users_is_refused(peers: Peers) -> None:
    room = new_room()
    with trio.fail_after(TIMEOUT):
        a, b, c = await peers.online_users(3)
        await create_instant(a, room, "alice")
        assert (await configure(a, room, {"muc#roomconfig_maxusers": "2"})).get("type") == "result"
        await join(b, room, "bob")
        assert await join_error(c, room, "carol") == "service-unavailable"
        await say(b, room, "still here")
        await heard(a, room, "still here")


async def test_a_join_storm_leaves_the_room_working(peers: Peers, accounts: Accounts) -> None:
    """Twenty clients join a room of at most five at once: four get in, the others get
    service-unavailable, and the room and its occupants carry on."""
    owner, *crowd = accounts(21)
    room = new_room("storm")
    with trio.fail_after(TIMEOUT):
        a = await peers.online(owner)
        await create_instant(a, room, "owner")
        assert (await configure(a, room, {"muc#roomconfig_maxusers": "5"})).get("type") == "result"
        clients = [await peers.online(name) for name in crowd]
        outcomes: dict[str, str | None] = {}

        async def try_join(peer: Peer, nick: str) -> None:
            await peer.send(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
            while True:
                got = await peer.expect(from_room(room, kind="presence"))
                if got.get("type") == "error":
                    outcomes[nick] = error_condition(got)
                    return
                if "110" in status_codes(got):
                    outcomes[nick] = None
                    return

        async with trio.open_nursery() as nursery:
            for n, peer in enumerate(clients):
                nursery.start_soon(try_join, peer, f"guest{n}")
        assert sorted(outcomes.values(), key=str) == [None] * 4 + ["service-unavailable"] * 16
        await say(a, room, "after the storm")
        await heard(a, room, "after the storm")
        inside = [peer for n, peer in enumerate(clients) if outcomes[f"guest{n}"] is None]
        for peer in inside:
            await heard(peer, room, "after the storm")


# ---- what real clients trip over (issue 13) ------------------------------------------------------


async def test_requests_right_behind_a_join_are_handled_after_it(peers: Peers) -> None:
    """RFC 6120 §10.1: a client that sends its join and, without waiting for it, the owner's
    configuration requests and a first message (as aioxmpp's MUCClient does) gets the form,
    not item-not-found, and the room is unlocked for the others. The room's actor runs already
    (a disco#info before), and the account's actor is busy with a storage write when the join
    comes: presence that went to the room through the account lost that race every time."""
    room = new_room("inorder")
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        missing = await a.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=room)
        assert error_condition(missing) == "item-not-found", show(missing)
        await create_without_waiting(a, room, "alice", "1")
        await join(b, room, "bob")  # unlocked: not "this room is not configured yet"


async def test_a_temporary_room_left_and_entered_at_once_is_a_new_live_room(peers: Peers) -> None:
    """XEP-0045 §10.1: the last occupant's exit destroys a temporary room; the creator's join
    right behind it creates a new room, from nothing, in a room actor that goes on (the actor
    used to stop, handle the queued join on its way out and drop its occupant)."""
    room = new_room("again")
    with trio.fail_after(TIMEOUT):
        a, b = await peers.online_users(2)
        await create_instant(a, room, "alice")
        assert (await configure(a, room, {"muc#roomconfig_membersonly": "1"})).get("type") == "result"
        banned = await admin(a, room, f"<item affiliation='outcast' jid='{b.bare}'/>")
        assert banned.get("type") == "result", show(banned)
        await a.send(f"<presence to='{room}/alice' type='unavailable'/>"
                     f"<presence to='{room}/alice'><x xmlns='{NS_MUC}'/></presence>")
        left = await a.expect(from_room(room, kind="presence"))
        assert left.get("type") == "unavailable", show(left)
        created = await a.expect(from_room(room, kind="presence"))
        assert {"110", "201"} <= status_codes(created), show(created)
        assert muc_item(created).get("affiliation") == "owner"
        unlocked = await a.iq(UNLOCK, type_="set", to=room)
        assert unlocked.get("type") == "result", show(unlocked)
        await a.send(f"<message type='groupchat' id='live' to='{room}'><body>still here</body></message>")
        echo = await a.expect(answer_to("live"))
        assert echo.get("type") == "groupchat", show(echo)  # an occupant of the new room
        # Nothing of the old room: not members-only, and its outcast is nobody here.
        joined = await join(b, room, "bob")
        assert muc_item(joined.self_presence).get("affiliation") == "none"
        for peer, nick in ((b, "bob"), (a, "alice")):
            await peer.send(f"<presence to='{room}/{nick}' type='unavailable'/>")
            await peer.expect(lambda e, nick=nick: e.get("from") == f"{room}/{nick}"  # type: ignore[misc]
                              and e.get("type") == "unavailable" and "110" in status_codes(e))  # fmt: skip
        # Empty again: gone again (its storage too).
        third = await join(b, room, "bob")
        assert "201" in status_codes(third.self_presence), show(third.self_presence)


async def test_a_temporary_room_goes_when_its_last_occupant_disconnects(
    peers: Peers, accounts: Accounts
) -> None:
    """A client that joined without initial presence (aioxmpp's default) and whose connection
    ends leaves the room too (RFC 6121 §4.6: unavailable presence to where it sent directed
    presence). The room was kept with a ghost occupant: the member who came next entered the
    old room as 'member' instead of creating a new room as its owner."""
    alice, bob = accounts(2)
    room = new_room("ghost")
    with trio.fail_after(TIMEOUT):
        a = await peers.login(alice)  # bound, no initial presence
        await create_instant(a, room, "alice")
        assert (await configure(a, room, {"muc#roomconfig_membersonly": "1"})).get("type") == "result"
        member = await admin(a, room, f"<item affiliation='member' jid='{bob}@localhost'/>")
        assert member.get("type") == "result", show(member)
        await a.drop()
        # Once the same resource is bound again, the account has let the old one go (its
        # `Unbind`, or the conflict that replaces it): what it sends the room is queued there.
        await peers.login(alice)
        b = await peers.online(bob)
        created = await join(b, room, "bob")
        assert created.presences == [], [show(p) for p in created.presences]
        assert "201" in status_codes(created.self_presence), show(created.self_presence)
        assert muc_item(created.self_presence).get("affiliation") == "owner"
