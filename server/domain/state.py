"""The state: a fold over the events, plus the indexes that keep every read O(result).

``State.fold`` is the only place that changes state (but for ``expire``, which
drops what time has ended); it never fails for an event that ``rules`` produced,
and replaying the log calls exactly the same code.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

from server.domain.events import (
    ChatRestored,
    ClientIdsRestored,
    CommentAdded,
    DeviceAuthorized,
    DeviceRevoked,
    DirectChatOpened,
    Event,
    FileDropped,
    FileUploaded,
    GroupCreated,
    JoinDeclined,
    JoinLinkCreated,
    JoinRequested,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    MessageScheduled,
    ReadMarkerMoved,
    ScheduledCancelled,
    SnapshotTaken,
    StandingRestored,
    UserBanned,
    UserRegistered,
    UserReported,
    UserSeen,
)
from server.domain.limits import NO_QUOTAS, Quotas, skeleton, spend, text_size
from server.domain.model import (
    GENERAL,
    Chat,
    ChatId,
    Comment,
    CommentId,
    Device,
    DeviceId,
    FileId,
    Message,
    MessageId,
    Scheduled,
    ScheduledId,
    StoredFile,
    User,
    UserKey,
    UserName,
    user_key,
)
from server.domain.search import MentionIndex, SearchIndex

_Id = TypeVar("_Id", MessageId, ScheduledId)

# How many client_ids per device are remembered for idempotent `send`.
CLIENT_IDS_PER_DEVICE: Final = 1000


class State:
    def __init__(
        self, history_size: int = 20, rate_period_ms: int = 3_600_000, quotas: Quotas = NO_QUOTAS
    ) -> None:
        self.history_size = history_size
        self.rate_period_ms = rate_period_ms
        self.quotas = quotas
        self._flood_interval = quotas.flood_interval_ms
        self._invite_interval = quotas.invite_interval_ms
        self.stored_bytes = 0  # of every stored file
        self.cursor = 0  # cursor of the last applied event
        self.users: dict[UserKey, User] = {}
        self.skeletons: dict[str, UserKey] = {}  # what each name looks like: the first one
        self.devices_by_token: dict[str, Device] = {}
        self.chats: dict[ChatId, Chat] = {GENERAL: Chat(GENERAL, "general", "general", None)}
        self.direct_chats: dict[tuple[UserKey, UserKey], ChatId] = {}
        self.links: dict[str, ChatId] = {}  # join link hash -> group
        self.messages: dict[MessageId, Message] = {}
        self.comments: dict[CommentId, Comment] = {}
        self.files: dict[FileId, StoredFile] = {}
        self.scheduled: dict[ScheduledId, Scheduled] = {}
        # (send_at, id) of pending messages; cancelled ones are skipped when popped
        self.schedule: list[tuple[int, ScheduledId]] = []
        # device -> client_id -> the id of the message (or the scheduled one) it sent
        self.client_ids: dict[DeviceId, dict[str, str]] = {}
        self.expiries = Expiries()
        self.expired_since_snapshot = 0  # messages expired (or deleted) the log still holds
        self.search = SearchIndex()
        self.mentions = MentionIndex()

    def apply(self, event: Event) -> int:
        """Fold one logged event into the state; returns the event's cursor."""
        _FOLD[type(event)](self, event)
        self.cursor += 1
        return self.cursor

    def fold(self, event: Event) -> None:
        """Fold one snapshot event: it has no cursor of its own."""
        _FOLD[type(event)](self, event)

    # -- queries -----------------------------------------------------------------

    def user(self, name: str) -> User | None:
        return self.users.get(user_key(name))

    @property
    def general(self) -> Chat:
        return self.chats[GENERAL]

    def direct_chat_between(self, a: UserName, b: UserName) -> Chat | None:
        chat_id = self.direct_chats.get(_pair(a, b))
        return None if chat_id is None else self.chats[chat_id]

    def newcomer_read_seq(self, now: int | None = None) -> int:
        """A newcomer's unread starts with the last `history_size` live messages (live
        at ``now``: those whose lifetime is over count as gone, reclaimed or not)."""
        general = self.general
        first = general.first_seq
        if now is not None:
            for message in general.messages:
                if message is not None and not expired(message, now):
                    break
                first += 1
        return max(first - 1, general.last_seq - self.history_size)

    def live_message(self, message_id: str, now: int) -> Message | None:
        """The message, unless it was deleted or its lifetime is over by ``now`` (whether
        ``expire`` has reclaimed it yet or not: a query never reclaims)."""
        message = self.messages.get(MessageId(message_id))
        return None if message is None or expired(message, now) else message

    def rate_window(self, at: int) -> int:
        return at // self.rate_period_ms

    def next_due(self) -> int | None:
        """When the earliest pending scheduled message is due, if any (the heap's top
        is always a pending one: the fold drops posted and cancelled ones from it)."""
        return self.schedule[0][0] if self.schedule else None

    def due(self, now: int) -> list[Scheduled]:
        """The pending messages due by ``now``, soonest first; changes nothing.

        Walks only the part of the heap at or before ``now`` (a heap's children are
        never earlier than their parent): O(due), however many are pending."""
        found = [entry for entry in _heap_until(self.schedule, now) if entry[1] in self.scheduled]
        found.sort()
        return [self.scheduled[scheduled_id] for _, scheduled_id in found]

    def lapsed(self, now: int) -> dict[ChatId, list[Message]]:
        """The messages whose lifetime is over by ``now`` that ``expire`` has not
        reclaimed yet, by chat: a read treats them as gone and changes nothing.
        O(those) (the front of ``expiries``): few, as the executor reclaims before every
        command and housekeeping between them."""
        found: dict[ChatId, list[Message]] = {}
        for message_id in self.expiries.due(now):
            message = self.messages.get(message_id)
            if message is not None:
                found.setdefault(message.chat, []).append(message)
        return found

    def compacted(self) -> None:
        """A snapshot of this state was written: what expired is off the disk too."""
        self.expired_since_snapshot = 0

    def expire(self, now: int) -> None:
        """Drop every message (and its comments) whose lifetime is over by ``now``.

        O(1) when nothing expired, and O(1) per message that did (O(log n) for one
        that expires out of order).
        """
        touched: set[Chat] = set()
        for message_id in self.expiries.pop_due(now):
            message = self.messages.get(message_id)
            if message is None:
                continue
            self._forget(message)
            self.search.expired(message)
            touched.add(self._clear_slot(message))
        for chat in touched:
            _trim(chat)

    def _clear_slot(self, message: Message) -> Chat:
        """The message's seq becomes a hole (never reused); it leaves the disk at the
        next compaction."""
        self.expired_since_snapshot += 1
        chat = self.chats[message.chat]
        chat.messages[message.seq - chat.first_seq] = None
        chat.holes += 1
        return chat

    def unused_files(self, now: int, keep_ms: int) -> list[StoredFile]:
        """The files that no live message and no pending one carries, ``keep_ms``
        after their upload."""
        carried = {pending.file for pending in self.scheduled.values()}
        return [
            stored
            for stored in self.files.values()
            if not stored.chats and stored.id not in carried and stored.uploaded_at + keep_ms <= now
        ]

    def _forget(self, message: Message) -> None:
        del self.messages[message.id]
        users = self.users
        users[user_key(message.author)].live_bytes -= text_size(message.text)
        for comment in message.comments:
            del self.comments[comment.id]
            users[user_key(comment.author)].live_bytes -= text_size(comment.text)
        if message.file is not None:
            stored = self.files.get(message.file)
            if stored is not None:
                left = stored.chats.get(message.chat, 0) - 1
                if left > 0:
                    stored.chats[message.chat] = left
                else:
                    stored.chats.pop(message.chat, None)

    # -- the fold ----------------------------------------------------------------

    def _user_registered(self, event: UserRegistered) -> None:
        key = user_key(event.user)
        user = self.users[key] = User(event.user, event.password_hash, event.at)
        self.skeletons.setdefault(skeleton(event.user), key)
        general = self.general
        marker = event.general_read_seq
        if marker is None:  # an older log: the rule's formula, as it was
            marker = self.newcomer_read_seq()
        general.read_markers[key] = marker
        user.chats[GENERAL] = None

    def _device_authorized(self, event: DeviceAuthorized) -> None:
        device = Device(event.device, event.user, event.name, event.token_hash, event.at)
        self.users[user_key(event.user)].devices[event.device] = device
        self.devices_by_token[event.token_hash] = device

    def _device_revoked(self, event: DeviceRevoked) -> None:
        device = self.users[user_key(event.user)].devices.pop(event.device)
        del self.devices_by_token[device.token_hash]
        self.client_ids.pop(event.device, None)

    def _direct_chat_opened(self, event: DirectChatOpened) -> None:
        chat = Chat(event.chat, "direct", None, None)
        self.chats[event.chat] = chat
        for name in (event.user_a, event.user_b):
            self._join(chat, user_key(name))
        self.direct_chats[_pair(event.user_a, event.user_b)] = event.chat

    def _message_posted(self, event: MessagePosted) -> None:
        # Replay's hot path (most events are this one): fields read once into locals;
        # the message keeps the state's own strings for its chat and author, not the
        # event's copies (a million copies of "general" in a replay otherwise).
        seq, at, text = event.seq, event.at, event.text
        chat = self.chats[event.chat]
        chat_id = chat.id
        author_key = UserKey(event.author.lower())  # user_key(), inlined
        author = self.users[author_key]
        name = author.name if author.name == event.author else event.author
        messages = chat.messages
        if not messages:  # after expiry, seq goes on where it was
            chat.first_seq = seq
        message = Message(
            event.message,
            chat_id,
            seq,
            name,
            text,
            at,
            event.expires_at,
            event.file,
            event.edited_at,
        )
        index = seq - chat.first_seq
        if index == len(messages):
            messages.append(message)
        else:  # a snapshot's message, into the slot its ChatRestored laid out
            messages[index] = message
            chat.holes -= 1
        self.messages[message.id] = message
        self.search.add(message)
        if event.mentions:
            self._mention(message, event.mentions)
        if message.expires_at is not None:
            self.expiries.add(message.expires_at, message.id)
        author.posted += 1
        # text_size(), spend() and _count_send() are inlined below: a call each was 8 %
        # of a 1M-event replay (bench/replay.py); each says the same as the helper.
        author.live_bytes += len(text) if text.isascii() else len(text.encode())
        # Writing in a chat reads it: your own messages are never unread to you.
        # (Not backwards: a snapshot has restored the marker before its messages.)
        markers = chat.read_markers
        if markers.get(author_key, seq) < seq:
            markers[author_key] = seq
        if event.scheduled is not None:
            pending = self.scheduled.pop(event.scheduled, None)
            author.scheduled.pop(event.scheduled, None)
            self._tidy_schedule()
            if pending is not None and pending.client_id is not None:
                assert pending.device is not None
                self._remember(author, pending.device, pending.client_id, message.id)
        else:
            if self._flood_interval:
                tat = author.flood_tat
                author.flood_tat = (tat if tat > at else at) + self._flood_interval
            if chat_id == GENERAL:
                window = at // self.rate_period_ms
                if author.rate_window != window:
                    author.rate_window, author.rate_count = window, 1
                else:
                    author.rate_count += 1
        if event.file is not None:
            stored = self.files[event.file]
            stored.chats[chat_id] = stored.chats.get(chat_id, 0) + 1
        if event.client_id is not None and event.device is not None:
            self._remember(author, event.device, event.client_id, message.id)

    def _mention(self, message: Message, names: list[str]) -> None:
        for key in {user_key(name) for name in message.mentions}:
            self.mentions.remove(message.chat, key, message.seq)
        message.mentions = tuple(UserName(name) for name in names)
        for name in names:
            self.mentions.add(message.chat, user_key(name), message.seq)

    def _message_edited(self, event: MessageEdited) -> None:
        author = self.users[user_key(event.author)]
        if self._flood_interval:  # an edit is pushed to everyone as a send is
            author.flood_tat = spend(author.flood_tat, event.at, self._flood_interval)
        message = self.messages.get(event.message)
        if message is None:  # expired here already (a follower's clock a little ahead)
            return
        old_text, message.text, message.edited_at = message.text, event.text, event.at
        self.search.edit(message, old_text)
        self._mention(message, event.mentions or [])
        author.live_bytes += text_size(event.text) - text_size(old_text)
        if event.client_id is not None and event.device is not None:
            self._remember(author, event.device, event.client_id, message.id)

    def _message_deleted(self, event: MessageDeleted) -> None:
        message = self.messages.get(event.message)
        if message is None:  # expired here already
            return
        self._mention(message, [])
        self.search.delete(message)
        self._forget(message)
        _trim(self._clear_slot(message))

    def _user_seen(self, event: UserSeen) -> None:
        user = self.users[user_key(event.user)]
        if user.last_seen is None or event.at > user.last_seen:  # nodes record apart
            user.last_seen = event.at

    def _remember(self, user: User, device: DeviceId, client_id: str, result: str) -> None:
        if device not in user.devices:  # logged out since: nothing to repeat for it
            return
        seen = self.client_ids.get(device)
        if seen is None:
            seen = self.client_ids[device] = {}
        seen[client_id] = result
        if len(seen) > CLIENT_IDS_PER_DEVICE:
            del seen[next(iter(seen))]

    def _count_send(self, author: User, at: int) -> None:
        window = at // self.rate_period_ms  # rate_window(), inlined: replay's hot path
        if author.rate_window != window:
            author.rate_window, author.rate_count = window, 0
        author.rate_count += 1

    def _read_marker_moved(self, event: ReadMarkerMoved) -> None:
        self.chats[event.chat].read_markers[user_key(event.user)] = event.seq

    def _comment_added(self, event: CommentAdded) -> None:
        author = self.users[user_key(event.author)]
        if self._flood_interval:
            author.flood_tat = spend(author.flood_tat, event.at, self._flood_interval)
        message = self.messages.get(event.message)
        if message is None:  # expired here already (a follower's clock a little ahead)
            return
        comment = Comment(
            event.comment,
            event.message,
            event.chat,
            event.author,
            event.text,
            event.at,
            len(message.comments),
        )
        if isinstance(message.comments, list):
            message.comments.append(comment)
        else:
            message.comments = [comment]
        self.comments[comment.id] = comment
        author.live_bytes += text_size(event.text)

    def _message_scheduled(self, event: MessageScheduled) -> None:
        pending = Scheduled(
            event.scheduled,
            event.chat,
            event.author,
            event.text,
            event.file,
            event.send_at,
            event.device,
            event.client_id,
        )
        author = self.users[user_key(event.author)]
        if event.client_id is not None and event.device is not None:
            self._remember(author, event.device, event.client_id, pending.id)
        self.scheduled[pending.id] = pending
        heapq.heappush(self.schedule, (pending.send_at, pending.id))
        author.scheduled[pending.id] = None
        if self._flood_interval:
            author.flood_tat = spend(author.flood_tat, event.at, self._flood_interval)
        if event.chat == GENERAL:
            self._count_send(author, event.at)

    def _scheduled_cancelled(self, event: ScheduledCancelled) -> None:
        pending = self.scheduled.pop(event.scheduled)
        self.users[user_key(pending.author)].scheduled.pop(pending.id, None)
        self._tidy_schedule()

    def _tidy_schedule(self) -> None:
        """Keep the heap's top pending, and the entries no longer pending few."""
        heap = self.schedule
        if len(heap) > 2 * len(self.scheduled) + 64:
            self.schedule = heap = [entry for entry in heap if entry[1] in self.scheduled]
            heapq.heapify(heap)
        while heap and heap[0][1] not in self.scheduled:
            heapq.heappop(heap)

    def _user_reported(self, event: UserReported) -> None:
        self.users[user_key(event.user)].reporters.add(user_key(event.reporter))

    def _user_banned(self, event: UserBanned) -> None:
        user = self.users[user_key(event.user)]
        user.banned_until = event.until
        user.reporters.clear()  # the count starts again after the ban

    def _file_dropped(self, event: FileDropped) -> None:
        stored = self.files.pop(event.file)
        self.stored_bytes -= stored.size
        uploader = self.users.get(user_key(stored.uploader))
        if uploader is not None:
            uploader.stored_bytes -= stored.size

    def _file_uploaded(self, event: FileUploaded) -> None:
        self.files[event.file] = StoredFile(
            event.file,
            event.name,
            event.size,
            event.content_type,
            event.sha256,
            event.uploader,
            event.at,
        )
        self.stored_bytes += event.size
        self.users[user_key(event.uploader)].stored_bytes += event.size

    def _group_created(self, event: GroupCreated) -> None:
        chat = Chat(event.chat, "group", event.title, event.owner)
        self.chats[event.chat] = chat
        owner = user_key(event.owner)
        self._join(chat, owner)
        self.users[owner].groups_owned += 1

    def _member_joined(self, event: MemberJoined) -> None:
        chat = self.chats[event.chat]
        key = user_key(event.user)
        chat.requests.pop(key, None)
        self._join(chat, key)
        if event.invited_by is not None and self._invite_interval:
            inviter = self.users[user_key(event.invited_by)]
            inviter.invite_tat = spend(inviter.invite_tat, event.at, self._invite_interval)

    def _join(self, chat: Chat, key: UserKey) -> None:
        # A member who joins late reads from now on, not the group's past.
        chat.read_markers[key] = chat.last_seq if chat.kind == "group" else 0
        self.users[key].chats[chat.id] = None

    def _member_left(self, event: MemberLeft) -> None:
        chat = self.chats[event.chat]
        key = user_key(event.user)
        del chat.read_markers[key]
        self.users[key].chats.pop(chat.id, None)

    def _join_link_created(self, event: JoinLinkCreated) -> None:
        chat = self.chats[event.chat]
        if chat.link_hash is not None:
            self.links.pop(chat.link_hash, None)
        chat.link_hash = event.link_hash
        self.links[event.link_hash] = chat.id

    def _join_requested(self, event: JoinRequested) -> None:
        self.chats[event.chat].requests[user_key(event.user)] = event.at

    def _join_declined(self, event: JoinDeclined) -> None:
        self.chats[event.chat].requests.pop(user_key(event.user), None)

    def _chat_restored(self, event: ChatRestored) -> None:
        chat = self.chats.get(event.chat)
        if chat is None:
            chat = self.chats[event.chat] = Chat(event.chat, event.kind, event.title, event.owner)
            if event.owner is not None:
                self.users[user_key(event.owner)].groups_owned += 1
        chat.first_seq = event.first_seq
        if event.last_seq is not None:  # slots for its messages, and for the holes between
            slots = event.last_seq - event.first_seq + 1
            chat.messages, chat.holes = [None] * slots, slots
        chat.read_markers = {UserKey(k): v for k, v in event.read_markers.items()}
        for key in chat.read_markers:
            self.users[key].chats[chat.id] = None
        if chat.kind == "direct":
            a, b = sorted(chat.read_markers)
            self.direct_chats[(a, b)] = chat.id
        if event.link_hash is not None:
            chat.link_hash = event.link_hash
            self.links[event.link_hash] = chat.id
        chat.requests = {UserKey(k): v for k, v in (event.requests or {}).items()}

    def _standing_restored(self, event: StandingRestored) -> None:
        user = self.users[user_key(event.user)]
        user.rate_window, user.rate_count = event.rate_window, event.rate_count
        user.reporters = {UserKey(k) for k in event.reporters or ()}
        user.banned_until = event.banned_until
        user.flood_tat, user.invite_tat = event.flood_tat, event.invite_tat
        if event.posted is not None:  # older snapshots: as the live messages counted it
            user.posted = event.posted
        if event.chats is not None:
            user.chats = {ChatId(chat): None for chat in event.chats}

    def _client_ids_restored(self, event: ClientIdsRestored) -> None:
        self.client_ids[event.device] = dict(event.client_ids)

    def _snapshot_taken(self, event: SnapshotTaken) -> None:
        self.cursor = event.cursor


