"""Compaction's snapshot, in the pure core: folding ``snapshot(state)`` into a fresh
state gives the same state back, in the corners where that is hardest."""

from __future__ import annotations

from server.domain import rules, views
from server.domain.events import Event, ScheduledCancelled
from server.domain.model import GENERAL, ChatId, ScheduledId, user_key
from server.domain.snapshot import snapshot
from server.domain.state import State
from tests.server.test_domain import MINUTE, open_direct, post, register


def restored(state: State) -> State:
    again = State(state.history_size, state.rate_period_ms, state.quotas)
    for event in snapshot(state):
        again.fold(event)
    return again


def test_holes_left_by_a_ttl_change_keep_their_seq_through_a_snapshot() -> None:
    """Messages that expired behind a longer-lived one keep their places: seq is never reused."""
    state = State()
    (alice,) = register(state, "alice")
    post(state, alice, state.general, "forever", ttl_ms=0)
    post(state, alice, state.general, "a minute", now=1, ttl_ms=MINUTE)
    post(state, alice, state.general, "an hour", now=2, ttl_ms=60 * MINUTE)
    post(state, alice, state.general, "a minute too", now=3, ttl_ms=MINUTE)
    state.expire(2 * MINUTE)
    again = restored(state)
    general = again.general
    assert (general.first_seq, general.last_seq) == (1, 4)
    assert [m and m.text for m in general.messages] == ["forever", None, "an hour", None]
    assert views.chat_view(again, general, user_key("alice")) == views.chat_view(
        state, state.general, user_key("alice")
    )
    assert post(again, alice, again.general, "next").seq == 5


def test_a_users_chats_keep_the_order_they_were_joined_in() -> None:
    """status lists chats in join order, also after a start from a snapshot."""
    state = State()
    alice, bob, _carol = register(state, "alice", "bob", "carol")
    older = open_direct(state, bob, "carol")  # made first, joined by alice never
    state.apply(rules.create_group(state, bob, "club", ChatId("g1"), 1))
    open_direct(state, alice, "bob")
    state.apply(rules.invite(state, bob, "g1", "alice", 2))
    assert older.id not in alice.chats
    assert list(restored(state).users[user_key("alice")].chats) == list(alice.chats)


def test_a_newcomers_read_marker_is_the_same_live_and_replayed() -> None:
    """The marker a newcomer starts at is decided once, so a replay (which expires nothing
    on the way) gives the same one."""
    live_state, replayed = State(history_size=3), State(history_size=3)
    first = rules.register(live_state, "alice", "hash", 0)
    live_state.apply(first)
    alice = live_state.users[user_key("alice")]
    posted = [post(live_state, alice, live_state.general, now=n, ttl_ms=MINUTE) for n in range(10)]
    newcomer = rules.register(live_state, "bob", "hash", 2 * MINUTE)  # all ten expired by then
    live_state.apply(newcomer)
    events: list[Event] = [first, *posted, newcomer]
    for event in events:
        replayed.apply(event)
    bob = user_key("bob")
    assert replayed.general.read_markers[bob] == live_state.general.read_markers[bob] == 10


def test_cancelled_schedules_do_not_pile_up_in_the_timer_heap() -> None:
    """Cancelling thousands of schedules leaves the timer's heap the size of what is pending."""
    state = State()
    (alice,) = register(state, "alice")
    for n in range(3000):
        scheduled = rules.schedule_message(
            state,
            alice,
            GENERAL,
            text="x",
            file=None,
            send_at=10 * MINUTE,
            now=0,
            scheduled_id=ScheduledId(f"s{n}"),
        )
        state.apply(scheduled)
        state.apply(ScheduledCancelled(scheduled.scheduled, alice.name, 0))
    assert len(state.schedule) <= 2 * len(state.scheduled) + 64


def test_edits_deletions_mentions_and_the_search_order_survive_a_snapshot() -> None:
    """An edited message keeps its text, edited_at and mentions; a deleted one stays a
    hole; the search index comes back in posting order across chats."""
    state = State()
    alice, bob = register(state, "alice", "bob")
    direct = open_direct(state, alice, "bob")
    first = post(state, alice, state.general, "apple one")
    post(state, bob, direct, "apple two")
    doomed = post(state, alice, state.general, "apple three")
    post(state, alice, direct, "apple four")
    state.apply(rules.edit_message(state, alice, first.message, text="apple @bob", now=5))
    state.apply(rules.delete_message(state, alice, doomed.message, 6))
    again = restored(state)
    edited = again.messages[first.message]
    assert (edited.text, edited.edited_at, edited.mentions) == ("apple @bob", 5, ("bob",))
    assert [m and m.text for m in again.general.messages] == ["apple @bob", None]
    found = [m.text for m in again.search.search("APPLE", lambda m: True)]
    assert found == ["apple four", "apple two", "apple @bob"]
    assert views.chat_view(again, again.general, user_key("bob"))["mentions"] == 1
    assert post(again, alice, again.general, "next").seq == 3
