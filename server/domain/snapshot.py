"""The state as a snapshot: ``dump(state)`` is what compaction saves in the snapshot
store, and ``load`` of it into a fresh ``State`` gives the same state back.

Expired messages are not in it: call ``State.expire`` first.

Format 1 (``messenger-state 1``): the state's live objects as they are, one JSON
line per slice of a section, ``["users", [row, ...]]``: rows of plain values, no
event objects, no fold. A million live messages load in a fraction of the time
their ``MessagePosted`` events took to fold (bench/replay.py; figures in
README): a snapshot is what a start reads first, every start. ``load`` builds the
objects the fold would have built, and the indexes from them; that the two agree
is pinned by tests/server/test_snapshot.py (a history of every kind of event,
folded, against the load of its snapshot, structure by structure).

Format 0, what snapshots were before (and what logs written before snapshots
were kept apart hold at their head): lines of records as the log writes them,
the events of ``snapshot(state)`` folded by ``State.fold``. Still loaded.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, Final

import orjson
from zlib_ng.zlib_ng import crc32

from server.domain.events import (
    ChatRestored,
    ClientIdsRestored,
    CommentAdded,
    DeviceAuthorized,
    Event,
    FileUploaded,
    MessagePosted,
    MessageScheduled,
    SnapshotTaken,
    StandingRestored,
    UserRegistered,
    UserSeen,
    from_record,
)
from server.domain.limits import skeleton
from server.domain.model import (
    Chat,
    Comment,
    Device,
    Message,
    MessageId,
    Scheduled,
    StoredFile,
    User,
    UserName,
    user_key,
)
from server.domain.state import State

FORMAT: Final = b"messenger-state 1\n"
_FORMATS: Final = b"messenger-state "  # how every format after 0 begins
# What rows that are not what ``dump`` wrote raise as they load (too short, of the
# wrong types, naming what is not there).
_UNFIT: Final = (TypeError, ValueError, KeyError, IndexError, AttributeError)
SLICE: Final = 2000  # rows per line: a caller may yield to others between lines


def snapshot(state: State) -> Iterator[Event]:
    """Format 0, as events (kept to write older state folders in tests): users,
    devices, files, chats with their live messages and comments, pending schedules,
    standings, remembered client_ids; last, the cursor."""
    for user in state.users.values():
        yield UserRegistered(user.name, user.password_hash, user.registered_at)
        for device in user.devices.values():
            yield DeviceAuthorized(
                user.name, device.id, device.name, device.token_hash, device.created_at
            )
    for stored in state.files.values():
        yield FileUploaded(
            stored.id,
            stored.name,
            stored.size,
            stored.content_type,
            stored.sha256,
            stored.uploader,
            stored.uploaded_at,
        )
    for chat in state.chats.values():
        yield ChatRestored(
            chat.id,
            chat.kind,
            chat.first_seq,
            {str(key): seq for key, seq in chat.read_markers.items()},
            title=chat.title,
            owner=chat.owner,
            link_hash=chat.link_hash,
            requests={str(key): at for key, at in chat.requests.items()} or None,
            last_seq=chat.last_seq,
        )
    # Every chat's slots are laid out: the messages follow in the order they were
    # posted, across chats, so that the search index is rebuilt in its order.
    for message in state.search.messages:
        if message is None:
            continue
        yield MessagePosted(
            message.id,
            message.chat,
            message.seq,
            message.author,
            message.text,
            message.ts,
            message.expires_at,
            file=message.file,
            mentions=list(message.mentions) or None,
            edited_at=message.edited_at,
        )
        for comment in message.comments:
            yield CommentAdded(
                comment.id, message.id, message.chat, comment.author, comment.text, comment.ts
            )
    for pending in state.scheduled.values():
        yield MessageScheduled(
            pending.id,
            pending.chat,
            pending.author,
            pending.text,
            pending.send_at,
            0,
            pending.file,
            pending.device,
            pending.client_id,
        )
    for user in state.users.values():
        yield StandingRestored(
            user.name,
            rate_window=user.rate_window,
            rate_count=user.rate_count,
            reporters=sorted(user.reporters) or None,
            banned_until=user.banned_until,
            chats=list(user.chats),
            flood_tat=user.flood_tat,
            invite_tat=user.invite_tat,
            posted=user.posted,
        )
        if user.last_seen is not None:
            yield UserSeen(user.name, user.last_seen)
    for device_id, client_ids in state.client_ids.items():
        if client_ids:
            yield ClientIdsRestored(device_id, dict(client_ids))
    yield SnapshotTaken(state.cursor)


class SnapshotDamaged(ValueError):
    """A snapshot's data does not decode: not what ``dump`` wrote."""


