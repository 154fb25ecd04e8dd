"""muc#roomconfig_presencebroadcast: the roles whose presence the other occupants see."""

from __future__ import annotations

import json

import pytest

from imactor.muc.state import RoomState
from imactor.xmpp.namespaces import NS_DATA_FORMS, NS_DISCO_ITEMS, NS_MUC_OWNER
from imactor.xmpp.stanza import Element
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

ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"


def presences_from(outcome_elements: list[Element], nick: str) -> list[Element]:
    return [
        e for e in outcome_elements if kind(e).startswith("presence") and e.get("from") == f"{ROOM}/{nick}"
    ]


def test_visitors_are_not_shown_but_see_the_others_and_themselves() -> None:
    h = Harness(state(moderated=True, presence_broadcast=("moderator", "participant")))
    h.join(ALICE, "alice")  # the owner: a moderator
    entered = h.join(BOB, "bob")  # a visitor in a moderated room
    assert presences_from(received(entered, ALICE), "bob") == []
    own = presences_from(received(entered, BOB), "bob")
    assert own
    assert "110" in codes(own[-1])
    assert item(own[-1])["role"] == "visitor"
    assert presences_from(received(entered, BOB), "alice")  # he sees the moderator
    # a third occupant does not learn of Bob either
    later = h.join(CAROL, "carol")
    assert presences_from(received(later, CAROL), "bob") == []
    # nor by a status change, nor by his leaving
    status = h.send(f"<presence from='{BOB}' to='{ROOM}/bob'><show>away</show></presence>")
    assert [e for e in status.out if ALICE in e.recipients] == []
    assert presences_from(received(status, BOB), "bob")
    (items,) = received(h.iq(ALICE, "get", f"<query xmlns='{NS_DISCO_ITEMS}'/>"), ALICE)
    names = {i.get("name") for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item")}
    assert names == {"alice"}  # Carol is a visitor too
    gone = h.leave(BOB, "bob")
    assert [e for e in gone.out if ALICE in e.recipients or CAROL in e.recipients] == []


def test_voice_shows_an_occupant_and_revoking_it_hides_him_again() -> None:
    h = Harness(state(moderated=True, presence_broadcast=("moderator", "participant")))
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    voiced = h.admin(ALICE, "<item nick='bob' role='participant'/>")
    (shown,) = presences_from(received(voiced, ALICE), "bob")
    assert kind(shown) == "presence"
    assert item(shown)["role"] == "participant"
    muted = h.admin(ALICE, "<item nick='bob' role='visitor'/>")
    (hidden,) = presences_from(received(muted, ALICE), "bob")
    assert kind(hidden) == "presence/unavailable"
    assert item(hidden)["role"] == "none"
    assert item(presences_from(received(muted, BOB), "bob")[-1])["role"] == "visitor"


def test_a_new_configuration_hides_and_shows_the_occupants_in_the_room() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    h.join(BOB, "bob")  # a participant
    hide = h.configure(ALICE, muc__roomconfig_presencebroadcast="moderator")
    (gone,) = presences_from(received(hide, ALICE), "bob")
    assert kind(gone) == "presence/unavailable"
    assert h.room.state is not None
    assert h.room.state.config.presence_broadcast == ("moderator",)
    show = h.configure(ALICE, muc__roomconfig_presencebroadcast="participant\nmoderator")
    (back,) = presences_from(received(show, ALICE), "bob")
    assert kind(back) == "presence"
    assert h.room.state.config.presence_broadcast == ("moderator", "participant")


def test_the_form_offers_the_field_and_refuses_unknown_roles() -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    (form,) = received(h.owner(ALICE, kind="get"), ALICE)
    fields = {f.get("var"): f for f in form.iter(f"{{{NS_DATA_FORMS}}}field")}
    broadcast = fields["muc#roomconfig_presencebroadcast"]
    assert broadcast.get("type") == "list-multi"
    assert [v.text for v in broadcast.iter(f"{{{NS_DATA_FORMS}}}value")][:3] == [
        "moderator",
        "participant",
        "visitor",
    ]
    bad = h.owner(ALICE, submit_form(ROOMCONFIG, muc__roomconfig_presencebroadcast="moderator\nowner"))
    assert only_error(bad, ALICE) == "bad-request"
    assert h.room.state is not None
    assert h.room.state.config.presence_broadcast == (
        "moderator",
        "participant",
        "visitor",
    )
    assert f"{{{NS_MUC_OWNER}}}query" in {c.tag for c in form}


def test_the_setting_is_stored_and_damaged_values_are_refused() -> None:
    room_state = state(presence_broadcast=("moderator",))
    assert RoomState.from_json(room_state.to_json()).config.presence_broadcast == ("moderator",)
    data = room_state.to_json()
    data["config"]["presence_broadcast"] = ["king"]
    with pytest.raises(ValueError, match="presence_broadcast"):
        RoomState.from_json(data)
    del data["config"]["presence_broadcast"]  # a document from before the setting
    assert RoomState.from_json(data).config.presence_broadcast == ("moderator", "participant", "visitor")


def test_a_hidden_occupant_stays_hidden_when_the_room_moves() -> None:
    old = Harness(state(moderated=True, presence_broadcast=("moderator", "participant")))
    old.join(ALICE, "alice")
    old.join(BOB, "bob")  # a visitor: hidden
    assert old.room.state is not None
    exported = json.loads(json.dumps(old.room.export_occupants()))  # it crosses as JSON
    new = Harness(old.room.state)
    new.room.import_occupants(exported)
    joined = new.join(CAROL, "carol")
    assert presences_from(received(joined, CAROL), "bob") == []
    assert presences_from(received(joined, CAROL), "alice")
    voiced = new.admin(ALICE, "<item nick='bob' role='participant'/>")
    (shown,) = presences_from(received(voiced, CAROL), "bob")
    assert kind(shown) == "presence"
