"""Occupants' presence (XEP-0045 §7.4-§7.7, §7.14): updates, nick changes, exits, lost sessions."""

from __future__ import annotations

from tests.unit.muc.support import (
    ALICE,
    ALICE2,
    BOB,
    CAROL,
    ROOM,
    Harness,
    codes,
    item,
    kind,
    only_error,
    received,
    state,
)


def _room_with_alice_and_bob(**config: object) -> Harness:
    h = Harness(state(**config))
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    return h


def test_a_presence_update_is_broadcast_with_110_to_the_occupant_itself() -> None:
    h = _room_with_alice_and_bob()
    outcome = h.send(
        f"<presence from='{BOB}' to='{ROOM}/bob'><show>dnd</show><status>busy</status></presence>"
    )
    (to_alice,) = received(outcome, ALICE)
    (to_bob,) = received(outcome, BOB)
    assert to_alice.findtext("{jabber:client}show") == "dnd"
    assert codes(to_alice) == []
    assert item(to_alice)["jid"] == str(BOB)  # alice moderates
    assert to_bob.findtext("{jabber:client}status") == "busy"
    assert codes(to_bob) == ["110"]
    assert not outcome.state_changed


def test_nick_change_sends_303_then_the_new_nick() -> None:
    h = _room_with_alice_and_bob()
    outcome = h.send(f"<presence from='{BOB}' to='{ROOM}/robert'/>")
    gone, back = received(outcome, ALICE)
    assert (gone.get("from"), kind(gone), codes(gone)) == (f"{ROOM}/bob", "presence/unavailable", ["303"])
    assert item(gone)["nick"] == "robert"
    assert (back.get("from"), kind(back)) == (f"{ROOM}/robert", "presence")
    own_gone, own_back = received(outcome, BOB)
    assert codes(own_gone) == ["110", "303"]
    assert codes(own_back) == ["110"]
    assert [o.nick for o in h.room.occupants()] == ["alice", "robert"]
    # the new nick is in use now, the old one is free
    assert only_error(h.join(CAROL, "robert"), CAROL) == "conflict"
    assert kind(received(h.join(CAROL, "bob"), CAROL)[-1]) == "message/groupchat"


def test_nick_change_to_a_taken_or_reserved_nick_is_a_conflict() -> None:
    room_state = state()
    room_state.set_affiliation("carol@localhost", "member")
    room_state.affiliations["carol@localhost"].nick = "caz"
    h = Harness(room_state)
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    outcome = h.send(f"<presence from='{BOB}' to='{ROOM}/alice'/>")
    assert only_error(outcome, BOB) == "conflict"
    assert outcome.out[0].element.get("from") == f"{ROOM}/alice"
    assert only_error(h.send(f"<presence from='{BOB}' to='{ROOM}/caz'/>"), BOB) == "conflict"
    assert [o.nick for o in h.room.occupants()] == ["alice", "bob"]


def test_nick_change_of_a_shared_nick_is_not_acceptable() -> None:
    h = _room_with_alice_and_bob()
    h.join(ALICE2, "alice")
    assert only_error(h.send(f"<presence from='{ALICE2}' to='{ROOM}/al'/>"), ALICE2) == "not-acceptable"


def test_a_forged_presence_for_someone_elses_nick_is_a_join_attempt_and_conflicts() -> None:
    h = _room_with_alice_and_bob()
    outcome = h.send(f"<presence from='{CAROL}' to='{ROOM}/bob'><show>xa</show></presence>")
    assert only_error(outcome, CAROL) == "conflict"
    outcome = h.send(f"<presence type='unavailable' from='{CAROL}' to='{ROOM}/bob'/>")
    assert outcome.out == []
    assert len(h.room.occupants()) == 2


def test_exit_is_broadcast_and_the_leaver_gets_110() -> None:
    h = _room_with_alice_and_bob()
    outcome = h.leave(BOB, "bob", "bye")
    (to_alice,) = received(outcome, ALICE)
    (to_bob,) = received(outcome, BOB)
    assert kind(to_alice) == "presence/unavailable"
    assert to_alice.findtext("{jabber:client}status") == "bye"
    assert item(to_alice) == {"affiliation": "none", "role": "none", "jid": str(BOB)}
    assert codes(to_bob) == ["110"]
    assert [o.nick for o in h.room.occupants()] == ["alice"]


def test_one_session_of_a_shared_nick_leaving_is_an_update_for_the_others() -> None:
    h = _room_with_alice_and_bob()
    h.join(ALICE2, "alice")
    outcome = h.leave(ALICE2, "alice")
    (own,) = received(outcome, ALICE2)
    assert kind(own) == "presence/unavailable"
    assert codes(own) == ["110"]
    assert item(own)["jid"] == str(ALICE2)
    (to_bob,) = received(outcome, BOB)
    assert kind(to_bob) == "presence"
    (to_alice,) = received(outcome, ALICE)
    assert codes(to_alice) == ["110"]
    assert item(to_alice)["jid"] == str(ALICE)


def test_a_temporary_room_is_destroyed_when_the_last_occupant_leaves() -> None:
    h = _room_with_alice_and_bob()
    assert not h.leave(BOB, "bob").destroyed
    assert h.leave(ALICE, "alice").destroyed
    assert not h.room.exists
    assert h.room.state is None


def test_a_room_created_again_after_its_end_starts_afresh() -> None:
    h = _room_with_alice_and_bob()
    h.say(BOB, "old news")
    h.leave(BOB, "bob")
    h.leave(ALICE, "alice")
    outcome = h.join(CAROL, "carol")
    assert codes(received(outcome, CAROL)[0]) == ["110", "170", "201"]
    assert [kind(e) for e in received(outcome, CAROL)] == ["presence", "message/groupchat"]  # no history
    assert h.room.state is not None
    assert h.room.state.affiliation_of("carol@localhost") == "owner"


def test_a_persistent_room_stays_when_empty() -> None:
    h = _room_with_alice_and_bob(persistent=True)
    h.leave(BOB, "bob")
    outcome = h.leave(ALICE, "alice")
    assert not outcome.destroyed
    assert h.room.exists
    assert h.room.is_empty


def test_remove_occupant_shows_333_to_the_others_and_nothing_to_the_lost_session() -> None:
    h = _room_with_alice_and_bob()
    outcome = h.room.remove_occupant(BOB, h.now)
    assert received(outcome, BOB) == []
    (to_alice,) = received(outcome, ALICE)
    assert kind(to_alice) == "presence/unavailable"
    assert codes(to_alice) == ["333"]
    assert h.room.remove_occupant(CAROL, h.now).out == []


def test_an_error_presence_from_an_occupant_removes_it_with_333() -> None:
    h = _room_with_alice_and_bob()
    outcome = h.send(
        f"<presence type='error' from='{BOB}' to='{ROOM}/bob'><error type='cancel'>"
        "<gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    )
    (to_alice,) = received(outcome, ALICE)
    assert codes(to_alice) == ["333"]
    assert [o.nick for o in h.room.occupants()] == ["alice"]


def test_subscription_presence_is_ignored() -> None:
    h = _room_with_alice_and_bob()
    assert h.send(f"<presence type='subscribe' from='{CAROL}' to='{ROOM}'/>").out == []