def _heap_until(heap: list[tuple[int, _Id]], now: int) -> list[tuple[int, _Id]]:
    """The entries of ``heap`` at or before ``now``, in no order, without popping:
    only that part is walked (a heap's children are never earlier than their parent)."""
    found = []
    below = [0]
    while below:
        index = below.pop()
        if index < len(heap) and heap[index][0] <= now:
            found.append(heap[index])
            below += (2 * index + 1, 2 * index + 2)
    return found


# How each event is folded: the class's functions, not a state's bound methods, so a
# state holds no reference cycle and is freed when dropped (a cluster's re-read drops
# one), even once ``gc.freeze`` has put it out of the cyclic GC's reach.
_FOLD: Final[dict[type[Any], Callable[[State, Any], None]]] = {
    UserRegistered: State._user_registered,
    DeviceAuthorized: State._device_authorized,
    DeviceRevoked: State._device_revoked,
    DirectChatOpened: State._direct_chat_opened,
    MessagePosted: State._message_posted,
    MessageEdited: State._message_edited,
    MessageDeleted: State._message_deleted,
    UserSeen: State._user_seen,
    ReadMarkerMoved: State._read_marker_moved,
    CommentAdded: State._comment_added,
    MessageScheduled: State._message_scheduled,
    ScheduledCancelled: State._scheduled_cancelled,
    UserReported: State._user_reported,
    UserBanned: State._user_banned,
    FileUploaded: State._file_uploaded,
    FileDropped: State._file_dropped,
    GroupCreated: State._group_created,
    MemberJoined: State._member_joined,
    MemberLeft: State._member_left,
    JoinLinkCreated: State._join_link_created,
    JoinRequested: State._join_requested,
    JoinDeclined: State._join_declined,
    ChatRestored: State._chat_restored,
    StandingRestored: State._standing_restored,
    ClientIdsRestored: State._client_ids_restored,
    SnapshotTaken: State._snapshot_taken,
}


