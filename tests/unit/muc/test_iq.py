"""IQs to a room and to its occupants: disco (XEP-0045 §6), self-ping (XEP-0410), forwarding."""

from __future__ import annotations

from imactor.xmpp.dataforms import find_form, parse
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_DISCO_ITEMS, qname
from tests.unit.muc.support import (
    ALICE,
    BOB,
    CAROL,
    ROOM,
    Harness,
    attributes,
    kind,
    only_error,
    received,
    state,
)

INFO = f"<query xmlns='{NS_DISCO_INFO}'/>"


def _room(**config: object) -> Harness:
    h = Harness(state(**config))
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    return h


def test_disco_info_describes_the_room() -> None:
    room_state = state(name="Lounge", description="Chat", password="pw", whois="anyone")
    room_state.subject = "Today"
    h = Harness(room_state)
    h.join(ALICE, "alice", muc="<password>pw</password>")
    (reply,) = received(h.iq(CAROL, "get", INFO), CAROL)
    assert kind(reply) == "result"
    assert reply.get("from") == str(ROOM)
    assert reply.get("to") is None
    query = reply.find(qname(NS_DISCO_INFO, "query"))
    assert query is not None
    identity = query.find(qname(NS_DISCO_INFO, "identity"))
    assert identity is not None
    assert attributes(identity) == {
        "category": "conference",
        "type": "text",
        "name": "Lounge",
    }
    features = {f.get("var") for f in query.iter(qname(NS_DISCO_INFO, "feature"))}
    assert {
        "http://jabber.org/protocol/muc", "muc_public", "muc_temporary", "muc_open", "muc_unmoderated",
        "muc_nonanonymous", "muc_passwordprotected", "urn:xmpp:mam:2", "urn:xmpp:sid:0",
        "http://jabber.org/protocol/muc#self-ping-optimization",
    } <= features  # fmt: skip
    assert not {"muc_hidden", "muc_semianonymous", "muc_unsecured"} & features
    form_element = find_form(query, "http://jabber.org/protocol/muc#roominfo")
    assert form_element is not None
    form = parse(form_element)
    assert form.text("muc#roominfo_subject") == "Today"
    assert form.text("muc#roominfo_occupants") == "1"
    assert form.text("muc#roominfo_description") == "Chat"


def test_disco_items_lists_occupants_to_occupants_of_public_rooms_only() -> None:
    h = _room()
    items = f"<query xmlns='{NS_DISCO_ITEMS}'/>"
    (reply,) = received(h.iq(BOB, "get", items), BOB)
    assert [i.get("jid") for i in reply.iter(qname(NS_DISCO_ITEMS, "item"))] == [
        f"{ROOM}/alice",
        f"{ROOM}/bob",
    ]
    (reply,) = received(h.iq(CAROL, "get", items), CAROL)
    assert list(reply.iter(qname(NS_DISCO_ITEMS, "item"))) == []


def test_reserved_nick_discovery() -> None:
    room_state = state()
    room_state.set_affiliation("bob@localhost", "member")
    room_state.affiliations["bob@localhost"].nick = "bobby"
    h = Harness(room_state)
    (reply,) = received(h.iq(BOB, "get", f"<query xmlns='{NS_DISCO_INFO}' node='x-roomuser-item'/>"), BOB)
    identity = reply.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert identity is not None
    assert identity.get("name") == "bobby"


def test_self_ping() -> None:
    h = _room()
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    (reply,) = received(h.iq(BOB, "get", ping, to=f"{ROOM}/bob", id_="p1"), BOB)
    assert kind(reply) == "result"
    assert reply.get("from") == f"{ROOM}/bob"
    assert reply.get("id") == "p1"
    assert only_error(h.iq(CAROL, "get", ping, to=f"{ROOM}/bob"), CAROL) == "not-acceptable"
    h.leave(BOB, "bob")
    assert only_error(h.iq(BOB, "get", ping, to=f"{ROOM}/bob"), BOB) == "not-acceptable"


def test_iqs_to_an_occupant_are_forwarded_and_answers_come_back() -> None:
    h = _room()
    version = "<query xmlns='jabber:iq:version'/>"
    outcome = h.iq(BOB, "get", version, to=f"{ROOM}/alice", id_="v1")
    (forwarded,) = outcome.out
    assert forwarded.recipients == (ALICE,)
    assert forwarded.element.get("from") == f"{ROOM}/bob"
    assert forwarded.element.get("id") != "v1"
    new_id = forwarded.element.get("id", "")
    # a stranger cannot answer in alice's place
    assert h.send(f"<iq type='result' id='{new_id}' from='{CAROL}' to='{ROOM}/bob'/>").out == []
    outcome = h.send(f"<iq type='result' id='{new_id}' from='{ALICE}' to='{ROOM}/bob'>{version}</iq>")
    (answer,) = outcome.out
    assert answer.recipients == (BOB,)
    assert (answer.element.get("from"), answer.element.get("id")) == (f"{ROOM}/alice", "v1")
    # answered once only
    assert h.send(f"<iq type='result' id='{new_id}' from='{ALICE}' to='{ROOM}/bob'/>").out == []
    # vCard requests go to the occupant's account
    vcard = h.iq(BOB, "get", "<vCard xmlns='vcard-temp'/>", to=f"{ROOM}/alice")
    assert vcard.out[0].recipients == (ALICE.bare,)
    assert only_error(h.iq(BOB, "get", version, to=f"{ROOM}/nobody"), BOB) == "item-not-found"


def test_iqs_to_the_room() -> None:
    h = _room()
    (pong,) = received(h.iq(CAROL, "get", "<ping xmlns='urn:xmpp:ping'/>"), CAROL)
    assert kind(pong) == "result"
    assert only_error(h.iq(BOB, "get", "<query xmlns='jabber:iq:version'/>"), BOB) == "service-unavailable"
    assert only_error(h.iq(BOB, "set", "<query xmlns='urn:example:unknown'/>"), BOB) == "service-unavailable"
    assert only_error(h.iq(BOB, "get", ""), BOB) == "bad-request"
    assert h.iq(BOB, "result", "").out == []


def test_iqs_to_a_room_that_does_not_exist() -> None:
    h = Harness()
    assert only_error(h.iq(BOB, "get", INFO), BOB) == "item-not-found"
    assert (
        only_error(h.iq(BOB, "get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/x"), BOB) == "not-acceptable"
    )
