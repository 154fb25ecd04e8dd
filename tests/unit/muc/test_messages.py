"""Messages in a room (XEP-0045 §7.4, §7.5, §8.1, XEP-0359): groupchat, subject, private messages."""

from __future__ import annotations

from lxml import etree

from imactor.xmpp.namespaces import NS_MUC_USER, NS_SID, qname
from tests.unit.muc.support import (
    ALICE,
    ALICE2,
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

STANZA_ID = qname(NS_SID, "stanza-id")


def _room(**config: object) -> Harness:
    h = Harness(state(**config))
    h.join(ALICE, "alice")
    h.join(ALICE2, "alice")
    h.join(BOB, "bob")
    return h


def test_a_groupchat_message_goes_to_every_session_with_a_room_stanza_id() -> None:
    h = _room()
    outcome = h.say(BOB, "hello", f"<stanza-id xmlns='{NS_SID}' by='{ROOM}' id='forged'/>"
                    f"<stanza-id xmlns='{NS_SID}' by='bob@localhost' id='kept'/>")  # fmt: skip
    (sent,) = outcome.out
    assert set(sent.recipients) == {ALICE, ALICE2, BOB}
    message = sent.element
    assert message.get("from") == f"{ROOM}/bob"
    assert message.get("to") is None
    assert message.get("id") == "m1"
    ids = [(s.get("by"), s.get("id")) for s in message.iter(STANZA_ID)]
    assert ids == [("bob@localhost", "kept"), (str(ROOM), "sid-1")]
    (archived,) = outcome.archive
    assert (archived.stanza_id, archived.nick, archived.real_jid, archived.stamp) == (
        "sid-1",
        "bob",
        BOB,
        h.now,
    )
    assert archived.element is not message  # the emitted element belongs to the actor
    assert etree.tostring(archived.element) == etree.tostring(message)
    assert list(h.room.history) == [archived]


def test_without_logging_nothing_is_archived_and_no_stanza_id_is_claimed() -> None:
    h = _room(enable_logging=False)
    outcome = h.say(BOB, "off the record")
    assert outcome.archive == []
    assert outcome.out[0].element.find(STANZA_ID) is None
    assert len(h.room.history) == 1  # still history for newcomers


def test_bodyless_messages_are_broadcast_but_not_kept() -> None:
    h = _room()
    outcome = h.send(
        f"<message type='groupchat' from='{BOB}' to='{ROOM}'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert len(outcome.out) == 1
    assert outcome.archive == []
    assert not h.room.history


def test_history_keeps_history_length_messages() -> None:
    h = _room(history_length=2)
    for n in range(5):
        h.say(BOB, f"m{n}")
    assert [i.element.findtext("{jabber:client}body") for i in h.room.history] == ["m3", "m4"]


def test_non_occupants_may_not_send_to_the_room() -> None:
    h = _room()
    assert only_error(h.say(CAROL, "let me in"), CAROL) == "not-acceptable"


def test_visitors_may_not_speak_in_a_moderated_room() -> None:
    h = _room(moderated=True)
    outcome = h.say(BOB, "can I?")
    assert only_error(outcome, BOB) == "forbidden"
    assert outcome.archive == []
    assert len(h.say(ALICE, "you cannot").out) == 1


def test_subject_change_by_a_moderator_is_stored_and_broadcast() -> None:
    h = _room()
    outcome = h.send(
        f"<message type='groupchat' from='{ALICE}' to='{ROOM}'><subject>Plans</subject></message>"
    )
    (sent,) = outcome.out
    assert sent.element.findtext("{jabber:client}subject") == "Plans"
    assert len(sent.recipients) == 3
    assert outcome.state_changed
    state_now = h.room.state
    assert state_now is not None
    assert (state_now.subject, state_now.subject_by) == ("Plans", "alice")
    assert len(outcome.archive) == 1
    assert not h.room.history
    outcome = h.join(CAROL, "carol")
    subject = received(outcome, CAROL)[-1]
    assert subject.get("from") == f"{ROOM}/alice"
    assert subject.findtext("{jabber:client}subject") == "Plans"


def test_subject_change_by_a_participant_needs_change_subject() -> None:
    h = _room()
    message = f"<message type='groupchat' from='{BOB}' to='{ROOM}'><subject>Mine</subject></message>"
    assert only_error(h.send(message), BOB) == "forbidden"
    h2 = _room(change_subject=True)
    assert len(h2.send(message).out) == 1


def test_private_messages_reach_every_session_of_the_nick() -> None:
    h = _room()
    outcome = h.send(
        f"<message type='chat' id='p1' from='{BOB}' to='{ROOM}/alice'><body>psst</body></message>"
    )
    (sent,) = outcome.out
    assert set(sent.recipients) == {ALICE, ALICE2}
    assert sent.element.get("from") == f"{ROOM}/bob"
    assert sent.element.find(qname(NS_MUC_USER, "x")) is not None
    assert outcome.archive == []


def test_private_message_errors() -> None:
    h = _room()
    pm = "<message type='{t}' from='{f}' to='{ROOM}/{n}'><body>x</body></message>"
    assert only_error(h.send(pm.format(t="chat", f=BOB, ROOM=ROOM, n="nobody")), BOB) == "item-not-found"
    assert only_error(h.send(pm.format(t="chat", f=CAROL, ROOM=ROOM, n="alice")), CAROL) == "not-acceptable"
    assert only_error(h.send(pm.format(t="groupchat", f=BOB, ROOM=ROOM, n="alice")), BOB) == "bad-request"
    h2 = _room(allow_pm="none")
    assert only_error(h2.send(pm.format(t="chat", f=BOB, ROOM=ROOM, n="alice")), BOB) == "forbidden"
    h3 = _room(allow_pm="moderators")
    assert only_error(h3.send(pm.format(t="chat", f=BOB, ROOM=ROOM, n="alice")), BOB) == "forbidden"
    assert len(h3.send(pm.format(t="chat", f=ALICE, ROOM=ROOM, n="bob")).out) == 1


def test_an_error_message_from_an_occupant_removes_it_with_333() -> None:
    h = _room()
    outcome = h.send(
        f"<message type='error' from='{BOB}' to='{ROOM}/alice'><error type='cancel'>"
        "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    assert received(outcome, BOB) == []
    (to_alice,) = {id(e): e for e in received(outcome, ALICE)}.values()
    assert kind(to_alice) == "presence/unavailable"
    assert codes(to_alice) == ["333"]
    assert [o.nick for o in h.room.occupants()] == ["alice"]
    assert h.send(f"<message type='error' from='{CAROL}' to='{ROOM}'/>").out == []


def test_a_chat_message_to_the_room_itself_is_a_bad_request() -> None:
    h = _room()
    outcome = h.send(f"<message type='chat' from='{BOB}' to='{ROOM}'><body>hi room</body></message>")
    assert only_error(outcome, BOB) == "bad-request"
