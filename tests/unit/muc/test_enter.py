"""Entering a room (XEP-0045 §7.2, §10.1): creation, the checks on entering, what a newcomer gets."""

from __future__ import annotations

from lxml import etree

from imactor.muc.values import ArchiveItem
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DELAY, qname
from tests.unit.muc.support import (
    ALICE,
    ALICE2,
    BOB,
    CAROL,
    DAVE,
    NO_CREATE,
    ROOM,
    SERVER_ADMIN,
    T0,
    Harness,
    codes,
    condition,
    item,
    kind,
    only_error,
    received,
    state,
    xml,
)


def test_the_first_join_creates_a_locked_room_owned_by_its_creator() -> None:
    h = Harness()
    assert not h.room.exists
    outcome = h.join(ALICE, "alice")
    assert h.room.exists
    assert outcome.state_changed
    assert not outcome.destroyed
    self_presence, subject = received(outcome, ALICE)
    assert self_presence.get("from") == f"{ROOM}/alice"
    assert self_presence.get("to") is None
    assert codes(self_presence) == ["110", "170", "201"]
    assert item(self_presence) == {"affiliation": "owner", "role": "moderator", "jid": str(ALICE)}
    assert kind(subject) == "message/groupchat"
    assert subject.findtext("{jabber:client}subject") == ""
    state = h.room.state
    assert state is not None
    assert state.locked
    assert state.creator == "alice@localhost"
    assert state.affiliation_of("alice@localhost") == "owner"


def test_a_locked_room_refuses_others_until_its_owner_submits_the_instant_form() -> None:
    h = Harness()
    h.join(ALICE, "alice")
    assert only_error(h.join(BOB, "bob"), BOB) == "item-not-found"
    outcome = h.owner(ALICE, "<x xmlns='jabber:x:data' type='submit'/>")
    assert [kind(e) for e in received(outcome, ALICE)] == ["result"]
    assert outcome.state_changed
    assert h.room.state is not None
    assert not h.room.state.locked
    assert kind(received(h.join(BOB, "bob"), BOB)[-1]) == "message/groupchat"


def test_a_groupchat_1_0_join_creates_an_instant_room() -> None:
    h = Harness()
    outcome = h.send(f"<presence from='{ALICE}' to='{ROOM}/alice'/>")
    assert codes(received(outcome, ALICE)[0]) == ["110", "170", "201"]
    assert h.room.state is not None
    assert not h.room.state.locked
    assert kind(received(h.join(BOB, "bob"), BOB)[-1]) == "message/groupchat"


def test_a_user_the_service_refuses_cannot_create_a_room() -> None:
    h = Harness()
    assert only_error(h.join(NO_CREATE, "guest"), NO_CREATE) == "not-allowed"
    assert not h.room.exists


def test_a_newcomer_gets_the_occupants_then_its_own_presence_then_the_subject() -> None:
    room_state = state()
    room_state.subject, room_state.subject_by = "Hello", "alice"
    h = Harness(room_state)
    h.join(ALICE, "alice", "<show>away</show>")
    outcome = h.join(BOB, "bob", "<status>here</status>")
    to_bob = received(outcome, BOB)
    assert [(e.get("from"), kind(e)) for e in to_bob] == [
        (f"{ROOM}/alice", "presence"),
        (f"{ROOM}/bob", "presence"),
        (f"{ROOM}/alice", "message/groupchat"),
    ]
    # semi-anonymous: a participant sees no real JID, the moderator (alice) does
    assert item(to_bob[0]) == {"affiliation": "owner", "role": "moderator"}
    assert to_bob[0].findtext("{jabber:client}show") == "away"
    assert codes(to_bob[1]) == ["110", "170"]
    assert item(to_bob[1]) == {"affiliation": "none", "role": "participant"}
    assert to_bob[2].findtext("{jabber:client}subject") == "Hello"
    (to_alice,) = received(outcome, ALICE)
    assert to_alice.get("from") == f"{ROOM}/bob"
    assert codes(to_alice) == []
    assert item(to_alice) == {"affiliation": "none", "role": "participant", "jid": str(BOB)}
    assert to_alice.findtext("{jabber:client}status") == "here"
    # the join request itself is not echoed
    assert to_alice.find("{http://jabber.org/protocol/muc}x") is None


