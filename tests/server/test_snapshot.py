"""Compaction's snapshot, in the pure core: loading ``dump(state)`` (and folding the
older ``snapshot(state)`` events) into a fresh state gives the same state back, for
histories of every kind of event and in the corners where that is hardest."""

from __future__ import annotations

import dataclasses
import gc
import random
from typing import Any

import msgspec
import pytest

from server.config import Config
from server.domain import events as ev
from server.domain import model, rules, views
from server.domain.events import Event, ScheduledCancelled
from server.domain.model import GENERAL, ChatId, ScheduledId, user_key
from server.domain.snapshot import FORMAT, SnapshotDamaged, dump, load, snapshot
from server.domain.state import State
from server.log import encode_record
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


# -- the snapshot format against the fold ---------------------------------------


Step = Event | int  # an event folded, or the time the state was expired at


def grow(state: State, rng: random.Random, steps: int, at: int = 1_000) -> list[Step]:
    """Fold a random history of every kind of event into ``state``, with expiry on the
    way (as a running server has); what was done, in order."""
    done: list[Step] = []

    def fold(event: Event) -> None:
        state.apply(event)
        done.append(event)

    def expire(now: int) -> None:
        state.expire(now)
        done.append(now)

    def names() -> list[model.UserName]:
        return [user.name for user in state.users.values()]

    def members(chat: model.Chat) -> list[model.UserName]:
        return [state.users[key].name for key in chat.read_markers]

    def any_device(user: model.User) -> model.DeviceId | None:
        return rng.choice(list(user.devices)) if user.devices else None

    if not state.users:
        for n in range(6):
            fold(
                ev.UserRegistered(
                    model.UserName(f"User{n}"), f"hash{n}", at, rng.choice([None, 0, 2])
                )
            )
    for step in range(state.cursor, state.cursor + steps):  # unique ids: a cursor-long way
        at += rng.randint(1, 4000)
        user = state.users[user_key(rng.choice(names()))]
        kind = rng.randrange(22)
        chats = [chat for chat in state.chats.values() if user.name in members(chat)]
        live = [m for m in state.messages.values() if m.chat in user.chats]
        if kind == 0:
            fold(ev.UserRegistered(model.UserName(f"user{step}"), "h", at, rng.choice([None, 1])))
        elif kind == 1:
            fold(
                ev.DeviceAuthorized(
                    user.name, model.DeviceId(f"d{step}"), f"dev {step}", f"t{step}", at
                )
            )
        elif kind == 2 and user.devices:
            fold(ev.DeviceRevoked(user.name, rng.choice(list(user.devices)), at))
        elif kind == 3:
            peer = rng.choice(names())
            if user_key(peer) != user_key(user.name) and not state.direct_chat_between(
                user.name, peer
            ):
                fold(ev.DirectChatOpened(ChatId(f"direct{step}"), user.name, peer, at))
        elif kind in (4, 5, 6, 7) and chats:
            chat = rng.choice(chats)
            device = any_device(user)
            files = [f for f in state.files.values() if f.uploader == user.name]
            ttl = rng.choice([None, 30_000, 300_000, 3_000_000])
            fold(
                ev.MessagePosted(
                    model.MessageId(f"m{step}"),
                    chat.id,
                    chat.last_seq + 1,
                    user.name,
                    f"words {step} @{rng.choice(names())}",
                    at,
                    None if ttl is None else at + ttl,
                    device,
                    f"c{step}" if device and rng.random() < 0.5 else None,
                    rng.choice(files).id if files and rng.random() < 0.3 else None,
                    mentions=rng.sample(members(chat), 1) if rng.random() < 0.3 else None,
                )
            )
        elif kind == 8 and live:
            message = rng.choice(live)
            device = any_device(user)
            mentioned: list[str] = rng.sample(members(state.chats[message.chat]), 1)
            fold(
                ev.MessageEdited(
                    message.id,
                    message.chat,
                    message.author,
                    f"edited {step}",
                    at,
                    mentioned if rng.random() < 0.5 else None,
                    device,
                    f"e{step}" if device else None,
                )
            )
        elif kind == 9 and live:
            message = rng.choice(live)
            fold(ev.MessageDeleted(message.id, message.chat, message.seq, user.name, at))
        elif kind == 10:
            fold(ev.UserSeen(user.name, at))
        elif kind == 11 and chats:
            chat = rng.choice(chats)
            fold(ev.ReadMarkerMoved(user.name, chat.id, rng.randint(0, chat.last_seq), at))
        elif kind in (12, 13) and live:
            message = rng.choice(live)
            fold(
                ev.CommentAdded(
                    model.CommentId(f"k{step}"),
                    message.id,
                    message.chat,
                    user.name,
                    f"re {step}",
                    at,
                )
            )
        elif kind == 14 and chats:
            chat = rng.choice(chats)
            device = any_device(user)
            fold(
                ev.MessageScheduled(
                    ScheduledId(f"s{step}"),
                    chat.id,
                    user.name,
                    f"later {step}",
                    at + rng.randint(1, 100_000),
                    at,
                    None,
                    device,
                    f"sc{step}" if device else None,
                )
            )
        elif kind == 15 and state.scheduled:
            pending = rng.choice(list(state.scheduled.values()))
            if rng.random() < 0.5:
                fold(ev.ScheduledCancelled(pending.id, pending.author, at))
            elif pending.author in members(state.chats[pending.chat]):
                chat = state.chats[pending.chat]
                fold(
                    ev.MessagePosted(
                        model.MessageId(f"m{step}"),
                        chat.id,
                        chat.last_seq + 1,
                        pending.author,
                        pending.text,
                        at,
                        scheduled=pending.id,
                    )
                )
        elif kind == 16:
            fold(ev.UserReported(rng.choice(names()), user.name, at, rng.choice([None, "spam"])))
            if rng.random() < 0.3:
                fold(ev.UserBanned(user.name, at + 60_000, at))
        elif kind == 17:
            fold(
                ev.FileUploaded(
                    model.FileId(f"f{step}"), "a.txt", 10 + step, "text/plain", "00", user.name, at
                )
            )
        elif kind == 18:
            unused = state.unused_files(at, 0)
            if unused:
                fold(ev.FileDropped(rng.choice(unused).id, at))
        elif kind == 19:
            group = ChatId(f"g{step}")
            fold(ev.GroupCreated(group, user.name, f"group {step}", at))
            fold(ev.JoinLinkCreated(group, f"link{step}", at))
        elif kind in (20, 21):
            groups = [c for c in state.chats.values() if c.kind == "group"]
            if not groups:
                continue
            chat = rng.choice(groups)
            inside = user.name in members(chat)
            assert chat.owner is not None
            if inside and user.name != chat.owner:
                fold(ev.MemberLeft(chat.id, user.name, at))
            elif not inside and rng.random() < 0.4:
                fold(ev.JoinRequested(chat.id, user.name, at))
                if rng.random() < 0.5:
                    fold(ev.JoinDeclined(chat.id, user.name, at))
            elif not inside:
                invited = chat.owner if rng.random() < 0.5 else None
                fold(ev.MemberJoined(chat.id, user.name, at, invited))
            if rng.random() < 0.2:
                fold(ev.JoinLinkCreated(chat.id, f"link{step}", at))
        if rng.random() < 0.05:
            expire(at)
    expire(at)
    return done


