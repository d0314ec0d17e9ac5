"""Times and durations as Tether accepts them from people and files.

Times: an RFC 3339 timestamp (an offset is required) or a bare date, which means
00:00 UTC that day. Durations: one or more `<number><unit>` groups with units
s, m, h, d, w (`90s`, `15m`, `1h30m`, `30d`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

UTC = dt.UTC
#: The longest duration Tether accepts anywhere: nothing it governs should live longer.
MAX_DURATION = dt.timedelta(days=3660)

# [0-9], not \d: other scripts' digits are not a duration or a date.
_DURATION_PART = re.compile(r"([0-9]{1,9})([smhdw])")
_DURATION_FULL = re.compile(r"(?:[0-9]{1,9}[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class InvalidValue(ValueError):
    """A value could not be read as a time or a duration; the message says why."""


#: Where a service reads the time: `utcnow` in production; tests pass a settable clock.
Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def parse_duration(text: str, *, zero: bool = False) -> dt.timedelta:
    """A duration such as `1h30m`; longer than zero unless `zero` (a grace of `0s`)."""
    if not isinstance(text, str) or not _DURATION_FULL.fullmatch(text):
        raise InvalidValue("expected a duration such as 90s, 15m, 1h or 30d")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if seconds == 0 and zero:
        return dt.timedelta(0)
    if seconds <= 0:
        raise InvalidValue("a duration must be longer than zero")
    # Compared as a number first: `999999999w` is too large even for a timedelta.
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidValue("a duration may not exceed 3660d")
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_time(value: str | dt.date | dt.datetime) -> dt.datetime:
    """Read an RFC 3339 timestamp or a date (00:00 UTC that day) as an aware UTC time."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InvalidValue("a timestamp needs a UTC offset, e.g. 2027-01-31T12:00:00Z")
        return value.astimezone(UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        raise InvalidValue("expected an RFC 3339 timestamp or a date (YYYY-MM-DD)")
    try:
        if _DATE.fullmatch(value):
            day = dt.date.fromisoformat(value)
            return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        if _RFC3339.fullmatch(value):
            return dt.datetime.fromisoformat(value.replace("z", "Z")).astimezone(UTC)
    except ValueError as exc:
        raise InvalidValue(f"not a valid date or time: {exc}") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before the first UTC instant
        raise InvalidValue("not a valid date or time: out of range in UTC") from None
    raise InvalidValue("expected an RFC 3339 timestamp or a date (YYYY-MM-DD)")


def format_time(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
