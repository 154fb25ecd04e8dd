"""Restart intensity: the pure decision of when a supervisor gives up.

OTP's rule: if more than ``intensity`` restarts happen within ``period``
seconds, the supervisor stops all its children and exits, escalating the
failure to its own parent. This module only *decides*; it never reads a
clock and does no I/O (h11-style sans-IO), so it is tested with plain
timestamps. The caller passes ``trio.current_time()``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["RestartBudget", "RestartBudgetStatistics"]


@dataclass(frozen=True, slots=True)
class RestartBudgetStatistics:
    """A snapshot of a `RestartBudget`.

    Attributes:
        intensity: Restarts allowed within one period.
        period: Length of the sliding window, in seconds.
        charges_total: Every restart ever charged, including the one that
            exceeded the budget.
        recent: Restarts still inside the window (capped at
            ``intensity + 1``, which is all the decision needs).
    """

    intensity: int
    period: float
    charges_total: int
    recent: int


class RestartBudget:
    """Allows at most ``intensity`` restarts in any window of ``period`` seconds.

    A restart charged at time ``t`` stays in the window up to and including
    ``t + period`` (the boundary is inclusive, as in OTP's supervisor), so
    with ``intensity=1, period=10`` restarts at 0 and 10 exceed the budget
    while restarts at 0 and 10.001 do not. ``intensity=0`` means the first
    restart already escalates.

    A budget holds restart history, so each supervisor owns one: supervisors
    take a `fresh` copy of the budget they are given.

    Args:
        intensity: Maximum number of restarts within ``period``; ``>= 0``.
        period: Window length in seconds; ``> 0`` (``math.inf`` allowed).

    Raises:
        ValueError: If ``intensity`` is negative or ``period`` is not
            strictly positive.
        TypeError: If ``intensity`` is not an ``int``.
    """

    __slots__ = ("_charges_total", "_intensity", "_period", "_recent")

    def __init__(self, intensity: int, period: float) -> None:
        # bool is an int subclass; RestartBudget(True, ...) is surely a mistake.
        if not isinstance(intensity, int) or isinstance(intensity, bool):
            raise TypeError(f"intensity must be an int, got {intensity!r}")
        if intensity < 0:
            raise ValueError(f"intensity must be >= 0 restarts, got {intensity}")
        if math.isnan(period) or period <= 0:
            raise ValueError(f"period must be > 0 seconds, got {period!r}")
        self._intensity = intensity
        self._period = float(period)
        # Only the newest intensity+1 timestamps can decide anything: if they
        # all lie in the window the budget is exceeded, whatever came before.
        self._recent: deque[float] = deque(maxlen=intensity + 1)
        self._charges_total = 0

    @property
    def intensity(self) -> int:
        """Maximum number of restarts allowed within `period`."""
        return self._intensity

    @property
    def period(self) -> float:
        """Length of the sliding window, in seconds."""
        return self._period

    def fresh(self) -> RestartBudget:
        """Returns a new budget with the same limits and no history."""
        return RestartBudget(self._intensity, self._period)

    def charge(self, now: float) -> bool:
        """Records a restart at time ``now`` and decides whether it is allowed.

        Args:
            now: The current time in seconds, from a monotonic clock.

        Returns:
            True if the restart fits the budget; False if more than
            ``intensity`` restarts now lie within the last ``period``
            seconds, in which case the supervisor must escalate. The
            restart is recorded either way.

        Raises:
            ValueError: If ``now`` is NaN or earlier than the previous charge
                (the clock must be monotonic).
        """
        if math.isnan(now):
            raise ValueError("now must be a number, got NaN")
        if self._recent and now < self._recent[-1]:
            raise ValueError(f"time went backwards: {now!r} < {self._recent[-1]!r}")
        self._recent.append(now)
        self._charges_total += 1
        self._forget_before(now - self._period)
        return len(self._recent) <= self._intensity

    def statistics(self, now: float | None = None) -> RestartBudgetStatistics:
        """Returns a snapshot of this budget.

        Args:
            now: Count ``recent`` restarts as of this time; defaults to the
                time of the last charge. Reading never changes the history.

        Returns:
            A frozen `RestartBudgetStatistics`.
        """
        if now is None:
            recent = len(self._recent)
        else:
            threshold = now - self._period
            recent = sum(1 for t in self._recent if t >= threshold)
        return RestartBudgetStatistics(
            intensity=self._intensity,
            period=self._period,
            charges_total=self._charges_total,
            recent=recent,
        )

    def _forget_before(self, threshold: float) -> None:
        # Strictly older than the threshold only: the boundary is inclusive.
        while self._recent and self._recent[0] < threshold:
            self._recent.popleft()

    def __repr__(self) -> str:
        return f"RestartBudget(intensity={self._intensity!r}, period={self._period!r})"
