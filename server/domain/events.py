"""Domain events: frozen, past-tense facts. The log stores exactly these.

``to_record`` / ``from_record`` are the mapper between events and stored records;
a field added to an event must keep a default so that older logs still replay.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from server.domain.model import ChatId, DeviceId, MessageId, UserName


@dataclasses.dataclass(frozen=True, slots=True)
class UserRegistered:
    user: UserName
    password_hash: str
    at: int


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceAuthorized:
    """A password login created a device; only the token's hash is kept."""

    user: UserName
    device: DeviceId
    name: str
    token_hash: str
    at: int


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceRevoked:
    user: UserName
    device: DeviceId
    at: int


@dataclasses.dataclass(frozen=True, slots=True)
class DirectChatOpened:
    chat: ChatId
    user_a: UserName
    user_b: UserName
    at: int


@dataclasses.dataclass(frozen=True, slots=True)
class MessagePosted:
    message: MessageId
    chat: ChatId
    seq: int
    author: UserName
    text: str
    at: int
    expires_at: int | None = None
    device: DeviceId | None = None
    client_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReadMarkerMoved:
    user: UserName
    chat: ChatId
    seq: int
    at: int


Event = (
    UserRegistered
    | DeviceAuthorized
    | DeviceRevoked
    | DirectChatOpened
    | MessagePosted
    | ReadMarkerMoved
)

EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.__name__: cls
    for cls in (
        UserRegistered,
        DeviceAuthorized,
        DeviceRevoked,
        DirectChatOpened,
        MessagePosted,
        ReadMarkerMoved,
    )
}
_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}


class UnknownEventType(ValueError):
    pass


def to_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {"type": type(event).__name__}
    for name in _FIELDS[type(event)]:
        value = getattr(event, name)
        if value is not None:  # absent means the default: keeps records small
            record[name] = value
    return record


def from_record(record: dict[str, Any]) -> Event:
    kind = record.pop("type")
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise UnknownEventType(f"Expected one of {sorted(EVENT_TYPES)}, but got {kind!r}")
    return cls(**record)