def redo(state: State, steps: list[Step]) -> None:
    for step in steps:
        if isinstance(step, int):
            state.expire(step)
        else:
            state.apply(step)


def history(seed: int, steps: int) -> State:
    state = State(history_size=5, quotas=Config().quotas)
    grow(state, random.Random(seed), steps)
    return state


def fields(thing: Any, *leave_out: str) -> dict[str, Any]:
    names = (
        thing.__struct_fields__
        if isinstance(thing, msgspec.Struct)
        else [f.name for f in dataclasses.fields(thing)]
    )
    return {name: getattr(thing, name) for name in names if name not in leave_out}


def picture(state: State) -> dict[str, Any]:
    """Every structure of ``state``, in the order it keeps where that order is seen
    (a user's chats, the markers, the client_ids evicted oldest first); heaps and
    indexes as what they hold of the live state."""
    live, search = state.messages, state.search
    for device in state.devices_by_token.values():  # the same objects as the users'
        assert state.users[user_key(device.user)].devices[device.id] is device
    for comment in state.comments.values():
        assert live[comment.message].comments[comment.position] is comment
    return {
        "cursor": state.cursor,
        "stored_bytes": state.stored_bytes,
        "users": [
            {
                **fields(user, "devices", "chats", "reporters", "scheduled"),
                "devices": [fields(device) for device in user.devices.values()],
                "chats": list(user.chats),
                "reporters": sorted(user.reporters),
                "scheduled": list(user.scheduled),
            }
            for user in state.users.values()
        ],
        "skeletons": state.skeletons,
        "devices_by_token": {token: device.id for token, device in state.devices_by_token.items()},
        "chats": [
            {
                **fields(chat, "messages", "read_markers", "requests"),
                "messages": [m and m.id for m in chat.messages],
                "read_markers": list(chat.read_markers.items()),
                "requests": list(chat.requests.items()),
            }
            for chat in state.chats.values()
        ],
        "direct_chats": state.direct_chats,
        "links": state.links,
        "messages": {
            m.id: {
                **fields(m, "order", "comments"),
                "comments": [fields(comment) for comment in m.comments],
            }
            for m in live.values()
        },
        "search order": [m.id for m in state.search.messages if m is not None],
        "search words": {
            word: found
            for word, posted in state.search.postings.items()
            if (found := [m.id for o in posted if (m := search.messages[o - search.base])])
        },
        "comments": {key: fields(comment) for key, comment in state.comments.items()},
        "files": {key: fields(stored) for key, stored in state.files.items()},
        "scheduled": [fields(pending) for pending in state.scheduled.values()],
        "schedule": sorted(entry for entry in state.schedule if entry[1] in state.scheduled),
        "client_ids": [
            (device, list(seen.items())) for device, seen in state.client_ids.items() if seen
        ],
        "expiries": sorted(entry for entry in state.expiries if entry[1] in live),
        "mentions": {
            key: kept
            for key, seqs in state.mentions.seqs.items()
            if (kept := [seq for seq in seqs if state.chats[ChatId(key[0])].message_at(seq)])
        },
    }


