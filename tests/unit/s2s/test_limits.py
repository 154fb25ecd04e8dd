"""The inbound rate of remote domains: token buckets on an explicit clock (no sleeping)."""

from __future__ import annotations

import pytest

from imactor.config import Rate
from imactor.s2s.limits import InboundLimits, TokenBucket


def test_a_burst_passes_then_each_stanza_waits_its_share() -> None:
    bucket = TokenBucket(Rate(10.0, 3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # Beyond the burst, the n-th stanza waits n/rate: the debt adds up.
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.0) == pytest.approx(0.2)
    assert bucket.in_debt(0.1)
    # Once the debt is paid (0.2 s) and a token earned (0.1 s more), the next goes at once.
    assert not bucket.in_debt(0.2)
    assert bucket.take(0.35) == 0.0


def test_the_bucket_refills_up_to_its_burst_only() -> None:
    bucket = TokenBucket(Rate(1.0, 2), now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert not bucket.full(1.0)
    assert bucket.full(100.0)
    # A long quiet spell earns the burst, no more.
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_a_clock_going_backwards_earns_nothing() -> None:
    bucket = TokenBucket(Rate(1.0, 1), now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) == pytest.approx(1.0)
    assert bucket.take(10.0) == pytest.approx(2.0)


def test_rate_zero_is_no_limit() -> None:
    bucket = TokenBucket(Rate(0.0, 1), now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(10_000))


def test_limits_are_per_domain_and_counted() -> None:
    rates = {"slow.example": Rate(2.0, 1)}
    limits = InboundLimits(lambda domain: rates.get(domain, Rate(0.0, 1)))
    assert limits.delay("slow.example", 0.0) == 0.0
    assert limits.delay("fast.example", 0.0) == 0.0
    assert limits.delay("slow.example", 0.0) == pytest.approx(0.5)
    assert limits.delay("slow.example", 0.0) == pytest.approx(1.0)
    assert [limits.delay("fast.example", 0.0) for _ in range(100)] == [0.0] * 100
    assert (limits.stanzas_in, limits.throttled) == (104, 2)
    assert limits.throttled_seconds == pytest.approx(1.5)
    assert limits.over(0.0) == ("slow.example",)
    assert limits.over(1.0) == ()


def test_idle_domains_are_forgotten_when_there_are_many() -> None:
    limits = InboundLimits(lambda domain: Rate(1.0, 1))
    for n in range(InboundLimits.PRUNE_AT):
        limits.delay(f"d{n}.example", 0.0)
    limits.delay("busy.example", 0.0)
    limits.delay("busy.example", 0.0)  # in debt: kept
    limits.delay("new.example", 0.5)  # the others' buckets are not full yet at 0.5 s
    assert len(limits._buckets) == InboundLimits.PRUNE_AT + 2
    limits.delay("newer.example", 10.0)  # now every idle bucket is full again: forgotten
    assert sorted(limits._buckets) == ["newer.example"]
