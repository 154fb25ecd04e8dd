"""Registering with a room (XEP-0045 §7.10) and the reserved nick it gives (§7.12)."""

from __future__ import annotations

from imactor.muc.registration import NS_MUC_REGISTER
from imactor.muc.state import RoomState
from imactor.muc.values import Outcome
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DATA_FORMS, NS_DISCO_INFO, NS_REGISTER
from tests.unit.muc.support import (
    ALICE,
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
    submit_form,
)

QUERY = f"{{{NS_REGISTER}}}query"


def register(h: Harness, who: JID, nick: str, **extra: str) -> Outcome:
    form = submit_form(NS_MUC_REGISTER, muc__register_roomnick=nick, **extra)
    return h.iq(who, "set", f"<query xmlns='{NS_REGISTER}'>{form}</query>")


def unregister(h: Harness, who: JID) -> Outcome:
    return h.iq(who, "set", f"<query xmlns='{NS_REGISTER}'><remove/></query>")


def ask(h: Harness, who: JID) -> Outcome:
    return h.iq(who, "get", f"<query xmlns='{NS_REGISTER}'/>")


def reserved_nick(h: Harness, who: JID) -> str | None:
    (reply,) = received(h.iq(who, "get", f"<query xmlns='{NS_DISCO_INFO}' node='x-roomuser-item'/>"), who)
    identity = reply.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    return identity.get("name") if identity is not None else None


def test_the_form_then_registration_reserves_the_nick_and_makes_a_member() -> None:
    h = Harness(state())
    (reply,) = received(ask(h, BOB), BOB)
    assert kind(reply) == "result"
    form = reply.find(f"{QUERY}/{{{NS_DATA_FORMS}}}x")
    assert form is not None
    assert form.get("type") == "form"
    fields = {f.get("var"): f for f in form.iter(f"{{{NS_DATA_FORMS}}}field")}
    assert fields["FORM_TYPE"].findtext(f"{{{NS_DATA_FORMS}}}value") == NS_MUC_REGISTER
    assert fields["muc#register_roomnick"].find(f"{{{NS_DATA_FORMS}}}required") is not None
    assert {"muc#register_first", "muc#register_last"} <= set(fields)

    outcome = register(h, BOB, "  bobby ", muc__register_first="Bob")
    assert [kind(e) for e in received(outcome, BOB)] == ["result"]
    assert outcome.state_changed
    state_now = h.room.state
    assert state_now is not None
    assert state_now.affiliation_of("bob@localhost") == "member"
    assert state_now.affiliations["bob@localhost"].nick == "bobby"  # white space collapsed
    assert reserved_nick(h, BOB) == "bobby"
    assert reserved_nick(h, CAROL) is None

    (again,) = received(ask(h, BOB), BOB)  # §7.10: already registered
    query = again.find(QUERY)
    assert query is not None
    assert query.find(f"{{{NS_REGISTER}}}registered") is not None
    assert query.findtext(f"{{{NS_REGISTER}}}username") == "bobby"


def test_the_registration_survives_the_state_round_trip() -> None:
    h = Harness(state())
    register(h, BOB, "bobby")
    assert h.room.state is not None
    restored = RoomState.from_json(h.room.state.to_json())
    assert restored.affiliations["bob@localhost"].nick == "bobby"
    assert restored.affiliation_of("bob@localhost") == "member"


def test_the_reserved_nick_is_enforced_on_entering_and_on_nick_changes() -> None:
    h = Harness(state())
    register(h, BOB, "bobby")
    assert only_error(h.join(CAROL, "bobby"), CAROL) == "conflict"
    h.join(CAROL, "carol")
    changed = h.send(f"<presence from='{CAROL}' to='{ROOM}/bobby'/>")
    assert only_error(changed, CAROL) == "conflict"
    entered = h.join(BOB, "bobby")
    assert any("110" in codes(e) for e in received(entered, BOB))  # Bob himself may use it


def test_conflicts_of_registration() -> None:
    h = Harness(state())
    register(h, BOB, "bobby")
    assert only_error(register(h, BOB, "robert"), BOB) == "conflict"  # already registered otherwise
    assert [kind(e) for e in received(register(h, BOB, "bobby"), BOB)] == ["result"]  # the same again
    assert only_error(register(h, CAROL, "bobby"), CAROL) == "conflict"  # reserved by Bob
    h.join(ALICE, "alice")
    assert only_error(register(h, CAROL, "alice"), CAROL) == "conflict"  # in use in the room


