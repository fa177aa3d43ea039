"""When a scheduled message goes: relative, clock time and ISO times, from an explicit now."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from client.errors import UsageError
from client.when import parse_when

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


def at(text: str, tz: datetime.tzinfo = PLUS_TWO) -> float:
    """An ISO local time in ``tz``, as seconds since the epoch."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


NOW = at("2026-11-24T10:00:00")


def ms(text: str, tz: datetime.tzinfo = PLUS_TWO) -> int:
    return round(at(text, tz) * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+30s", "2026-11-24T10:00:30"),
        ("+10m", "2026-11-24T10:10:00"),
        ("+2h", "2026-11-24T12:00:00"),
        ("+1h30m", "2026-11-24T11:30:00"),
        ("+1d", "2026-11-25T10:00:00"),
    ],
)
def test_a_relative_time_counts_from_now(text: str, expected: str) -> None:
    """``+30s``, ``+10m``, ``+2h``, ``+1h30m``, ``+1d`` are that long after now."""
    assert parse_when(text, NOW, PLUS_TWO) == ms(expected)


def test_a_clock_time_still_to_come_is_today() -> None:
    """``14:30`` at 10:00 is today at 14:30, local time."""
    assert parse_when("14:30", NOW, PLUS_TWO) == ms("2026-11-24T14:30")


def test_a_clock_time_already_past_is_tomorrow() -> None:
    """``09:15`` at 10:00 is tomorrow; so is the very minute of now."""
    assert parse_when("09:15", NOW, PLUS_TWO) == ms("2026-11-25T09:15")
    assert parse_when("10:00", NOW, PLUS_TWO) == ms("2026-11-25T10:00")


def test_tomorrows_clock_time_follows_a_change_of_daylight_saving() -> None:
    """14:30 tomorrow across the spring change is 14:30 summer time, not winter time."""
    now = at("2026-03-28T15:00", BERLIN)  # CET; the clocks go forward in the night
    assert parse_when("14:30", now, BERLIN) == ms("2026-03-29T12:30", datetime.UTC)


def test_an_iso_time_without_offset_is_local_and_with_one_is_exact() -> None:
    """``2026-11-24T14:30`` is local time; ``...+05:00`` and ``...Z`` say their own zone."""
    assert parse_when("2026-11-24T14:30", NOW, PLUS_TWO) == ms("2026-11-24T14:30")
    assert parse_when("2026-11-24T14:30+05:00", NOW, PLUS_TWO) == ms("2026-11-24T11:30")
    assert parse_when("2026-11-24T14:30Z", NOW, PLUS_TWO) == ms("2026-11-24T16:30")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("+0m", "Expected a time ahead, but got '+0m' (that is now)"),
        ("2026-11-24T09:59", "Expected a time ahead, but 2026-11-24T09:59 has passed"),
        (
            "25:00",
            "Expected a time like +30s, +10m, +2h, +1h30m, 14:30 or 2026-11-24T14:30, "
            "but got '25:00'",
        ),
        (
            "+10x",
            "Expected a time like +30s, +10m, +2h, +1h30m, 14:30 or 2026-11-24T14:30, "
            "but got '+10x'",
        ),
        (
            "soon",
            "Expected a time like +30s, +10m, +2h, +1h30m, 14:30 or 2026-11-24T14:30, "
            "but got 'soon'",
        ),
    ],
)
def test_a_time_not_ahead_or_not_a_time_says_what_is_expected(text: str, error: str) -> None:
    """Past times and nonsense are refused before anything is sent."""
    with pytest.raises(UsageError) as raised:
        parse_when(text, NOW, PLUS_TWO)
    assert str(raised.value) == error
