"""server/domain/limits.py driven directly: quotas that are off by default, the token
buckets at their edges, and paged lists at their exact budget."""

from __future__ import annotations

import orjson

from server.domain.events import StandingRestored, from_record
from server.domain.limits import Quotas, page, wait_for


def test_no_quotas_is_no_limit_and_a_burst_of_one() -> None:
    """Quotas() turns every limit off (0), with a burst of 1 for a rate given alone."""
    quotas = Quotas()
    assert (quotas.flood_rate, quotas.flood_burst, quotas.max_live_bytes) == (0.0, 1, 0)
    assert (quotas.report_min_age_ms, quotas.group_limit, quotas.invite_limit) == (0, 0, 0)
    assert (quotas.user_storage, quotas.storage) == (0, 0)
    assert (quotas.flood_interval_ms, quotas.invite_interval_ms) == (0.0, 0.0)


def test_bucket_intervals_follow_rates_below_one() -> None:
    """Half a send a second refills in 2 s; one invite an hour in an hour; 4 an hour
    in 15 minutes."""
    assert Quotas(flood_rate=0.5).flood_interval_ms == 2000
    assert Quotas(invite_limit=1).invite_interval_ms == 3_600_000
    assert Quotas(invite_limit=4).invite_interval_ms == 900_000


def test_an_off_bucket_never_waits_whatever_it_remembers() -> None:
    """interval 0 (the quota turned off since the bucket filled) allows at once, even
    with a theoretical arrival time far ahead; an interval under 1 ms still counts."""
    assert wait_for(tat=50_000, now=0, interval=0, burst=1) == 0.0
    assert wait_for(tat=10, now=0, interval=0.5, burst=1) == 0.01


def test_a_page_holds_exactly_its_byte_budget() -> None:
    """Each item costs its JSON plus a comma: items that fill the budget exactly are all
    in, one byte less leaves the last out and says more are left."""
    items = ["aa", "bb", "cc"]
    cost = sum(len(orjson.dumps(item)) + 1 for item in items)  # 5 bytes each
    assert page(items, 0, 10, lambda item: item, budget=cost) == (items, False)
    assert page(items, 0, 10, lambda item: item, budget=cost - 1) == (items[:2], True)
    assert page(items, 1, 10, lambda item: item, budget=cost) == (items[1:], False)
    assert page(items, 0, 2, lambda item: item, budget=cost) == (items[:2], True)


def test_a_standing_from_an_older_snapshot_has_no_window_and_no_ban() -> None:
    """A StandingRestored record that names only the user (its other fields came later)
    restores an empty rate window, no reports and no ban."""
    standing = from_record({"type": "StandingRestored", "user": "alice"})
    assert isinstance(standing, StandingRestored)
    assert (standing.rate_window, standing.rate_count, standing.banned_until) == (0, 0, 0)
    assert (standing.flood_tat, standing.invite_tat, standing.posted) == (0.0, 0.0, None)
