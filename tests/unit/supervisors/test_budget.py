"""RestartBudget is pure: timestamps in, decisions out. No clock, no Trio."""

from __future__ import annotations

import math
import random

import pytest

from supervisors import RestartBudget, RestartBudgetStatistics


def charges(budget: RestartBudget, *times: float) -> list[bool]:
    return [budget.charge(t) for t in times]


@pytest.mark.parametrize("intensity", [-1, -100])
def test_negative_intensity_is_rejected(intensity: int) -> None:
    with pytest.raises(ValueError, match="intensity must be >= 0"):
        RestartBudget(intensity, 10.0)


@pytest.mark.parametrize("period", [0.0, -1.0, math.nan])
def test_non_positive_period_is_rejected(period: float) -> None:
    with pytest.raises(ValueError, match="period must be > 0"):
        RestartBudget(1, period)


@pytest.mark.parametrize("intensity", [True, 1.5, "3"])
def test_non_int_intensity_is_rejected(intensity: object) -> None:
    with pytest.raises(TypeError, match="intensity must be an int"):
        RestartBudget(intensity, 10.0)  # type: ignore[arg-type]


def test_intensity_zero_refuses_the_first_restart() -> None:
    assert charges(RestartBudget(0, 10.0), 0.0) == [False]


def test_allows_exactly_intensity_restarts_at_the_same_instant() -> None:
    assert charges(RestartBudget(3, 10.0), 5.0, 5.0, 5.0, 5.0) == [True, True, True, False]


def test_restart_exactly_one_period_later_still_counts() -> None:
    # OTP: a restart at t stays in the window up to and including t + period.
    assert charges(RestartBudget(1, 10.0), 0.0, 10.0) == [True, False]


def test_restart_just_after_one_period_does_not_count() -> None:
    assert charges(RestartBudget(1, 10.0), 0.0, 10.5) == [True, True]


def test_window_slides() -> None:
    assert charges(RestartBudget(2, 10.0), 0.0, 5.0, 10.0) == [True, True, False]
    assert charges(RestartBudget(2, 10.0), 0.0, 5.0, 10.5) == [True, True, True]


def test_exceeding_is_not_a_latch() -> None:
    # The supervisor escalates on the first False; a budget that is still
    # consulted afterwards judges only the window.
    assert charges(RestartBudget(1, 10.0), 0.0, 1.0, 100.0) == [True, False, True]


def test_infinite_period_never_forgets() -> None:
    assert charges(RestartBudget(1, math.inf), 0.0, 1e12) == [True, False]


def test_time_going_backwards_is_rejected() -> None:
    budget = RestartBudget(5, 10.0)
    budget.charge(5.0)
    with pytest.raises(ValueError, match="time went backwards"):
        budget.charge(4.0)


def test_nan_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        RestartBudget(5, 10.0).charge(math.nan)


def test_statistics_count_every_charge_and_the_recent_window() -> None:
    budget = RestartBudget(2, 10.0)
    charges(budget, 0.0, 1.0, 2.0)  # the third one exceeds
    assert budget.statistics() == RestartBudgetStatistics(intensity=2, period=10.0, charges_total=3, recent=3)
    assert budget.statistics(now=11.5).recent == 1  # only t=2.0 is still inside [1.5, 11.5]
    assert budget.statistics(now=100.0).recent == 0
    # Reading statistics must not forget history.
    assert budget.statistics().recent == 3


def test_history_is_bounded_by_intensity() -> None:
    budget = RestartBudget(2, math.inf)
    charges(budget, *range(1000))
    stats = budget.statistics()
    assert stats.charges_total == 1000
    assert stats.recent == 3  # intensity + 1 timestamps are all the decision needs


def test_fresh_has_same_limits_and_no_history() -> None:
    budget = RestartBudget(1, 10.0)
    charges(budget, 0.0, 0.0)
    fresh = budget.fresh()
    assert (fresh.intensity, fresh.period) == (1, 10.0)
    assert fresh.statistics().charges_total == 0
    assert fresh.charge(0.0) is True
    assert repr(fresh) == "RestartBudget(intensity=1, period=10.0)"


@pytest.mark.parametrize("seed", range(20))
def test_matches_the_naive_definition(seed: int) -> None:
    """Against a keep-everything reference: > R restarts within the last T seconds."""
    rng = random.Random(seed)
    intensity, period = rng.randint(0, 5), rng.choice([1.0, 2.5, 10.0])
    budget = RestartBudget(intensity, period)
    history: list[float] = []
    now = 0.0
    for _ in range(200):
        now += rng.choice([0.0, 0.25, 0.5, 1.0, 2.5, 10.0])
        history.append(now)
        expected = sum(1 for t in history if t >= now - period) <= intensity
        assert budget.charge(now) is expected, (intensity, period, history[-8:])
