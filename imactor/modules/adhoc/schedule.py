"""When reminders are due: reading the time a user typed, and the repeat rules. Pure.

Times are UTC seconds since the epoch. A user names a time as a XEP-0082 DateTime
(``2026-12-24T09:00:00Z``, or with an offset such as ``+01:00``; a time zone is required, so
that a time is never read in a zone the user did not mean) or as a delay from now
(``in 10 minutes``, ``in 2 hours``, ``in 1 day``). Repeats are computed in UTC: a daily
reminder at 08:00Z stays at 08:00Z across daylight-saving changes, and "weekdays" are Monday
to Friday of the UTC calendar.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from imactor.xmpp.dataforms import FormError

__all__ = ["REPEATS", "following", "format_time", "parse_when"]

#: The repeat rules, "none" first (the default).
REPEATS = ("none", "daily", "weekdays", "weekly")

# XEP-0082 §3.2 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD, where TZD is Z or (+|-)hh:mm.
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_DELAY = re.compile(r"in\s+(\d{1,6})\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|h|days?|d|weeks?|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(value: str, now: float) -> float:
    """The due time (UTC seconds) a form's ``when`` names.

    Raises:
        FormError: neither a XEP-0082 DateTime with a time zone nor "in N minutes" (and the like).
    """
    text = value.strip()
    delay = _DELAY.fullmatch(text.lower())
    if delay is not None:
        return now + int(delay.group(1)) * _UNITS[delay.group(2)[0]]
    found = _DATETIME.fullmatch(text)
    if found is None:
        raise FormError(f"{value!r} is not a time: give a date-time such as 2026-12-24T09:00:00Z "
                        "(XEP-0082, with Z or an offset) or a delay such as 'in 10 minutes'")  # fmt: skip
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    fraction = float(found.group(7) or 0)
    zone = found.group(8)
    try:
        offset = timedelta(0) if zone == "Z" else timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        if zone.startswith("-"):
            offset = -offset
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC) - offset
    except ValueError as exc:
        raise FormError(f"{value!r} is not a valid date-time: {exc}") from None
    return moment.timestamp() + fraction


def following(due: float, repeat: str, now: float) -> float | None:
    """The next due time after the occurrence `due` under `repeat`, later than `now` (occurrences
    missed while the server was down are skipped: the user gets one, not a burst); None for a
    reminder that does not repeat."""
    if repeat == "none":
        return None
    step = 7 * 86400 if repeat == "weekly" else 86400
    moment = due + step
    while True:
        if repeat == "weekdays":
            while datetime.fromtimestamp(moment, UTC).weekday() >= 5:  # Saturday, Sunday
                moment += 86400
        if moment > now:
            return moment
        moment += step


def format_time(moment: float) -> str:
    """A XEP-0082 DateTime in UTC, to the second."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
