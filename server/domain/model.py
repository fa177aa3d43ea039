"""Identifiers and the mutable objects the state is made of."""

from __future__ import annotations

import dataclasses
from typing import NewType

UserName = NewType("UserName", str)  # as registered; compare with ``user_key``
UserKey = NewType("UserKey", str)  # case-folded name: unique per user
ChatId = NewType("ChatId", str)
DeviceId = NewType("DeviceId", str)
MessageId = NewType("MessageId", str)

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


@dataclasses.dataclass(slots=True, eq=False)
class Message:
    id: MessageId
    chat: ChatId
    seq: int
    author: UserName
    text: str
    ts: int
    expires_at: int | None
    comments: int = 0


@dataclasses.dataclass(slots=True, eq=False)
class Chat:
    id: ChatId
    kind: str  # "general" | "direct" | "group"
    title: str | None
    owner: UserName | None
    # member -> read marker (the seq of the last message that member has read)
    read_markers: dict[UserKey, int] = dataclasses.field(default_factory=dict)
    # messages[i].seq == first_seq + i: expiry pops from the front, seq stays contiguous
    messages: list[Message] = dataclasses.field(default_factory=list)
    first_seq: int = 1

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.messages) - 1

    def message_at(self, seq: int) -> Message | None:
        index = seq - self.first_seq
        if 0 <= index < len(self.messages):
            return self.messages[index]
        return None
