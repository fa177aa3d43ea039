"""The fold and the state's own queries, driven directly: events applied to a
``State`` with an explicit ``now``. No server, no sockets."""

from __future__ import annotations

from server.domain.events import (
    ChatRestored,
    Event,
    MessageDeleted,
    MessagePosted,
    UserRegistered,
)
from server.domain.model import GENERAL, MessageId, UserName
from server.domain.state import State

MINUTE = 60_000
ALICE = UserName("alice")


def posted(seq: int, expires_at: int | None = None) -> MessagePosted:
    return MessagePosted(MessageId(f"m{seq}"), GENERAL, seq, ALICE, f"text {seq}", 0, expires_at)


def folded(*events: Event, history_size: int = 20) -> State:
    state = State(history_size=history_size)
    state.apply(UserRegistered(ALICE, "hash", 0, 0))
    for event in events:
        state.apply(event)
    return state


def test_a_newcomer_skips_messages_whose_lifetime_is_over_before_reclaimed() -> None:
    """Four of five messages expired by now (none reclaimed yet): a newcomer with a
    history of three starts before the one live message, not three back."""
    state = folded(*(posted(seq, MINUTE) for seq in range(1, 5)), posted(5), history_size=3)
    assert state.newcomer_read_seq(MINUTE) == 4
    assert state.newcomer_read_seq(MINUTE - 1) == 2  # all live: three back
    assert state.newcomer_read_seq() == 2  # an older log's formula: seqs only


def test_expiries_and_deletes_owe_a_compaction_until_one_is_made() -> None:
    """A new state owes none; each expired or deleted message counts; compacted()
    settles them all."""
    state = folded(posted(1, MINUTE), posted(2), posted(3))
    assert state.expired_since_snapshot == 0
    state.expire(MINUTE)
    state.apply(MessageDeleted(MessageId("m2"), GENERAL, 2, ALICE, MINUTE))
    assert state.expired_since_snapshot == 2
    state.compacted()
    assert state.expired_since_snapshot == 0


def test_after_an_older_snapshots_chat_the_first_message_sets_where_seqs_start() -> None:
    """An older snapshot lays out no slots (no last_seq): the first live message
    restored after it, seq 3, starts the chat there."""
    state = folded(ChatRestored(GENERAL, "general", 1, {"alice": 0}, title="general"), posted(3))
    general = state.general
    assert (general.first_seq, general.last_seq) == (3, 3)
    assert general.message_at(3) is state.messages[MessageId("m3")]
