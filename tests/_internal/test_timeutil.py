"""Times and durations as people write them in estate files, tokens and the CLI."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether._internal.timeutil import (
    MAX_DURATION,
    InvalidValue,
    format_duration,
    format_time,
    parse_duration,
    parse_time,
)

UTC = dt.UTC


# -- durations --


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("15m", dt.timedelta(minutes=15)),
        ("1h", dt.timedelta(hours=1)),
        ("30d", dt.timedelta(days=30)),
        ("2w", dt.timedelta(weeks=2)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", dt.timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("0h1s", dt.timedelta(seconds=1)),
        ("3660d", MAX_DURATION),
    ],
)
def test_durations_parse(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0s", "0m", "0h0m0s", "000d"])
def test_zero_duration_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue, match="longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "-1h",
        "-90s",
        "",
        " ",
        "1",
        "h",
        "1H",
        "1.5h",
        "1,5h",
        "1 h",
        " 1h",
        "1h ",
        "1y",
        "1ms",
        "P1D",
        "PT15M",
        "15 minutes",
        "1h-30m",
        "+1h",
        "1e3s",
        "0x10s",
        "1234567890s",  # more than 9 digits in a group
        "\u0661h",  # ARABIC-INDIC DIGIT ONE: not an ASCII digit
        "\uff11h",  # FULLWIDTH DIGIT ONE
        "1h\x00",
        "1h\n",
    ],
)
def test_garbage_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidValue, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 90, 1.5, b"1h", ["1h"], dt.timedelta(hours=1)])
def test_non_string_durations_are_refused(value: object) -> None:
    with pytest.raises(InvalidValue):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["3661d", "3660d1s", "523w", "87841h", "99999999d", "999999999w", "999999999w999999999d"],
)
def test_too_large_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidValue, match="3660d"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.timedelta(seconds=90), "90s"),
        (dt.timedelta(minutes=15), "15m"),
        (dt.timedelta(hours=1), "1h"),
        (dt.timedelta(hours=1, minutes=30), "90m"),
        (dt.timedelta(days=30), "30d"),
        (dt.timedelta(weeks=2), "2w"),
    ],
)
def test_durations_format_in_their_largest_whole_unit(value: dt.timedelta, text: str) -> None:
    assert format_duration(value) == text


whole_durations = st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())).map(
    lambda s: dt.timedelta(seconds=s)
)


@given(whole_durations)
def test_duration_format_parse_round_trip(value: dt.timedelta) -> None:
    text = format_duration(value)
    assert re.fullmatch(r"[0-9]+[smhdw]", text)
    assert parse_duration(text) == value


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=999), st.sampled_from("smhdw")),
        min_size=1,
        max_size=5,
    )
)
def test_combined_durations_add_up_or_are_refused(groups: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in groups)
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    seconds = sum(n * size[unit] for n, unit in groups)
    if 0 < seconds <= MAX_DURATION.total_seconds():
        assert parse_duration(text) == dt.timedelta(seconds=seconds)
    else:
        with pytest.raises(InvalidValue):
            parse_duration(text)


@given(st.text(max_size=30))
def test_any_text_is_a_valid_duration_or_refused_with_invalid_value(text: str) -> None:
    try:
        value = parse_duration(text)
    except InvalidValue:
        return
    assert re.fullmatch(r"(?:[0-9]{1,9}[smhdw])+", text)
    assert dt.timedelta(0) < value <= MAX_DURATION


# -- times --


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31T12:00:00Z", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31T12:00:00z", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31t12:00:00Z", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31 12:00:00Z", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31T12:00:00+00:00", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31T12:00:00-00:00", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31T14:30:00+02:30", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        ("2027-01-31T07:00:00-05:00", dt.datetime(2027, 1, 31, 12, tzinfo=UTC)),
        # An offset can move the instant to another day.
        ("2027-01-01T01:00:00+02:00", dt.datetime(2026, 12, 31, 23, tzinfo=UTC)),
        ("2026-12-31T23:00:00-02:00", dt.datetime(2027, 1, 1, 1, tzinfo=UTC)),
        (
            "2027-01-31T12:00:00.250Z",
            dt.datetime(2027, 1, 31, 12, 0, 0, 250000, tzinfo=UTC),
        ),
        (
            "2027-01-31T12:00:00.123456+01:00",
            dt.datetime(2027, 1, 31, 11, 0, 0, 123456, tzinfo=UTC),
        ),
        ("2024-02-29T00:00:00Z", dt.datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_normalize_to_utc(text: str, expected: dt.datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.utcoffset() == dt.timedelta(0)
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31", dt.datetime(2027, 1, 31, tzinfo=UTC)),
        ("2027-03-31", dt.datetime(2027, 3, 31, tzinfo=UTC)),
        ("2024-02-29", dt.datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_a_bare_date_means_midnight_utc(text: str, expected: dt.datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo == UTC
    assert (parsed.hour, parsed.minute, parsed.second) == (0, 0, 0)


def test_date_and_datetime_objects_are_accepted() -> None:
    assert parse_time(dt.date(2027, 1, 31)) == dt.datetime(2027, 1, 31, tzinfo=UTC)
    aware = dt.datetime(2027, 1, 31, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert parse_time(aware) == dt.datetime(2027, 1, 31, 12, tzinfo=UTC)
    assert parse_time(aware).tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    ["2027-01-31T12:00:00", "2027-01-31 12:00:00", "2027-01-31T12:00:00.5", "2027-01-31T12:00"],
)
def test_a_timestamp_without_offset_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_time(text)


def test_a_naive_datetime_object_is_refused() -> None:
    with pytest.raises(InvalidValue, match="offset"):
        parse_time(dt.datetime(2027, 1, 31, 12))  # naive: the point of the test


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "next year",
        "2027",
        "2027-01",
        "27-01-31",
        "2027/01/31",
        "31.01.2027",
        "2027-1-31",
        "20270131",
        "2027-02-30",
        "2027-13-01",
        "2023-02-29",
        "0000-01-01",
        "2027-01-31T24:00:00Z",
        "2027-01-31T12:60:00Z",
        "2027-01-31T12:00:60Z",
        "2027-01-31T12:00:00+24:00",
        "2027-01-31T12:00:00+0200",
        "2027-01-31T12:00:00 Z",
        "2027-01-31T12:00:00ZZ",
        "2027-01-31T12:00:00.1234567890Z",
        " 2027-01-31",
        "2027-01-31\n",
        "2027-01-31\x00",
        "\u0662\u0660\u0662\u0667-\u0660\u0661-\u0663\u0661",  # Arabic-Indic digits
        "1800000000",
        # Valid-looking, but the instant is outside what a UTC datetime can hold.
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:00:00-05:00",
    ],
)
def test_garbage_times_are_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_time(text)


@pytest.mark.parametrize("value", [None, 1800000000, 1.5, b"2027-01-31", ["2027-01-31"]])
def test_non_string_times_are_refused(value: object) -> None:
    with pytest.raises(InvalidValue):
        parse_time(value)  # type: ignore[arg-type]


def test_format_time_is_rfc3339_utc_with_z() -> None:
    value = dt.datetime(2027, 1, 31, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_time(value) == "2027-01-31T12:00:00Z"
    assert format_time(dt.datetime(2027, 1, 31, 12, 0, 0, 5, tzinfo=UTC)) == (
        "2027-01-31T12:00:00.000005Z"
    )


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
aware_times = st.datetimes(
    min_value=dt.datetime(2, 1, 1),  # bounds for st.datetimes are naive
    max_value=dt.datetime(9998, 12, 31),
    timezones=offsets,
)


@given(aware_times)
def test_time_format_parse_round_trip(value: dt.datetime) -> None:
    text = format_time(value)
    assert text.endswith("Z")
    parsed = parse_time(text)
    assert parsed == value
    assert parsed.tzinfo == UTC
    assert format_time(parsed) == text


@given(aware_times)
def test_any_offset_reads_as_the_same_instant(value: dt.datetime) -> None:
    text = value.isoformat(timespec="seconds")  # local wall time and its +HH:MM offset
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}", text)
    assert parse_time(text) == value.replace(microsecond=0)


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_date_round_trip(day: dt.date) -> None:
    parsed = parse_time(day.isoformat())
    assert parsed == dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    assert parse_time(format_time(parsed)) == parsed


@given(st.text(max_size=40))
def test_any_text_is_a_valid_time_or_refused_with_invalid_value(text: str) -> None:
    try:
        value = parse_time(text)
    except InvalidValue:
        return
    assert value.tzinfo == UTC