def dump(state: State) -> Iterator[bytes]:
    """The snapshot of ``state`` in format 1, in lines (a caller may yield to others
    between them)."""
    yield FORMAT
    yield _line("state", [[state.cursor, state.stored_bytes]])
    users = [_user_row(user) for user in state.users.values()]
    yield from _lines("users", users)
    files = [
        [f.id, f.name, f.size, f.content_type, f.sha256, f.uploader, f.uploaded_at, f.chats]
        for f in state.files.values()
    ]
    yield from _lines("files", files)
    chats = [
        [
            c.id,
            c.kind,
            c.title,
            c.owner,
            c.read_markers,
            c.first_seq,
            len(c.messages),
            c.link_hash,
            c.requests,
        ]
        for c in state.chats.values()
    ]
    yield from _lines("chats", chats)
    # In the order they were posted, across chats: the search index's order.
    rows: list[list[Any]] = []
    for m in state.search.messages:
        if m is None:
            continue
        comments = [[c.id, c.author, c.text, c.ts] for c in m.comments] if m.comments else None
        rows.append(
            [
                m.id,
                m.chat,
                m.seq,
                m.author,
                m.text,
                m.ts,
                m.expires_at,
                m.file,
                m.edited_at,
                m.mentions or None,
                comments,
            ]
        )
        if len(rows) == SLICE:
            yield _line("messages", rows)
            rows = []
    if rows:
        yield _line("messages", rows)
    scheduled = [
        [p.id, p.chat, p.author, p.text, p.file, p.send_at, p.device, p.client_id]
        for p in state.scheduled.values()
    ]
    yield from _lines("scheduled", scheduled)
    client_ids = [[device, seen] for device, seen in state.client_ids.items() if seen]
    yield from _lines("client_ids", client_ids)


def _user_row(user: User) -> list[Any]:
    devices = [[d.id, d.name, d.token_hash, d.created_at] for d in user.devices.values()]
    return [
        user.name,
        user.password_hash,
        user.registered_at,
        devices,
        list(user.chats),
        user.rate_window,
        user.rate_count,
        sorted(user.reporters),
        user.banned_until,
        list(user.scheduled),
        user.flood_tat,
        user.invite_tat,
        user.posted,
        user.live_bytes,
        user.groups_owned,
        user.stored_bytes,
        user.last_seen,
    ]


def _line(section: str, rows: list[list[Any]]) -> bytes:
    return orjson.dumps([section, rows]) + b"\n"


def _lines(section: str, rows: list[list[Any]]) -> Iterator[bytes]:
    for start in range(0, len(rows), SLICE):
        yield _line(section, rows[start : start + SLICE])


def load(data: bytes, state: State) -> None:
    """Load the snapshot ``data`` (either format) into ``state``, a fresh one;
    ``SnapshotDamaged`` when it does not load."""
    if not data.startswith(FORMAT):
        if data.startswith(_FORMATS):  # a format to come: a newer server wrote it
            header = data[: data.find(b"\n")]
            raise SnapshotDamaged(
                f"Expected a snapshot of format 1 ({FORMAT.rstrip()!r}) or 0 (records), "
                f"but got {header!r}: written by a newer server"
            )
        _load_records(data, state)
        return
    loaders = {
        "state": _load_state,
        "users": _load_users,
        "files": _load_files,
        "chats": _load_chats,
        "messages": _load_messages,
        "scheduled": _load_scheduled,
        "client_ids": _load_client_ids,
    }
    view = memoryview(data)  # lines are read in place: no copy of a large snapshot
    start, number = len(FORMAT), 2
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        try:
            section, rows = orjson.loads(view[start:end])
            loaders[section](state, rows)
        except _UNFIT as error:
            raise SnapshotDamaged(f"line {number} of the snapshot: {error!r}") from None
        start, number = end + 1, number + 1
    for chat in state.chats.values():
        if chat.kind == "direct":
            try:
                a, b = sorted(chat.read_markers)
            except ValueError:
                raise SnapshotDamaged(
                    f"Expected two members of direct chat {chat.id!r}, "
                    f"but got {sorted(chat.read_markers)}"
                ) from None
            state.direct_chats[(a, b)] = chat.id
        if chat.link_hash is not None:
            state.links[chat.link_hash] = chat.id
        chat.holes = chat.messages.count(None)
    state.schedule = [(p.send_at, p.id) for p in state.scheduled.values()]
    heapq.heapify(state.schedule)


