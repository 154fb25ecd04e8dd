"""When reminders are due (`imactor.modules.adhoc.schedule`): the times users type and the
repeat rules, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imactor.modules.adhoc.schedule import following, format_time, parse_when
from imactor.xmpp.dataforms import FormError

DAY = 86400
NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC).timestamp()  # a Friday


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("2026-12-24T09:00:00Z", at("2026-12-24T09:00:00")),
        ("2026-12-24T09:00:00.250Z", at("2026-12-24T09:00:00") + 0.25),
        ("2026-12-24T10:30:00+01:30", at("2026-12-24T09:00:00")),
        ("2026-12-24T04:00:00-05:00", at("2026-12-24T09:00:00")),
        ("  2026-12-24T09:00:00Z ", at("2026-12-24T09:00:00")),
        ("in 10 minutes", NOW + 600),
        ("in 1 minute", NOW + 60),
        ("In 2 Hours", NOW + 7200),
        ("in 3 days", NOW + 3 * DAY),
        ("in 1 week", NOW + 7 * DAY),
        ("in 45 s", NOW + 45),
        ("in 5m", NOW + 300),
    ],
)
def test_times_users_type(typed: str, expected: float) -> None:
    assert parse_when(typed, NOW) == expected


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("2026-12-24T09:00:00", "is not a time"),  # no time zone: which one would it be?
        ("2026-12-24 09:00:00Z", "is not a time"),
        ("24.12.2026 09:00", "is not a time"),
        ("2026-13-01T09:00:00Z", "not a valid date-time"),
        ("2026-02-29T09:00:00Z", "not a valid date-time"),
        ("2026-12-24T25:00:00Z", "not a valid date-time"),
        ("in ten minutes", "is not a time"),
        ("in 10 fortnights", "is not a time"),
        ("in -5 minutes", "is not a time"),
        ("", "is not a time"),
    ],
)
def test_what_is_not_a_time(typed: str, reason: str) -> None:
    with pytest.raises(FormError, match=reason):
        parse_when(typed, NOW)


def test_a_reminder_that_does_not_repeat_has_no_next_time() -> None:
    assert following(NOW, "none", NOW) is None


def test_daily_and_weekly_add_a_day_and_a_week_in_utc() -> None:
    assert following(NOW, "daily", NOW) == NOW + DAY
    assert following(NOW, "weekly", NOW) == NOW + 7 * DAY
    assert format_time(following(NOW, "daily", NOW) or 0) == "2026-12-05T15:30:00Z"


def test_weekdays_skip_the_weekend() -> None:
    friday = NOW
    assert format_time(following(friday, "weekdays", friday) or 0) == "2026-12-07T15:30:00Z"  # Monday
    monday = friday + 3 * DAY
    assert following(monday, "weekdays", monday) == monday + DAY
    saturday = friday + DAY  # a first time on a weekend: the next one is still a weekday
    assert following(saturday, "weekdays", saturday) == monday


def test_occurrences_missed_while_the_server_was_down_are_skipped() -> None:
    due = NOW - 10 * DAY - 60  # ten days and a minute ago
    assert following(due, "daily", NOW) == due + 11 * DAY
    assert following(due, "weekly", NOW) == due + 14 * DAY
    # Ten days ago at 15:29 was a Tuesday; today's (Friday's) 15:29 has passed: next Monday.
    assert format_time(following(due, "weekdays", NOW) or 0) == "2026-12-07T15:29:00Z"


def test_format_time_is_xep_0082_utc() -> None:
    assert format_time(at("2026-01-02T03:04:05")) == "2026-01-02T03:04:05Z"
    assert parse_when(format_time(NOW), 0) == NOW
