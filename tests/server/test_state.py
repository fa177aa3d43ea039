"""The fold and the state's own queries, driven directly: events applied to a
``State`` with an explicit ``now``. No server, no sockets."""

from __future__ import annotations

import gc
import itertools
import random

from server.domain import rules
from server.domain.events import (
    EVENT_TYPES,
    ChatRestored,
    CommentAdded,
    DeviceAuthorized,
    DeviceRevoked,
    DirectChatOpened,
    Event,
    GroupCreated,
    MemberJoined,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    MessageScheduled,
    ScheduledCancelled,
    UserRegistered,
)
from server.domain.model import (
    GENERAL,
    ChatId,
    CommentId,
    DeviceId,
    MessageId,
    ScheduledId,
    UserName,
)
from server.domain.state import _FOLD, Expiries, State

MINUTE = 60_000
ALICE, BOB = UserName("alice"), UserName("bob")


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


def test_every_event_has_its_fold() -> None:
    """The fold table pairs every event type with its own handler (typed loosely: a
    missing one would stop a start as a damaged log)."""
    assert set(_FOLD) == set(EVENT_TYPES.values())
    for kind, handler in _FOLD.items():
        assert handler.__annotations__["event"] == kind.__name__


def test_expiries_out_of_their_order_end_in_time_order() -> None:
    """Lifetimes that end before one already queued (a clock stepped back, a shorter
    lifetime) are due by their own time: ``due`` reads without taking, ``pop_due``
    takes exactly those, whichever side holds them."""
    expiries = Expiries()
    for ends, name in ((10, "a"), (20, "b"), (15, "c"), (20, "d"), (5, "e"), (30, "f")):
        expiries.add(ends, MessageId(name))
    assert expiries.due(4) == []
    assert sorted(expiries.due(15)) == ["a", "c", "e"]
    assert len(expiries) == 6  # due() took nothing
    assert sorted(expiries.pop_due(15)) == ["a", "c", "e"]
    assert sorted(expiries) == [(20, "b"), (20, "d"), (30, "f")]
    assert expiries.pop_due(19) == []
    assert sorted(expiries.pop_due(20)) == ["b", "d"]
    expiries.add(25, MessageId("g"))  # before the queued 30
    assert expiries.pop_due(29) == ["g"]
    assert (expiries.pop_due(30), len(expiries)) == (["f"], 0)


