"""Limits against abuse by users: the quotas, the token buckets, look-alike names and
paged lists (protocol.md, "Limits against abuse").

Pure, like the rest of the domain: everything here is decided from the folded state
and ``now``, so that it holds for every server that folds the same events (cluster
mode), never from what one process happens to remember.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import orjson

_T = TypeVar("_T")

HOUR_MS: Final = 3_600_000
PAGE_MAX: Final = 1000  # most items one page of a list holds


@dataclasses.dataclass(frozen=True, slots=True)
class Quotas:
    """The per-user limits the state decides; 0 turns a limit off (and ``Quotas()`` is
    no limit at all: the server's defaults are ``Config``'s)."""

    flood_rate: float = 0.0  # sends + comments per second, sustained
    flood_burst: int = 1  # ... and at once
    max_live_bytes: int = 0  # UTF-8 bytes of a user's live messages and comments
    report_min_age_ms: int = 0  # a reporter's account is at least this old, and has posted
    group_limit: int = 0  # groups one user may own
    invite_limit: int = 0  # invites one user may send per hour (and at once)
    user_storage: int = 0  # bytes of stored files one user uploaded
    storage: int = 0  # bytes of stored files in all

    @property
    def flood_interval_ms(self) -> float:
        """The bucket's refill time for one send: 0 when the bucket is off."""
        return 1000 / self.flood_rate if self.flood_rate > 0 else 0.0

    @property
    def invite_interval_ms(self) -> float:
        return HOUR_MS / self.invite_limit if self.invite_limit > 0 else 0.0


NO_QUOTAS: Final = Quotas()


# -- token buckets (GCRA: the bucket is one timestamp per user) -------------------
#
# A bucket of ``burst`` tokens refilled one per ``interval`` is the same as a
# "theoretical arrival time" ``tat``: each action pushes it ``interval`` further
# from max(tat, now); an action is allowed while that stays within ``burst``
# intervals of now. One number per user, folded from the events' own times.


def spend(tat: float, at: int, interval: float) -> float:
    """The bucket after one action at ``at`` (the fold calls this)."""
    return max(tat, at) + interval


def wait_for(tat: float, now: int, interval: float, burst: int) -> float:
    """Seconds until one more action is allowed; 0 when it is allowed now."""
    if interval <= 0:
        return 0.0
    over = spend(tat, now, interval) - now - burst * interval
    return max(0.0, over / 1000)


def text_size(text: str) -> int:
    """UTF-8 bytes of ``text``, without encoding it when it is ASCII (the fold's hot path)."""
    return len(text) if text.isascii() else len(text.encode())


# -- look-alike names (Unicode TR39, section 4 "Confusable Detection") ------------

# TR39's confusables.txt restricted to the user-name alphabet (A-Z a-z 0-9 _ . -),
# after case folding, since names are unique case-insensitively: "I" (an "i" to
# the fold) and "1" read as "l", "0" as "o", and "m", "d", "w" as "rn", "cl", "vv".
_CONFUSABLE: Final = str.maketrans({"0": "o", "1": "l", "i": "l", "m": "rn", "d": "cl", "w": "vv"})


def skeleton(name: str) -> str:
    """What ``name`` looks like: two names with one skeleton would be confused."""
    return name.lower().translate(_CONFUSABLE)


def has_letter_or_digit(name: str) -> bool:
    return any(ch.isalnum() for ch in name)


# -- paged lists --------------------------------------------------------------------


def page(
    items: Sequence[_T],
    offset: int,
    limit: int,
    view: Callable[[_T], Any],
    budget: int,
) -> tuple[list[Any], bool]:
    """The views of ``items[offset:]``, at most ``limit`` of them and ``budget`` bytes of
    JSON; and whether any were left out after them."""
    chosen: list[Any] = []
    for index in range(offset, len(items)):
        if len(chosen) == limit:
            return chosen, True
        shown = view(items[index])
        budget -= len(orjson.dumps(shown)) + 1
        if budget < 0:
            return chosen, True
        chosen.append(shown)
    return chosen, False
