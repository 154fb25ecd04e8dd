"""The inbound stanza rate of remote domains (`[s2s] rate`, `burst`, `rate_overrides`).

One `TokenBucket` per remote domain in each worker, shared by every stream from that domain's
servers to the worker: a domain cannot get around its limit by opening more streams. RFC 6120
has no way to tell a server to slow down, and dropping stanzas loses what a well-meaning server
sent during a burst, so the limit is enforced by reading more slowly: a stream whose domain is
over its rate waits before routing the next stanza, and reads nothing meanwhile, so TCP's own
flow control pushes back on the peer (its send buffer fills, its queue grows; nothing is lost).

The bucket takes the time as an argument (no clock of its own): the wing passes trio's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imactor.config import Rate

#: The rate allowed to a remote domain (`S2SConfig.rate_of`).
RateOf = Callable[[str], Rate]


class TokenBucket:
    """`rate.burst` tokens at most, refilled at `rate.per_second`. `take` always takes one and
    returns how long to wait before acting on it: the debt of several streams adds up, so
    together they stay within the rate however many there are."""

    __slots__ = ("_stamp", "_tokens", "rate")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate.burst)
        self._stamp = now

    def take(self, now: float) -> float:
        """Spend a token; the seconds to wait before the stanza may go on (0.0: at once)."""
        if self.rate.per_second <= 0:
            return 0.0  # 0: no limit
        self._refill(now)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate.per_second

    def in_debt(self, now: float) -> bool:
        """Whether stanzas taken earlier still wait (more were taken than the burst held)."""
        self._refill(now)
        return self._tokens < 0

    def full(self, now: float) -> bool:
        """Whether the bucket is back to its burst: forgetting it then changes nothing."""
        self._refill(now)
        return self._tokens >= self.rate.burst

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(float(self.rate.burst), self._tokens + elapsed * self.rate.per_second)


@dataclass(slots=True)
class InboundStatistics:
    """Counted by the wing for `imactor status --json` (record "s2s")."""

    stanzas_in: int = 0  #: stanzas routed from authenticated inbound streams
    throttled: int = 0  #: of them, how many had to wait for their domain's rate
    throttled_seconds: float = 0.0  #: the sum of those waits
    throttled_domains: tuple[str, ...] = ()  #: domains over their rate now (in debt)
    outgoing: int = 0  #: outbound streams open now


class InboundLimits:
    """The buckets of the remote domains that sent us stanzas lately, by domain."""

    #: Past this many buckets, the full ones (idle domains) are forgotten.
    PRUNE_AT = 1024

    def __init__(self, rate_of: RateOf) -> None:
        self._rate_of = rate_of
        self._buckets: dict[str, TokenBucket] = {}
        self.stanzas_in = self.throttled = 0
        self.throttled_seconds = 0.0

    def delay(self, domain: str, now: float) -> float:
        """Count a stanza from `domain`; the seconds its stream must wait before routing it."""
        self.stanzas_in += 1
        bucket = self._buckets.get(domain)
        if bucket is None:
            if len(self._buckets) >= self.PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[domain] = TokenBucket(self._rate_of(domain), now)
        wait = bucket.take(now)
        if wait > 0:
            self.throttled += 1
            self.throttled_seconds += wait
        return wait

    def over(self, now: float) -> tuple[str, ...]:
        """The domains whose stanzas wait now (their bucket is in debt)."""
        return tuple(sorted(d for d, b in self._buckets.items() if b.in_debt(now)))

    def _prune(self, now: float) -> None:
        for domain in [d for d, b in self._buckets.items() if b.full(now)]:
            del self._buckets[domain]
