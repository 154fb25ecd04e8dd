"""Dialback keys (XEP-0185): the XEP's own example, and what makes a key differ."""

from __future__ import annotations

from imactor.xmpp.dialback import dialback_key, key_matches

SECRET = b"s3cr3tf0rd14lb4ck"


def test_the_xep_example_key() -> None:
    # XEP-0185 §3: receiving xmpp.example.com, originating example.org, stream id D60000229F.
    key = dialback_key(SECRET, "xmpp.example.com", "example.org", "D60000229F")
    assert key == "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"


def test_each_input_changes_the_key() -> None:
    base = dialback_key(SECRET, "xmpp.example.com", "example.org", "D60000229F")
    assert dialback_key(b"other", "xmpp.example.com", "example.org", "D60000229F") != base
    assert dialback_key(SECRET, "example.org", "xmpp.example.com", "D60000229F") != base
    assert dialback_key(SECRET, "xmpp.example.com", "example.org", "D60000229G") != base


def test_the_separator_keeps_names_apart() -> None:
    # XEP-0185 §2 note 5: "example.in" + "form.example.org" must not equal "example.info" + "rm...".
    assert dialback_key(SECRET, "a.b", "c", "1") != dialback_key(SECRET, "a", "b.c", "1")


def test_key_matches_accepts_only_the_right_key() -> None:
    key = dialback_key(SECRET, "b.example", "a.example", "id1")
    assert key_matches(SECRET, "b.example", "a.example", "id1", f"  {key.upper()}\n")
    assert not key_matches(SECRET, "b.example", "a.example", "id2", key)
    assert not key_matches(SECRET, "b.example", "a.example", "id1", "")
    assert not key_matches(SECRET, "b.example", "a.example", "id1", "é" * 64)
