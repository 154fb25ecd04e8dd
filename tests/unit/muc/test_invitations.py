"""Mediated invitations and declines (XEP-0045 §7.8.2, §7.8.3) and voice requests (§7.13, §8.6)."""

from __future__ import annotations

from imactor.xmpp.dataforms import find_form, parse
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_MUC_USER, qname
from tests.unit.muc.support import (
    ALICE,
    BOB,
    CAROL,
    ROOM,
    Harness,
    item,
    kind,
    only_error,
    received,
    state,
    submit_form,
)

HAMLET = JID.parse("hamlet@localhost")
USER = f"{{{NS_MUC_USER}}}"


def _invite(h: Harness, who: JID, to: JID, reason: str = "") -> object:
    reason_xml = f"<reason>{reason}</reason>" if reason else ""
    return h.send(
        f"<message id='i1' from='{who}' to='{ROOM}'><x xmlns='{NS_MUC_USER}'>"
        f"<invite to='{to}'>{reason_xml}</invite></x></message>"
    )


def test_an_occupant_invites_through_the_room() -> None:
    h = Harness(state(password="pw"))
    h.join(BOB, "bob", muc="<password>pw</password>")
    outcome = _invite(h, BOB, HAMLET, "join us")
    (sent,) = outcome.out  # type: ignore[attr-defined]
    assert sent.recipients == (HAMLET,)
    message = sent.element
    assert message.get("from") == str(ROOM)
    assert message.get("id") == "i1"
    invite = message.find(f"{USER}x/{USER}invite")
    assert invite is not None
    assert invite.get("from") == str(BOB)
    assert invite.findtext(qname(NS_MUC_USER, "reason")) == "join us"
    assert message.findtext(f"{USER}x/{USER}password") == "pw"
    assert not outcome.state_changed  # type: ignore[attr-defined]


def test_invitations_to_a_members_only_room() -> None:
    room_state = state(members_only=True)
    room_state.set_affiliation("bob@localhost", "member")
    h = Harness(room_state)
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    assert only_error(_invite(h, BOB, HAMLET), BOB) == "forbidden"  # type: ignore[arg-type]
    outcome = _invite(h, ALICE, HAMLET)
    assert outcome.state_changed  # type: ignore[attr-defined]
    assert h.room.state is not None
    assert h.room.state.affiliation_of("hamlet@localhost") == "member"
    assert kind(received(h.join(HAMLET.with_resource("r"), "hamlet"), HAMLET.with_resource("r"))[-1]) == (
        "message/groupchat"
    )


def test_non_occupants_do_not_invite_and_bad_jids_are_refused() -> None:
    h = Harness(state())
    h.join(BOB, "bob")
    assert only_error(_invite(h, CAROL, HAMLET), CAROL) == "not-acceptable"  # type: ignore[arg-type]
    outcome = h.send(
        f"<message from='{BOB}' to='{ROOM}'><x xmlns='{NS_MUC_USER}'><invite to='@@'/></x></message>"
    )
    assert only_error(outcome, BOB) == "jid-malformed"


def test_a_decline_goes_back_to_the_inviter() -> None:
    h = Harness(state())
    h.join(BOB, "bob")
    outcome = h.send(
        f"<message from='{CAROL}' to='{ROOM}'><x xmlns='{NS_MUC_USER}'>"
        f"<decline to='{BOB}'><reason>busy</reason></decline></x></message>"
    )
    (sent,) = outcome.out
    assert sent.recipients == (BOB,)
    decline = sent.element.find(f"{USER}x/{USER}decline")
    assert decline is not None
    assert decline.get("from") == "carol@localhost"
    assert decline.findtext(qname(NS_MUC_USER, "reason")) == "busy"


def test_a_visitor_asks_for_voice_and_a_moderator_grants_it() -> None:
    h = Harness(state(moderated=True))
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    request = submit_form("http://jabber.org/protocol/muc#request", muc__role="participant")
    outcome = h.send(f"<message from='{BOB}' to='{ROOM}'>{request}</message>")
    (to_moderators,) = outcome.out
    assert to_moderators.recipients == (ALICE,)
    form_element = find_form(to_moderators.element, "http://jabber.org/protocol/muc#request")
    assert form_element is not None
    assert form_element.get("type") == "form"
    form = parse(form_element)
    assert (form.text("muc#roomnick"), form.text("muc#jid")) == ("bob", str(BOB))
    approval = submit_form(
        "http://jabber.org/protocol/muc#request", muc__role="participant", muc__roomnick="bob",
        muc__request_allow="true",
    )  # fmt: skip
    # only moderators approve
    assert only_error(h.send(f"<message from='{BOB}' to='{ROOM}'>{approval}</message>"), BOB) == "forbidden"
    outcome = h.send(f"<message from='{ALICE}' to='{ROOM}'>{approval}</message>")
    (to_bob,) = received(outcome, BOB)
    assert item(to_bob)["role"] == "participant"
    assert len(h.say(BOB, "thanks").out) == 1
    # a participant asking again changes nothing
    assert h.send(f"<message from='{BOB}' to='{ROOM}'>{request}</message>").out == []


def test_voice_requests_can_be_disabled() -> None:
    h = Harness(state(moderated=True, allow_voice_requests=False))
    h.join(BOB, "bob")
    request = submit_form("http://jabber.org/protocol/muc#request", muc__role="participant")
    assert only_error(h.send(f"<message from='{BOB}' to='{ROOM}'>{request}</message>"), BOB) == "forbidden"
