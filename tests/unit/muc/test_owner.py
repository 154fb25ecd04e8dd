"""muc#owner (XEP-0045 §10): the configuration form, its errors and status codes, destruction."""

from __future__ import annotations

from imactor.xmpp.dataforms import find_form, parse
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_MUC_OWNER, NS_MUC_USER, qname
from tests.unit.muc.support import (
    ALICE,
    BOB,
    CAROL,
    ROOM,
    Harness,
    codes,
    kind,
    only_error,
    received,
    state,
)

P = "muc#roomconfig_"


def _room(**config: object) -> Harness:
    h = Harness(state(**config))
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    return h


def test_the_owner_gets_the_configuration_form_with_the_current_values() -> None:
    room_state = state(name="Lounge", password="pw", max_users=30)
    room_state.set_affiliation("carol@localhost", "admin")
    h = Harness(room_state)
    (reply,) = received(h.owner(ALICE, kind="get"), ALICE)
    assert kind(reply) == "result"
    query = reply.find(qname(NS_MUC_OWNER, "query"))
    assert query is not None
    form_element = find_form(query, "http://jabber.org/protocol/muc#roomconfig")
    assert form_element is not None
    assert form_element.get("type") == "form"
    form = parse(form_element)
    assert form.text(P + "roomname") == "Lounge"
    assert form.boolean(P + "passwordprotectedroom") is True
    assert form.text(P + "roomsecret") == "pw"
    assert form.text(P + "maxusers") == "30"
    assert form.text(P + "whois") == "moderators"
    assert form.texts(P + "roomowners") == ("alice@localhost",)
    assert form.texts(P + "roomadmins") == ("carol@localhost",)


def test_only_owners_configure() -> None:
    h = _room()
    assert only_error(h.owner(BOB, kind="get"), BOB) == "forbidden"
    assert only_error(h.configure(BOB, **{P + "roomname": "Mine"}), BOB) == "forbidden"


def test_a_submitted_form_changes_the_config_and_tells_the_occupants() -> None:
    h = _room()
    fields = {P + "roomname": "Lounge", P + "persistentroom": "1", P + "moderatedroom": "true"}
    outcome = h.configure(ALICE, **fields, **{P + "maxusers": "50", "muc__maxhistoryfetch": "5"})
    notice, result = received(outcome, ALICE)
    assert kind(notice) == "message/groupchat"
    assert notice.get("from") == str(ROOM)
    assert codes(notice) == ["104"]
    assert kind(result) == "result"
    assert outcome.state_changed
    assert received(outcome, BOB) == [notice]
    config = h.room.state.config  # type: ignore[union-attr]
    assert (config.name, config.persistent, config.moderated, config.max_users, config.history_length) == (
        "Lounge", True, True, 50, 5,
    )  # fmt: skip
    assert config.public  # untouched fields keep their values


def test_privacy_and_logging_changes_add_status_codes() -> None:
    h = _room()
    outcome = h.configure(ALICE, **{P + "whois": "anyone", P + "enablelogging": "0"})
    assert codes(received(outcome, BOB)[0]) == ["171", "172"]
    outcome = h.configure(ALICE, **{P + "whois": "moderators", P + "enablelogging": "1", P + "roomname": "x"})
    assert codes(received(outcome, BOB)[0]) == ["104", "170", "173"]
    # a form that changes nothing tells nobody
    outcome = h.configure(ALICE, **{P + "roomname": "x"})
    assert [item.recipients for item in outcome.out] == [(ALICE,)]