def test_non_anonymous_rooms_show_real_jids_to_all_with_status_100() -> None:
    h = Harness(state(whois="anyone", enable_logging=False))
    h.join(ALICE, "alice")
    outcome = h.join(BOB, "bob")
    alice_seen, own = received(outcome, BOB)[:2]
    assert item(alice_seen)["jid"] == str(ALICE)
    assert codes(own) == ["100", "110"]


def test_nick_conflict_is_refused_but_a_second_session_of_the_same_user_shares_the_nick() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    assert only_error(h.join(CAROL, "bob"), CAROL) == "conflict"
    outcome = h.join(ALICE2, "alice")
    own = [e for e in received(outcome, ALICE2) if e.get("from") == f"{ROOM}/alice"]
    assert codes(own[-1]) == ["110", "170"]
    # the first session sees its nick's presence move to the new session, as its own (110)
    (first,) = received(outcome, ALICE)
    assert codes(first) == ["110"]
    assert item(first)["jid"] == str(ALICE2)
    assert [o.nick for o in h.room.occupants()] == ["alice", "bob"]
    assert h.room.occupants()[0].real_jids == (ALICE, ALICE2)


def test_password_protected_room() -> None:
    h = Harness(state(password="s3cret"))
    assert only_error(h.join(BOB, "bob"), BOB) == "not-authorized"
    assert only_error(h.join(BOB, "bob", muc="<password>nope</password>"), BOB) == "not-authorized"
    assert (
        kind(received(h.join(BOB, "bob", muc="<password>s3cret</password>"), BOB)[-1]) == "message/groupchat"
    )


def test_members_only_room_lets_in_members_only() -> None:
    room_state = state(members_only=True)
    room_state.set_affiliation("carol@localhost", "member")
    h = Harness(room_state)
    assert only_error(h.join(BOB, "bob"), BOB) == "registration-required"
    outcome = h.join(CAROL, "carol")
    assert item(received(outcome, CAROL)[0]) == {"affiliation": "member", "role": "participant"}


def test_banned_user_is_forbidden() -> None:
    room_state = state()
    room_state.set_affiliation("bob@localhost", "outcast", "spam")
    h = Harness(room_state)
    assert only_error(h.join(BOB, "bob"), BOB) == "forbidden"


def test_a_refused_join_is_a_presence_error_with_the_muc_payload() -> None:
    """XEP-0045 §7.2 (each error example of entering, §7.6 for nick changes): the room's
    presence error carries an empty <x xmlns='http://jabber.org/protocol/muc'/>; slixmpp's
    join_muc_wait recognizes a refusal only by it (else it waits for its timeout)."""
    room_state = state()
    room_state.set_affiliation("bob@localhost", "outcast", "spam")
    h = Harness(room_state)
    (refused,) = h.join(BOB, "bob", muc="<password>secret</password>").out
    assert refused.element.get("type") == "error"
    payload = refused.element.find("{http://jabber.org/protocol/muc}x")
    assert payload is not None
    assert len(payload) == 0  # the password is not echoed
    h.join(CAROL, "carol")
    (conflict,) = h.join(DAVE, "carol").out
    assert condition(conflict.element) == "conflict"
    assert conflict.element.find("{http://jabber.org/protocol/muc}x") is not None


def test_max_users_then_service_unavailable_but_owners_and_server_admins_still_enter() -> None:
    h = Harness(state(max_users=2))
    h.join(BOB, "bob")
    h.join(CAROL, "carol")
    assert only_error(h.join(DAVE, "dave"), DAVE) == "service-unavailable"
    assert kind(received(h.join(ALICE, "alice"), ALICE)[-1]) == "message/groupchat"
    own = received(h.join(SERVER_ADMIN, "root"), SERVER_ADMIN)[-2]
    assert item(own)["affiliation"] == "owner"
    assert item(own)["role"] == "moderator"


def test_a_join_storm_stops_at_the_service_limit() -> None:
    h = Harness(state(), max_occupants=5)
    refused = []
    for n in range(20):
        who = JID.parse(f"user{n}@localhost/r")
        first = h.join(who, f"user{n}").out[0].element
        if first.get("type") == "error":
            refused.append(condition(first))
    assert len(h.room.occupants()) == 5
    assert refused == ["service-unavailable"] * 15


