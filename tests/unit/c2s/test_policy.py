"""The per-client policy (`imactor.c2s.policy.ClientPolicy`): stanza rate shaping and the block list."""

from __future__ import annotations

import pytest

from imactor.c2s.policy import ClientPolicy
from imactor.xmpp.jid import JID


def test_a_burst_passes_then_each_stanza_waits_its_share() -> None:
    policy = ClientPolicy(rate=10.0, burst=3, now=0.0)
    assert [policy.delay_for_one(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert policy.delay_for_one(0.0) == pytest.approx(0.1)
    assert policy.delay_for_one(0.0) == pytest.approx(0.2)
    # Quiet time refills the bucket, never beyond the burst.
    assert policy.delay_for_one(100.0) == 0.0
    assert policy.tokens == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("blocked", "to", "expected"),
    [
        ({"eve@evil.example"}, "eve@evil.example/phone", True),  # bare blocks every resource
        ({"eve@evil.example/phone"}, "eve@evil.example/laptop", False),  # full blocks one
        ({"evil.example"}, "anyone@evil.example", True),  # a domain blocks all its JIDs
        (set(), "eve@evil.example", False),
    ],
)
def test_the_block_list_matches_full_bare_and_domain(blocked: set[str], to: str, expected: bool) -> None:
    policy = ClientPolicy(rate=10.0, burst=3, now=0.0)
    policy.blocklist = frozenset(blocked)
    assert policy.blocks(JID.parse(to)) is expected