class Expiries:
    """The ids of the messages with a lifetime, by when it ends: what ``State.expire``
    reclaims and ``State.lapsed`` reads (a message deleted before then is among them
    until its time; the state looks each up).

    Messages are posted nearly always in the order their lifetimes end (one lifetime
    for all, from the time of the post), so they queue: O(1) in and out, and no object
    made per message (a heap's ``(expires_at, id)`` tuple each was 919k objects for the
    cyclic GC to walk after a 1M-event start, 0.13-0.2 s, bench/replay.py). One that
    ends before the last queued (the clock stepped back, a shorter lifetime since a
    restart) goes to a heap beside the queue."""

    __slots__ = ("_ends", "_heap", "_ids")

    def __init__(self) -> None:
        self._ends: deque[int] = deque()  # when each queued lifetime ends, never falling
        self._ids: deque[MessageId] = deque()  # whose, in step with ``_ends``
        self._heap: list[tuple[int, MessageId]] = []  # (end, id) of the rest

    def add(self, ends: int, message: MessageId) -> None:
        queued = self._ends
        if not queued or queued[-1] <= ends:
            queued.append(ends)
            self._ids.append(message)
        else:
            heapq.heappush(self._heap, (ends, message))

    def load(self, entries: list[tuple[int, MessageId]]) -> None:
        """``add`` of each ``(ends, id)`` (a snapshot's, in chat order): sorted first,
        they queue."""
        entries.sort()
        for ends, message in entries:
            self.add(ends, message)

    def due(self, now: int) -> list[MessageId]:
        """The ids whose lifetime is over by ``now``, in no order; changes nothing.
        O(those): the queue's front and the heap's top only."""
        found = [message for _, message in _heap_until(self._heap, now)]
        for ends, message in zip(self._ends, self._ids, strict=True):
            if ends > now:
                break
            found.append(message)
        return found

    def pop_due(self, now: int) -> list[MessageId]:
        """The ids whose lifetime is over by ``now``, taken out."""
        found = []
        ends, ids, heap = self._ends, self._ids, self._heap
        while ends and ends[0] <= now:
            ends.popleft()
            found.append(ids.popleft())
        while heap and heap[0][0] <= now:
            found.append(heapq.heappop(heap)[1])
        return found

    def __len__(self) -> int:
        return len(self._ends) + len(self._heap)

    def __iter__(self) -> Iterator[tuple[int, MessageId]]:
        """Every ``(ends, id)``, in no order."""
        yield from zip(self._ends, self._ids, strict=True)
        yield from self._heap


def expired(message: Message, now: int) -> bool:
    """Whether ``message``'s lifetime is over by ``now`` (``expires_at == now`` is over)."""
    return message.expires_at is not None and message.expires_at <= now


def _trim(chat: Chat) -> None:
    messages = chat.messages
    leading = 0
    while leading < len(messages) and messages[leading] is None:
        leading += 1
    del messages[:leading]
    chat.first_seq += leading
    chat.holes -= leading


def _pair(a: str, b: str) -> tuple[UserKey, UserKey]:
    x, y = user_key(a), user_key(b)
    return (x, y) if x <= y else (y, x)