def test_an_occupant_who_registers_is_shown_as_a_member() -> None:
    h = Harness(state(moderated=True))
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    outcome = register(h, BOB, "bob")
    seen = [e for e in received(outcome, ALICE) if kind(e) == "presence"]
    assert [item(e)["affiliation"] for e in seen] == ["member"]
    assert item(seen[0])["role"] == "participant"  # a member has voice in a moderated room


def test_who_may_register() -> None:
    h = Harness(state(members_only=True))
    assert only_error(ask(h, BOB), BOB) == "not-allowed"
    assert only_error(register(h, BOB, "bob"), BOB) == "not-allowed"
    h.admin(ALICE, "<item affiliation='member' jid='carol@localhost'/>")
    assert [kind(e) for e in received(register(h, CAROL, "caro"), CAROL)] == ["result"]  # a member may
    opened = Harness(state(members_only=True, allow_registration=True))
    assert [kind(e) for e in received(register(opened, BOB, "bob"), BOB)] == ["result"]
    assert opened.room.state is not None
    assert opened.room.state.affiliation_of("bob@localhost") == "member"
    banned = Harness(state())
    banned.admin(ALICE, "<item affiliation='outcast' jid='bob@localhost'/>")
    assert only_error(register(banned, BOB, "bob"), BOB) == "not-allowed"


def test_unregistering_frees_the_nick_and_ends_the_membership() -> None:
    h = Harness(state(members_only=True, allow_registration=True))
    h.join(ALICE, "alice")
    register(h, BOB, "bob")
    h.join(BOB, "bob")
    outcome = unregister(h, BOB)
    assert outcome.state_changed
    mine = received(outcome, BOB)
    assert kind(mine[-1]) == "result"
    assert any(kind(e) == "presence/unavailable" and "321" in codes(e) for e in mine)  # out of the room
    assert h.room.state is not None
    assert "bob@localhost" not in h.room.state.affiliations
    assert reserved_nick(h, BOB) is None
    assert [kind(e) for e in received(register(h, CAROL, "bob"), CAROL)] == ["result"]  # free again
    # an owner keeps the affiliation and loses only the nick
    register(h, ALICE, "boss")
    unregister(h, ALICE)
    assert h.room.state.affiliation_of("alice@localhost") == "owner"
    assert h.room.state.affiliations["alice@localhost"].nick == ""


def test_bad_registrations() -> None:
    h = Harness(state())
    assert only_error(unregister(h, BOB), BOB) == "item-not-found"  # not registered
    no_form = h.iq(BOB, "set", f"<query xmlns='{NS_REGISTER}'><username>bob</username></query>")
    assert only_error(no_form, BOB) == "bad-request"
    wrong_type = submit_form("urn:example:other", muc__register_roomnick="bob")
    assert (
        only_error(h.iq(BOB, "set", f"<query xmlns='{NS_REGISTER}'>{wrong_type}</query>"), BOB)
        == "bad-request"
    )
    nick_field = "<field var='muc#register_roomnick'><value>b</value></field>"
    not_submit = f"<x xmlns='{NS_DATA_FORMS}' type='form'>{nick_field}</x>"
    assert (
        only_error(h.iq(BOB, "set", f"<query xmlns='{NS_REGISTER}'>{not_submit}</query>"), BOB)
        == "bad-request"
    )
    no_var = f"<x xmlns='{NS_DATA_FORMS}' type='submit'><field><value>b</value></field></x>"
    assert (
        only_error(h.iq(BOB, "set", f"<query xmlns='{NS_REGISTER}'>{no_var}</query>"), BOB) == "bad-request"
    )
    assert only_error(register(h, BOB, "   "), BOB) == "not-acceptable"  # a blank nick
    assert only_error(register(h, BOB, ""), BOB) == "not-acceptable"
    assert h.room.state is not None
    assert "bob@localhost" not in h.room.state.affiliations


def test_registration_in_a_room_that_does_not_exist() -> None:
    h = Harness(None)
    assert only_error(ask(h, BOB), BOB) == "item-not-found"
    assert only_error(register(h, BOB, "bob"), BOB) == "item-not-found"


def test_rooms_announce_registration() -> None:
    h = Harness(state())
    (info,) = received(h.iq(BOB, "get", f"<query xmlns='{NS_DISCO_INFO}'/>"), BOB)
    assert NS_REGISTER in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