def test_forms_with_wrong_types_or_values_are_refused_and_change_nothing() -> None:
    h = _room()
    assert only_error(h.configure(ALICE, **{P + "persistentroom": "maybe"}), ALICE) == "bad-request"
    assert only_error(h.configure(ALICE, **{P + "maxusers": "lots"}), ALICE) == "bad-request"
    assert only_error(h.configure(ALICE, **{P + "whois": "everybody"}), ALICE) == "bad-request"
    assert only_error(h.configure(ALICE, **{P + "allowpm": "sometimes"}), ALICE) == "bad-request"
    assert only_error(h.configure(ALICE, **{P + "roomowners": "not a jid@@"}), ALICE) == "bad-request"
    assert only_error(h.configure(ALICE, **{P + "maxusers": "1000"}), ALICE) == "not-acceptable"
    assert only_error(h.configure(ALICE, **{P + "passwordprotectedroom": "1"}), ALICE) == "not-acceptable"
    wrong_type = (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>"
    )
    assert only_error(h.owner(ALICE, wrong_type), ALICE) == "bad-request"
    assert only_error(h.owner(ALICE, "<x xmlns='jabber:x:data' type='bogus'/>"), ALICE) == "bad-request"
    assert only_error(h.owner(ALICE), ALICE) == "bad-request"
    assert h.room.state is not None
    assert h.room.state.config == state().config


def test_becoming_members_only_removes_non_members_with_322() -> None:
    h = _room()
    outcome = h.configure(ALICE, **{P + "membersonly": "1"})
    (to_bob,) = received(outcome, BOB)
    assert kind(to_bob) == "presence/unavailable"
    assert codes(to_bob) == ["110", "322"]
    assert [o.nick for o in h.room.occupants()] == ["alice"]


def test_owner_and_admin_lists_in_the_form() -> None:
    h = _room()
    outcome = h.configure(
        ALICE, **{P + "roomowners": "alice@localhost\nbob@localhost/x", P + "roomadmins": "carol@localhost"}
    )
    assert kind(received(outcome, ALICE)[-1]) == "result"
    room_state = h.room.state
    assert room_state is not None
    assert room_state.with_affiliation("owner") == ["alice@localhost", "bob@localhost"]
    assert room_state.with_affiliation("admin") == ["carol@localhost"]
    assert only_error(h.configure(ALICE, **{P + "roomowners": ""}), ALICE) == "not-acceptable"


def test_destroy_tells_every_occupant_with_reason_and_alternate_venue() -> None:
    h = _room()
    outcome = h.owner(ALICE, "<destroy jid='new@conference.localhost'><reason>moved</reason></destroy>")
    assert outcome.destroyed
    assert not h.room.exists
    (to_bob,) = received(outcome, BOB)
    assert kind(to_bob) == "presence/unavailable"
    assert to_bob.get("from") == f"{ROOM}/bob"
    destroy = to_bob.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}destroy")
    assert destroy is not None
    assert destroy.get("jid") == "new@conference.localhost"
    assert destroy.findtext(qname(NS_MUC_USER, "reason")) == "moved"
    assert [kind(e) for e in received(outcome, ALICE)] == ["presence/unavailable", "result"]
    assert only_error(h.say(BOB, "hello?"), BOB) == "item-not-found"


def test_destroy_from_the_admin_cli() -> None:
    h = _room()
    outcome = h.room.destroy(None, JID.parse("other@conference.localhost"), h.now)
    assert outcome.destroyed
    assert {r for o in outcome.out for r in o.recipients} == {ALICE, BOB}
    assert h.room.destroy(None, None, h.now).out == []


def test_cancelling_the_first_configuration_destroys_the_new_room() -> None:
    h = Harness()
    h.join(CAROL, "carol")
    outcome = h.owner(CAROL, "<x xmlns='jabber:x:data' type='cancel'/>")
    assert outcome.destroyed
    assert not h.room.exists
    assert kind(received(outcome, CAROL)[-1]) == "result"


def test_a_reserved_room_is_configured_before_it_opens() -> None:
    h = Harness()
    h.join(CAROL, "carol")
    outcome = h.configure(CAROL, **{P + "roomname": "Planning", P + "membersonly": "1"})
    # the first configuration unlocks the room without a 104 notice
    assert [kind(e) for e in received(outcome, CAROL)] == ["result"]
    assert h.room.state is not None
    assert not h.room.state.locked
    assert only_error(h.join(BOB, "bob"), BOB) == "registration-required"
