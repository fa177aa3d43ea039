"""Identifiers and the mutable objects the state is made of."""

from __future__ import annotations

import dataclasses
from typing import NewType

import msgspec

UserName = NewType("UserName", str)  # as registered; compare with ``user_key``
UserKey = NewType("UserKey", str)  # case-folded name: unique per user
ChatId = NewType("ChatId", str)
DeviceId = NewType("DeviceId", str)
MessageId = NewType("MessageId", str)
CommentId = NewType("CommentId", str)
ScheduledId = NewType("ScheduledId", str)
FileId = NewType("FileId", str)

GENERAL = ChatId("general")


def user_key(name: str) -> UserKey:
    # Names are ASCII by the contract's pattern, so lower() is a full case fold.
    return UserKey(name.lower())


@dataclasses.dataclass(slots=True, eq=False)
class Device:
    id: DeviceId
    user: UserName
    name: str
    token_hash: str
    created_at: int


@dataclasses.dataclass(slots=True, eq=False)
class User:
    name: UserName
    password_hash: str
    registered_at: int
    devices: dict[DeviceId, Device] = dataclasses.field(default_factory=dict)
    chats: dict[ChatId, None] = dataclasses.field(default_factory=dict)  # ordered set
    # sends to the general chat in the current fixed window (window = at // period)
    rate_window: int = 0
    rate_count: int = 0
    reporters: set[UserKey] = dataclasses.field(default_factory=set)  # since the last ban
    banned_until: int = 0
    scheduled: dict[ScheduledId, None] = dataclasses.field(default_factory=dict)  # pending
    # limits against abuse (server/domain/limits.py), all folded from events
    flood_tat: float = 0.0  # sends and comments: the token bucket's arrival time
    invite_tat: float = 0.0  # invites: the same
    posted: int = 0  # messages ever posted: a reporter needs one
    live_bytes: int = 0  # text of the live messages and comments
    groups_owned: int = 0
    stored_bytes: int = 0  # files uploaded and not dropped
    last_seen: int | None = None  # when the last device went away (durable, UserSeen)


class Message(msgspec.Struct, gc=False, eq=False):
    """A live message. A struct msgspec makes in C, not tracked by the cyclic GC (it
    is in no cycle): a replay makes a million of them (bench/replay.py)."""

    id: MessageId
    chat: ChatId
    seq: int
    author: UserName
    text: str
    ts: int
    expires_at: int | None
    file: FileId | None = None
    edited_at: int | None = None
    mentions: tuple[UserName, ...] = ()  # decided when posted or edited
    order: int = 0  # its place among all messages, oldest first (the search index's)
    # A list from the first comment on: most messages never get one, and an empty
    # list each would cost a million allocations in a replay of a million messages.
    comments: list[Comment] | tuple[()] = ()


@dataclasses.dataclass(slots=True, eq=False)
class Comment:
    id: CommentId
    message: MessageId
    chat: ChatId
    author: UserName
    text: str
    ts: int
    position: int  # index in its message's comments


@dataclasses.dataclass(slots=True, eq=False)
class Scheduled:
    id: ScheduledId
    chat: ChatId
    author: UserName
    text: str
    file: FileId | None
    send_at: int
    device: DeviceId | None = None  # with client_id: what a repeated send finds
    client_id: str | None = None


@dataclasses.dataclass(slots=True, eq=False)
class StoredFile:
    id: FileId
    name: str
    size: int
    content_type: str
    sha256: str
    uploader: UserName
    uploaded_at: int
    # chats it was posted in, with how many live messages carry it there
    chats: dict[ChatId, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True, eq=False)
class Chat:
    id: ChatId
    kind: str  # "general" | "direct" | "group"
    title: str | None
    owner: UserName | None
    # member -> read marker (the seq of the last message that member has read)
    read_markers: dict[UserKey, int] = dataclasses.field(default_factory=dict)
    # messages[i] has seq first_seq + i, or is None once expired: expiry trims the
    # front, and leaves a hole only where an older message outlives a newer one
    # (the ttl was changed between runs)
    messages: list[Message | None] = dataclasses.field(default_factory=list)
    first_seq: int = 1
    holes: int = 0
    link_hash: str | None = None  # groups: the one join link that works
    requests: dict[UserKey, int] = dataclasses.field(default_factory=dict)  # pending joins

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.messages) - 1

    def message_at(self, seq: int) -> Message | None:
        index = seq - self.first_seq
        if 0 <= index < len(self.messages):
            return self.messages[index]
        return None

    def live_after(self, seq: int) -> int:
        """How many live messages come after ``seq``."""
        start = max(0, seq + 1 - self.first_seq)
        count = len(self.messages) - start
        if self.holes:
            count -= self.messages[start:].count(None)
        return max(0, count)
