"""What one client may do, decided per stanza: its stanza rate and its block list.

- Rate: a token bucket per connection, `rate` stanzas per second in bursts of up to `burst`
  (`[limits] stanzas_per_second`, `stanza_burst`). A flooding client is not refused, it is slowed
  down: the session waits before it processes the stanza, so only that client's stream backs up.
- Block list (XEP-0191): the JIDs the account blocks, as its actor last told the session
  (`BlocklistChanged`, or with the bind). Nothing goes out to them (§3.6).

One object per session, owned by the session and asked one way.
"""

from __future__ import annotations

from imactor.xmpp.jid import JID

__all__ = ["ClientPolicy"]


class ClientPolicy:
    __slots__ = ("blocklist", "burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now
        #: Blocked JIDs as strings: full, bare or a domain (XEP-0191 §3.3 matching).
        self.blocklist: frozenset[str] = frozenset()

    def delay_for_one(self, now: float) -> float:
        """Take a token; return how long the caller must wait before the stanza is processed."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def blocks(self, to: JID) -> bool:
        """Whether the account blocks `to` (by full JID, bare JID or domain)."""
        blocked = self.blocklist
        return bool(blocked) and (str(to) in blocked or str(to.bare) in blocked or to.domainpart in blocked)