def test_expiries_in_order_make_no_object_for_the_cyclic_gc() -> None:
    """Lifetimes ending in the order they come (ties included: posts in one
    millisecond) queue without a tracked object each: a start's million messages
    leave the GC nothing to walk."""
    expiries = Expiries()
    ids = [MessageId(f"m{n}") for n in range(2000)]
    gc.collect()
    before = len(gc.get_objects())
    for n, message in enumerate(ids):
        expiries.add(1_000 + n // 4, message)
    assert len(gc.get_objects()) - before < 50
    assert len(expiries) == 2000


def test_expiries_loaded_in_any_order_end_in_time_order() -> None:
    """A snapshot's expiries come chat by chat: loaded, each is due at its time."""
    expiries = Expiries()
    expiries.load([(30, MessageId("c")), (10, MessageId("a")), (20, MessageId("b"))])
    assert expiries.pop_due(10) == ["a"]
    assert expiries.due(25) == ["b"]
    assert expiries.pop_due(30) == ["b", "c"]


def test_after_an_older_snapshots_chat_the_first_message_sets_where_seqs_start() -> None:
    """An older snapshot lays out no slots (no last_seq): the first live message
    restored after it, seq 3, starts the chat there."""
    state = folded(ChatRestored(GENERAL, "general", 1, {"alice": 0}, title="general"), posted(3))
    general = state.general
    assert (general.first_seq, general.last_seq) == (3, 3)
    assert general.message_at(3) is state.messages[MessageId("m3")]


def test_a_send_without_a_client_id_remembers_nothing_for_its_device() -> None:
    """Only a client_id is remembered for a repeat: a plain send from a device leaves
    the device's memory empty (it holds at most CLIENT_IDS_PER_DEVICE ids)."""
    device = DeviceId("phone")
    state = folded(DeviceAuthorized(ALICE, device, "phone", "token", 0))
    state.apply(MessagePosted(MessageId("m1"), GENERAL, 1, ALICE, "hi", 0, device=device))
    assert state.client_ids.get(device, {}) == {}


def test_due_messages_are_posted_two_hundred_at_a_time() -> None:
    """201 due at once: the first 200 by send_at are posted, the last waits."""
    state = folded(
        *(
            MessageScheduled(ScheduledId(f"s{n}"), GENERAL, ALICE, f"t{n}", MINUTE + n, 0)
            for n in range(201)
        )
    )
    ids = (MessageId(f"m{n}") for n in itertools.count())
    events = rules.post_due(state, 2 * MINUTE, lambda: next(ids), 0)
    assert len(events) == 200
    assert [e.scheduled for e in events if isinstance(e, MessagePosted)][-1] == "s199"


def test_an_edit_comment_or_delete_of_a_message_expired_here_already_changes_nothing() -> None:
    """A follower whose clock runs a little ahead has reclaimed the message when the
    writer's edit, comment or delete of it arrives: the fold skips them."""
    state = folded(posted(1, MINUTE), posted(2))
    state.expire(MINUTE)
    state.apply(MessageEdited(MessageId("m1"), GENERAL, ALICE, "new", MINUTE))
    state.apply(CommentAdded(CommentId("c1"), MessageId("m1"), GENERAL, ALICE, "late", MINUTE))
    state.apply(MessageDeleted(MessageId("m1"), GENERAL, 1, ALICE, MINUTE))
    assert MessageId("m1") not in state.messages
    assert not state.comments
    assert state.general.message_at(2) is state.messages[MessageId("m2")]


def test_a_deleted_message_leaves_the_mention_index() -> None:
    """The index of mentions keeps no seq of a deleted message."""
    state = folded(
        MessagePosted(MessageId("m1"), GENERAL, 1, ALICE, "@alice", 0, mentions=["alice"])
    )
    assert state.mentions.seqs
    state.apply(MessageDeleted(MessageId("m1"), GENERAL, 1, ALICE, 0))
    assert state.mentions.seqs == {}


def test_a_scheduled_send_posted_after_its_device_logged_out_is_not_remembered() -> None:
    """The client_id of a scheduled send is remembered when it is posted only if its
    device is still logged in: a gone device has nothing to repeat."""
    device = DeviceId("phone")
    state = folded(
        DeviceAuthorized(ALICE, device, "phone", "token", 0),
        MessageScheduled(ScheduledId("s1"), GENERAL, ALICE, "later", MINUTE, 0, None, device, "k"),
    )
    assert state.client_ids[device] == {"k": "s1"}
    state.apply(DeviceRevoked(ALICE, device, 1))
    state.apply(
        MessagePosted(
            MessageId("m1"), GENERAL, 1, ALICE, "later", MINUTE, scheduled=ScheduledId("s1")
        )
    )
    assert device not in state.client_ids


def test_the_earliest_pending_send_stays_on_top_while_cancels_shrink_the_schedule() -> None:
    """300 scheduled sends, cancelled one by one in a shuffled order (the schedule's
    heap is rebuilt as it empties): next_due and due() always see every pending one."""
    shuffled = random.Random(13)
    sends = list(range(300))
    shuffled.shuffle(sends)
    state = folded(
        *(MessageScheduled(ScheduledId(f"s{n}"), GENERAL, ALICE, "t", MINUTE + n, 0) for n in sends)
    )
    pending = set(sends)
    shuffled.shuffle(sends)
    for n in sends:
        state.apply(ScheduledCancelled(ScheduledId(f"s{n}"), ALICE, 0))
        pending.discard(n)
        assert state.next_due() == (MINUTE + min(pending) if pending else None)
        due = [int(p.id[1:]) for p in state.due(MINUTE + 150)]
        assert due == sorted(n for n in pending if n <= 150)


def test_a_late_member_of_a_group_reads_from_its_last_message() -> None:
    """Joining a group with two messages: the new member's marker is at 2, not 0."""
    group = ChatId("g1")
    state = folded(
        UserRegistered(BOB, "hash", 0, 0),
        GroupCreated(group, ALICE, "team", 0),
        *(MessagePosted(MessageId(f"m{s}"), group, s, ALICE, "t", 0) for s in (1, 2)),
        MemberJoined(group, BOB, 0),
    )
    assert state.chats[group].read_markers == {"alice": 2, "bob": 2}


def test_a_restored_message_of_someone_who_left_does_not_make_them_a_member() -> None:
    """A snapshot restores a group without bob (he left) and then his message, still
    live: writing reads the chat for members only, so bob stays out."""
    group = ChatId("g1")
    state = folded(
        UserRegistered(BOB, "hash", 0, 0),
        ChatRestored(group, "group", 1, {"alice": 1}, title="team", owner=ALICE, last_seq=1),
        MessagePosted(MessageId("m1"), group, 1, BOB, "bye", 0),
    )
    assert state.chats[group].read_markers == {"alice": 1}


def test_the_first_direct_message_is_unread_to_the_peer() -> None:
    """A direct chat opens with both markers at 0: alice's first message reads it for
    her, not for bob."""
    chat = ChatId("d1")
    state = folded(
        UserRegistered(BOB, "hash", 0, 0),
        DirectChatOpened(chat, ALICE, BOB, 0),
        MessagePosted(MessageId("m1"), chat, 1, ALICE, "hi", 0),
    )
    assert state.chats[chat].read_markers == {"alice": 1, "bob": 0}