def _load_state(state: State, rows: list[list[Any]]) -> None:
    ((state.cursor, state.stored_bytes),) = rows


def _load_users(state: State, rows: list[list[Any]]) -> None:
    users, skeletons, by_token = state.users, state.skeletons, state.devices_by_token
    for row in rows:
        name: UserName = row[0]
        user = User(name, row[1], row[2])
        for device_id, device_name, token_hash, created_at in row[3]:
            device = Device(device_id, name, device_name, token_hash, created_at)
            user.devices[device_id] = device
            by_token[token_hash] = device
        user.chats = dict.fromkeys(row[4])
        user.rate_window, user.rate_count = row[5], row[6]
        user.reporters = set(row[7])
        user.banned_until = row[8]
        user.scheduled = dict.fromkeys(row[9])
        user.flood_tat, user.invite_tat = row[10], row[11]
        user.posted, user.live_bytes, user.groups_owned = row[12], row[13], row[14]
        user.stored_bytes, user.last_seen = row[15], row[16]
        key = user_key(name)
        users[key] = user
        skeletons.setdefault(skeleton(name), key)


def _load_files(state: State, rows: list[list[Any]]) -> None:
    for row in rows:
        state.files[row[0]] = StoredFile(*row)


def _load_chats(state: State, rows: list[list[Any]]) -> None:
    for chat_id, kind, title, owner, markers, first_seq, slots, link_hash, requests in rows:
        chat = Chat(chat_id, kind, title, owner, markers, [None] * slots, first_seq, slots)
        chat.link_hash, chat.requests = link_hash, requests
        state.chats[chat_id] = chat


def _load_messages(state: State, rows: list[list[Any]]) -> None:
    chats, messages, comments = state.chats, state.messages, state.comments
    expiring: list[tuple[int, MessageId]] = []
    mention = state.mentions.add
    loaded = []
    # One string per chat id and author name, not one per message (as the fold keeps them).
    authors: dict[str, UserName] = {}
    for row in rows:
        message_id, chat_id, seq, author, text, ts, expires_at, file, edited_at, names, said = row
        chat = chats[chat_id]
        chat_id = chat.id
        author = authors.setdefault(author, author)
        message = Message(message_id, chat_id, seq, author, text, ts, expires_at, file, edited_at)
        chat.messages[seq - chat.first_seq] = message  # its holes are counted after
        messages[message_id] = message
        loaded.append(message)
        if expires_at is not None:
            expiring.append((expires_at, message_id))
        if names:
            message.mentions = tuple(names)
            for name in names:
                mention(chat_id, user_key(name), seq)
        if said:
            message.comments = [
                Comment(comment_id, message_id, chat_id, by, words, at, position)
                for position, (comment_id, by, words, at) in enumerate(said)
            ]
            for comment in message.comments:
                comments[comment.id] = comment
    state.expiries.load(expiring)
    state.search.add_all(loaded)


def _load_scheduled(state: State, rows: list[list[Any]]) -> None:
    for row in rows:
        state.scheduled[row[0]] = Scheduled(*row)


def _load_client_ids(state: State, rows: list[list[Any]]) -> None:
    for device, seen in rows:
        state.client_ids[device] = seen


def _load_records(data: bytes, state: State) -> None:
    """Format 0: fold the records' events."""
    fold = state.fold
    for number, line in enumerate(data.splitlines(), start=1):
        body = line[9:]
        try:
            if line[8:9] != b" " or int(line[:8], 16) != crc32(body):
                raise ValueError("a checksum that does not match")
            fold(from_record(orjson.loads(body)))
        except (TypeError, ValueError, KeyError) as error:
            raise SnapshotDamaged(f"record {number} of the snapshot: {error}") from None
