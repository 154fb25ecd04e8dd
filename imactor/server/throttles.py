"""Throttles of failed logins and of registrations, per account and per address (RFC 6120 §13.7.1).

Capabilities of the worker, built by its root and read by the client sessions (logins), the
module API (registrations) and a reload (new limits).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import trio

#: FailureThrottle sweeps expired keys once it holds more than this many (and then twice as many
#: as survived the last sweep).
_SWEEP_MIN = 1024


class FailureThrottle:
    """Counts failures per key in a sliding window (failed logins, registrations per address)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._sweep_at = _SWEEP_MIN

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            self._failures.pop(key, None)
        return stamps

    def is_blocked(self, key: str, now: float | None = None) -> bool:
        now = trio.current_time() if now is None else now
        return len(self._recent(key, now)) >= self.limit

    def record(self, key: str, now: float | None = None) -> None:
        now = trio.current_time() if now is None else now
        self._recent(key, now)
        stamps = self._failures.setdefault(key, deque())
        stamps.append(now)
        # Only the newest `limit` stamps decide a block: a client hammering away while blocked
        # must not grow the memory kept for its key.
        while len(stamps) > self.limit:
            stamps.popleft()
        if len(self._failures) > self._sweep_at:
            # Keys are pruned when looked up again, and a made-up username never is: drop the
            # expired ones now and then (amortized O(1) per record), or memory grows forever.
            for stale in list(self._failures):
                self._recent(stale, now)
            self._sweep_at = max(_SWEEP_MIN, 2 * len(self._failures))


@dataclass
class LoginThrottle:
    """RFC 6120 §13.7.1 advice: throttle repeated failed logins, per account and per address."""

    per_account: FailureThrottle
    per_address: FailureThrottle

    def is_blocked(self, username: str, address: str) -> bool:
        return self.per_account.is_blocked("u:" + username) or self.per_address.is_blocked("a:" + address)

    def record_failure(self, username: str | None, address: str) -> None:
        if username is not None:
            self.per_account.record("u:" + username)
        self.per_address.record("a:" + address)
