"""XEP-0215 options and credentials (`imactor.modules.extdisco`): the TURN REST API convention that
coturn checks, and clear errors for a wrong `services` table."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from imactor.modules.extdisco import Options, credentials_for
from imactor.server.modules import ModuleConfigError
from imactor.xmpp.jid import JID


def test_defaults_follow_the_service_type() -> None:
    configured = [{"type": "stun", "host": "stun.example"}, {"type": "turns", "host": "t.example"}]
    stun, turns = Options(configured).services
    assert (stun.port, stun.transport, stun.restricted) == (3478, "udp", False)
    assert (turns.port, turns.transport) == (5349, "tcp")


def test_shared_secret_credentials_are_what_coturn_computes() -> None:
    (turn,) = Options([{"type": "turn", "host": "turn.example", "secret": "s3cret", "ttl": 600}]).services
    made = credentials_for(turn, JID.parse("alice@localhost/phone"), now=1_700_000_000.7)
    assert made is not None
    assert made.username == "1700000600:alice@localhost"  # expiry, then the bare JID
    expected = hmac.new(b"s3cret", made.username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(made.password) == expected
    assert made.expires is not None
    assert int(made.expires.timestamp()) == 1_700_000_600


def test_fixed_credentials_and_none() -> None:
    fixed, open_ = Options(
        [{"type": "turn", "host": "a", "username": "u", "password": "p"}, {"type": "stun", "host": "b"}]
    ).services
    made = credentials_for(fixed, JID.parse("bob@localhost"), now=0)
    assert made is not None
    assert (made.username, made.password, made.expires) == ("u", "p", None)
    assert credentials_for(open_, JID.parse("bob@localhost"), now=0) is None


@pytest.mark.parametrize(
    ("service", "names"),
    [
        ({"type": "ftp", "host": "a"}, "services[0].type"),
        ({"type": "turn"}, "services[0].host"),
        ({"type": "turn", "host": "a", "port": 70000}, "services[0].port"),
        ({"type": "turn", "host": "a", "transport": "sctp"}, "services[0].transport"),
        ({"type": "turn", "host": "a", "ttl": 0}, "services[0].ttl"),
        ({"type": "turn", "host": "a", "colour": "red"}, "services[0].colour: unknown key"),
        ({"type": "turn", "host": "a", "secret": "s", "username": "u", "password": "p"}, "not both"),
        ({"type": "turn", "host": "a", "username": "u"}, "go together"),
        ("turn.example", "expected a table"),
    ],
)
def test_a_wrong_service_names_its_key(service: object, names: str) -> None:
    with pytest.raises(ModuleConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        Options([service])
