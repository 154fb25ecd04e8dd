"""XEP-0280 eligibility and copies, sans-IO."""

from __future__ import annotations

import pytest

from imactor.xmpp import carbons
from imactor.xmpp.jid import JID
from imactor.xmpp.stanza import Element, parse

J = "xmlns='jabber:client'"


def message(type_: str | None = "chat", payload: str = "<body>hi</body>") -> Element:
    type_attr = "" if type_ is None else f" type='{type_}'"
    return parse(f"<message {J} from='b@x/r' to='a@x'{type_attr}>{payload}</message>".encode())


@pytest.mark.parametrize(
    ("type_", "payload", "expected"),
    [
        ("chat", "<body>hi</body>", True),
        ("chat", "<composing xmlns='http://jabber.org/protocol/chatstates'/>", True),
        ("normal", "<body>hi</body>", True),
        (None, "<body>hi</body>", True),
        (None, "<received xmlns='urn:xmpp:receipts' id='1'/>", True),
        (None, "<x xmlns='jabber:x:conference' jid='room@muc.x'/>", False),
        ("groupchat", "<body>hi</body>", False),
        ("headline", "<body>hi</body>", False),
        ("error", "<body>hi</body>", False),
        ("chat", "<body>hi</body><private xmlns='urn:xmpp:carbons:2'/>", False),
        ("chat", "<body>hi</body><no-copy xmlns='urn:xmpp:hints'/>", False),
        ("chat", "<body>hi</body><x xmlns='http://jabber.org/protocol/muc#user'/>", False),
        ("chat", "<sent xmlns='urn:xmpp:carbons:2'/>", False),
    ],
)
def test_eligible(type_: str | None, payload: str, expected: bool) -> None:
    assert carbons.eligible(message(type_, payload)) is expected


def test_wrap_keeps_the_type_and_forwards_the_original() -> None:
    original = message()
    copy = carbons.wrap("received", original, JID.parse("a@x"), JID.parse("a@x/phone"))
    assert copy.get("from") == "a@x"
    assert copy.get("to") == "a@x/phone"
    assert copy.get("type") == "chat"
    inner = copy.find("{urn:xmpp:carbons:2}received/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
    assert inner is not None
    assert inner.findtext("{jabber:client}body") == "hi"
    assert carbons.is_carbon(copy)
    assert not carbons.is_carbon(original)
