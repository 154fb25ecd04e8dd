"""Bad input: every stanza gets at most an error back to its sender; the room and the others are
untouched, and nothing raises."""

from __future__ import annotations

import json

import pytest

from tests.unit.muc.support import ALICE, BOB, CAROL, ROOM, Harness, condition, state

MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
FORMS = "jabber:x:data"

BAD = [
    # (sender, stanza, the expected error or None for silence)
    (CAROL, f"<presence from='{CAROL}' to='{ROOM}/bob'><x xmlns='{MUC}'/></presence>", "conflict"),
    (CAROL, f"<presence from='{CAROL}' to='{ROOM}/alice'><show>away</show></presence>", "conflict"),
    (CAROL, f"<presence type='unavailable' from='{CAROL}' to='{ROOM}/bob'/>", None),
    (CAROL, f"<presence type='error' from='{CAROL}' to='{ROOM}/bob'/>", None),
    (CAROL, f"<presence type='probe' from='{CAROL}' to='{ROOM}/bob'/>", None),
    (
        CAROL,
        f"<message type='groupchat' from='{CAROL}' to='{ROOM}'><body>x</body></message>",
        "not-acceptable",
    ),
    (
        CAROL,
        f"<message type='chat' from='{CAROL}' to='{ROOM}/bob'><body>x</body></message>",
        "not-acceptable",
    ),
    (
        CAROL,
        f"<message from='{CAROL}' to='{ROOM}'><x xmlns='{USER}'><invite to='x@y'/></x></message>",
        "not-acceptable",
    ),
    (BOB, f"<message from='{BOB}' to='{ROOM}'><x xmlns='{USER}'/></message>", "bad-request"),
    (
        BOB,
        f"<message from='{BOB}' to='{ROOM}'><x xmlns='{USER}'>"
        + "<invite to='x@y'/>" * 50
        + "</x></message>",
        "policy-violation",
    ),
    (BOB, f"<message from='{BOB}' to='{ROOM}'><x xmlns='{FORMS}'><field/></x></message>", "bad-request"),
    (
        BOB,
        f"<message from='{BOB}' to='{ROOM}'><x xmlns='{FORMS}' type='submit'><field var='FORM_TYPE'>"
        f"<value>{MUC}#request</value></field><field var='muc#request_allow'><value>perhaps</value></field>"
        "</x></message>",
        "bad-request",
    ),
    (
        BOB,
        f"<iq type='set' id='1' from='{BOB}' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item nick='alice' role='none'/></query></iq>",
        "forbidden",
    ),
    (
        BOB,
        f"<iq type='set' id='1' from='{BOB}' to='{ROOM}'><query xmlns='{ADMIN}'><item/></query></iq>",
        "bad-request",
    ),
    (
        BOB,
        f"<iq type='set' id='1' from='{BOB}' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item nick='x' role='none' affiliation='none'/></query></iq>",
        "bad-request",
    ),
    (BOB, f"<iq type='get' id='1' from='{BOB}' to='{ROOM}'><query xmlns='{OWNER}'/></iq>", "forbidden"),
    (
        BOB,
        f"<iq type='set' id='1' from='{BOB}' to='{ROOM}'><query xmlns='{OWNER}'><destroy/></query></iq>",
        "forbidden",
    ),
    (
        ALICE,
        f"<iq type='set' id='1' from='{ALICE}' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='{FORMS}' "
        "type='submit'><field var='muc#roomconfig_maxusers'><value>-3</value></field></x></query></iq>",
        "bad-request",
    ),
    (
        ALICE,
        f"<iq type='set' id='1' from='{ALICE}' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='{FORMS}' "
        "type='submit'><field><value>1</value></field></x></query></iq>",
        "bad-request",
    ),
    (
        ALICE,
        f"<iq type='set' id='1' from='{ALICE}' to='{ROOM}'><query xmlns='{OWNER}'>"
        "<destroy jid='a@b@c'/></query></iq>",
        "jid-malformed",
    ),
    (
        BOB,
        f"<iq type='get' id='1' from='{BOB}' to='{ROOM}'><query xmlns='urn:example:nothing'/></iq>",
        "service-unavailable",
    ),
    (
        BOB,
        f"<iq type='get' id='1' from='{BOB}' to='{ROOM}'>"
        "<query xmlns='http://jabber.org/protocol/disco#info' node='nope'/></iq>",
        "item-not-found",
    ),
    (BOB, f"<iq type='result' id='nope' from='{BOB}' to='{ROOM}/alice'/>", None),
    (BOB, f"<iq type='error' id='1' from='{BOB}' to='{ROOM}'/>", None),
    (
        BOB,
        f"<message from='{BOB}' to='other@conference.localhost'><body>x</body></message>",
        "item-not-found",
    ),
]


@pytest.mark.parametrize(("sender", "text", "expected"), BAD)
def test_bad_input_gets_its_error_and_changes_nothing(
    sender: object, text: str, expected: str | None
) -> None:
    h = Harness(state())
    h.join(ALICE, "alice")
    h.join(BOB, "bob")
    before = json.dumps(h.room.state.to_json())  # type: ignore[union-attr]
    occupants = h.room.occupants()
    outcome = h.send(text)
    if expected is None:
        assert outcome.out == []
    else:
        (reply,) = outcome.out
        assert reply.recipients == (sender,)
        assert condition(reply.element) == expected
    assert not outcome.state_changed
    assert not outcome.destroyed
    assert outcome.archive == []
    assert json.dumps(h.room.state.to_json()) == before  # type: ignore[union-attr]
    assert h.room.occupants() == occupants
