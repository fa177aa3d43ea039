"""When a scheduled message should go: ``+10m``, ``14:30``, ``2026-11-24T14:30``.

Pure: the caller passes ``now`` (seconds since the epoch) and the time zone
(None: the system's local time), and gets the send time as the wire wants it,
milliseconds since the epoch (protocol-contract.md, "Values").
"""

from __future__ import annotations

import datetime
import re
from typing import Final

from client.errors import UsageError

_IN: Final = re.compile(r"\+((?:\d+[smhd])+)")
_PART: Final = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_CLOCK: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
EXAMPLES: Final = "+30s, +10m, +2h, +1h30m, 14:30 or 2026-11-24T14:30"
MAX_AHEAD_DAYS: Final = 366  # further ahead is a typo, and past what the wire's ints can hold


def parse_when(text: str, now: float, tz: datetime.tzinfo | None = None) -> int:
    """The time ``text`` means, in ms since the epoch; ``UsageError`` unless it is ahead,
    by at most ``MAX_AHEAD_DAYS``.

    ``+1h30m`` counts from ``now``; ``14:30`` is today at that local time, or tomorrow
    once it has passed; an ISO 8601 time without an offset is local time.
    """
    try:
        when = _parse(text, now, tz)
    except (ValueError, OverflowError):  # a year 0 or 10000, a time the OS cannot hold
        raise UsageError(f"Expected a time like {EXAMPLES}, but got {text!r}") from None
    if when > (now + MAX_AHEAD_DAYS * 86_400) * 1000:
        raise UsageError(f"Expected a time at most {MAX_AHEAD_DAYS} days ahead, but got {text!r}")
    return when


def _parse(text: str, now: float, tz: datetime.tzinfo | None) -> int:
    if match := _IN.fullmatch(text):
        seconds = sum(int(count) * _UNIT_SECONDS[unit] for count, unit in _PART.findall(match[1]))
        if seconds == 0:
            raise UsageError(f"Expected a time ahead, but got {text!r} (that is now)")
        # In whole ms from an int: a huge count stays exact and fails the bound, not float.
        return round(now * 1000) + seconds * 1000
    if match := _CLOCK.fullmatch(text):
        at = datetime.time(int(match[1]), int(match[2]), int(match[3] or 0))
        today = datetime.datetime.fromtimestamp(now, tz).date()
        for day in (today, today + datetime.timedelta(days=1)):
            # Naive (tz None) is the system's local time, DST included, to .timestamp().
            when = datetime.datetime.combine(day, at, tzinfo=tz).timestamp()
            if when > now:
                return round(when * 1000)
        raise AssertionError("unreachable: tomorrow at any time is after now")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"Expected a time like {EXAMPLES}, but got {text!r}") from None
    if moment.tzinfo is None and tz is not None:
        moment = moment.replace(tzinfo=tz)
    when = moment.timestamp()
    if when <= now:
        raise UsageError(f"Expected a time ahead, but {text} has passed")
    return round(when * 1000)
