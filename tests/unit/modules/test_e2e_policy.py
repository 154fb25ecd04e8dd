"""The end-to-end policy's view of a message: is it one-to-one IM with a body, is it encrypted."""

from __future__ import annotations

import pytest

from imactor.modules import e2e_policy
from imactor.server.modules import ModuleConfigError
from imactor.xmpp.stanza import Element, parse


def message(payload: str, *, type_: str = "chat", sender: str = "a@x/r") -> Element:
    return parse(
        f"<message xmlns='jabber:client' from='{sender}' to='b@x' type='{type_}'>{payload}</message>".encode()
    )


@pytest.mark.parametrize(
    ("element", "subject"),
    [
        (message("<body>hi</body>"), True),
        (message("<body>hi</body>", type_="normal"), True),
        (message("<body>hi</body>", type_="headline"), False),
        (message("<body>hi</body>", type_="groupchat"), False),
        (message("<body>hi</body>", type_="error"), False),
        (message("<composing xmlns='http://jabber.org/protocol/chatstates'/>"), False),
        (message("<body>announcement</body>", sender="x"), False),  # the server itself
    ],
)
def test_which_messages_the_policy_judges(element: Element, subject: bool) -> None:
    assert e2e_policy.is_subject(element) is subject


@pytest.mark.parametrize(
    "payload",
    [
        "<encrypted xmlns='eu.siacs.conversations.axolotl'/>",
        "<encrypted xmlns='urn:xmpp:omemo:2'/>",
        "<openpgp xmlns='urn:xmpp:openpgp:0'/>",
        "<x xmlns='jabber:x:encrypted'/>",
    ],
)
def test_encrypted_payloads(payload: str) -> None:
    assert e2e_policy.is_encrypted(message(payload + "<body>fallback</body>"))
    assert not e2e_policy.is_encrypted(message("<body>plain</body><x xmlns='jabber:x:oob'/>"))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ModuleConfigError, match="mode"):
        e2e_policy.Options(mode="sometimes")