def test_blank_and_missing_nicks_are_jid_malformed() -> None:
    h = Harness(state())
    outcome = h.send(
        f"<presence from='{BOB}' to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    assert only_error(outcome, BOB) == "jid-malformed"
    assert only_error(h.join(BOB, "%20%20".replace("%20", " ")), BOB) == "jid-malformed"
    assert h.room.is_empty


def test_a_nick_the_service_normalizes_gets_status_210() -> None:
    h = Harness(state())
    outcome = h.join(BOB, "  Bob   the  builder ")
    own = received(outcome, BOB)[-2]
    assert own.get("from") == f"{ROOM}/Bob the builder"
    assert codes(own) == ["110", "170", "210"]


def test_history_is_replayed_with_delay_and_limits() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    for n in range(5):
        h.now = T0 + n * 60
        h.say(ALICE, f"message {n}")
    h.now = T0 + 600

    def history(muc: str = "") -> list[str]:
        who = CAROL
        outcome = h.join(who, "carol", muc=muc)
        got = [e for e in received(outcome, who) if e.find("{jabber:client}body") is not None]
        h.leave(who, "carol")
        for e in got:
            delay = e.find(qname(NS_DELAY, "delay"))
            assert delay is not None
            assert delay.get("from") == str(ROOM)
        return [e.findtext("{jabber:client}body") or "" for e in got]

    assert history() == [f"message {n}" for n in range(5)]
    assert history("<history maxstanzas='2'/>") == ["message 3", "message 4"]
    assert history("<history maxstanzas='9'/>") == [f"message {n}" for n in range(5)]  # more than kept
    assert history("<history maxchars='0'/>") == []
    assert history("<history seconds='400'/>") == ["message 4"]
    assert history("<history since='2025-06-15T15:10:00Z'/>") == ["message 4"]  # T0 + 240 = 15:10:40
    assert history("<history maxstanzas='bogus'/>") == [f"message {n}" for n in range(5)]
    # the stamp of the delay is the time the message was sent
    outcome = h.join(DAVE, "dave", muc="<history maxstanzas='1'/>")
    (last,) = [e for e in received(outcome, DAVE) if e.find("{jabber:client}body") is not None]
    assert last.find(qname(NS_DELAY, "delay")).get("stamp") == "2025-06-15T15:10:40.000Z"  # type: ignore[union-attr]


def test_history_from_the_archive_after_a_restart_and_its_length_limit() -> None:
    items = [
        ArchiveItem(f"a{n}", T0 + n, "alice", ALICE,
                    xml(f"<message type='groupchat' from='{ROOM}/alice'><body>old {n}</body></message>"))
        for n in range(30)
    ]  # fmt: skip
    h = Harness(state(history_length=3), history=items)
    outcome = h.join(BOB, "bob")
    bodies = [
        e.findtext("{jabber:client}body") for e in received(outcome, BOB) if kind(e) == "message/groupchat"
    ]
    assert bodies == ["old 27", "old 28", "old 29", None]  # then the subject


def test_a_rejoin_from_an_occupant_resends_the_room() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    outcome = h.join(BOB, "bob")
    assert [kind(e) for e in received(outcome, BOB)] == ["presence", "presence", "message/groupchat"]
    assert len(h.room.occupants()) == 2


def test_presence_to_a_room_that_does_not_exist_is_ignored_unless_it_is_a_join() -> None:
    h = Harness()
    assert h.leave(BOB, "bob").out == []
    outcome = h.say(BOB, "hi")
    assert only_error(outcome, BOB) == "item-not-found"
    assert condition(outcome.out[0].element) == "item-not-found"


def test_errors_keep_the_id_and_come_from_the_occupant_jid() -> None:
    h = Harness(state(password="x"))
    outcome = h.send(
        f"<presence id='j1' from='{BOB}' to='{ROOM}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    (reply,) = received(outcome, BOB)
    assert reply.get("id") == "j1"
    assert reply.get("from") == f"{ROOM}/bob"
    assert reply.get("type") == "error"
    assert etree.QName(reply).localname == "presence"