def loaded(data: bytes, like: State, *, deferred: bool = False) -> State:
    """A fresh state like ``like``, the snapshot ``data`` loaded into it; ``deferred``:
    its search index built after the load, as at a server's start."""
    again = State(like.history_size, like.rate_period_ms, like.quotas)
    if deferred:
        again.search.defer()
    load(data, again)
    again.search.build(10**9)
    return again


@pytest.mark.parametrize("seed", range(6))
def test_loading_the_snapshot_of_a_folded_history_gives_the_same_state(seed: int) -> None:
    """A history of every kind of event, folded, and the load of its snapshot: every
    structure the same; and the same again after the same events are folded into both
    (the loaded state goes on as the folded one would)."""
    state = history(seed, 1500)
    data = b"".join(dump(state))
    assert data.startswith(FORMAT)
    again = loaded(data, state)
    assert picture(again) == picture(state)
    assert picture(loaded(data, state, deferred=True)) == picture(state)
    assert b"".join(dump(again)) == data
    later = grow(state, random.Random(seed + 100), 500, at=10**9)
    redo(again, later)
    assert picture(again) == picture(state)


@pytest.mark.parametrize("seed", range(3))
def test_a_dropped_state_is_freed_without_the_cyclic_gc(seed: int) -> None:
    """A folded state and a loaded one hold no reference cycle: dropped, reference
    counting alone frees them. (The server freezes its state out of the cyclic GC's
    reach at start, and a cluster node's re-read drops it for a fresh one.)"""
    state = history(seed, 800)
    again = loaded(b"".join(dump(state)), state)
    gc.collect()  # whatever the making left behind
    gc.disable()
    try:
        del state, again
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_snapshot_of_events_loads_to_the_same_state_as_the_new_format() -> None:
    """The snapshots saved before (format 0, events folded) load to the state format 1
    gives, but for what format 0 never kept exactly: the order of the devices whose
    client_ids are remembered, and a read marker moved back behind the reader's own
    message (its fold moves the marker up to it again)."""
    state = history(7, 1500)
    events = b"".join(encode_record(ev.to_record(event)) for event in snapshot(state))
    old, new = picture(loaded(events, state)), picture(loaded(b"".join(dump(state)), state))
    assert sorted(old.pop("client_ids")) == sorted(new.pop("client_ids"))
    for chat in old["chats"] + new["chats"]:
        chat.pop("read_markers")
    assert old == new


def test_a_damaged_snapshot_is_refused() -> None:
    """A snapshot whose lines do not decode is refused, not half loaded silently."""
    state = history(8, 200)
    data = b"".join(dump(state))
    with pytest.raises(SnapshotDamaged):
        load(data[: len(data) // 2], State())


@pytest.mark.parametrize("valid_json", [True, False], ids=["still-json", "not-json"])
def test_a_snapshot_of_events_with_a_damaged_record_is_refused_naming_it(
    valid_json: bool,
) -> None:
    """A format-0 snapshot (records) whose second record does not match its checksum is
    refused naming that record, even where the damage leaves valid JSON."""
    state = history(9, 50)
    lines = [encode_record(ev.to_record(event)) for event in snapshot(state)]
    body = lines[1][9:-1]
    damaged = body.replace(b'"', b"'", 1) if not valid_json else body.replace(b"1", b"2", 1)
    assert damaged != body
    lines[1] = lines[1][:9] + damaged + b"\n"
    with pytest.raises(SnapshotDamaged, match="record 2 of the snapshot"):
        load(b"".join(lines), State())
