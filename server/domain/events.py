"""Domain events: frozen, past-tense facts. The log stores exactly these.

``to_record`` / ``from_record`` are the mapper between events and stored records;
a field added to an event must keep a default so that older logs still replay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final, TypeVar, dataclass_transform

from server.domain.model import (
    ChatId,
    CommentId,
    DeviceId,
    FileId,
    MessageId,
    ScheduledId,
    UserName,
)

_E = TypeVar("_E")


@dataclass_transform(frozen_default=True)
def event(cls: type[_E]) -> type[_E]:
    """A frozen dataclass for the type checker (mypy --strict refuses any assignment to
    an event's field), a plain slotted one at run time: a frozen dataclass's __init__
    goes through object.__setattr__ field by field, 1.9 us against 0.45 us for a
    message, which was a seventh of a 1M-event replay (bench/replay.py)."""
    return dataclasses.dataclass(slots=True)(cls)


@event
class UserRegistered:
    user: UserName
    password_hash: str
    at: int
    # Where the newcomer's general-chat read marker starts (the last `history_size`
    # messages live then are unread); decided by the rule, so that a replay, which
    # expires nothing on the way, gives the same marker. None in logs written before.
    general_read_seq: int | None = None


@event
class DeviceAuthorized:
    """A password login created a device; only the token's hash is kept."""

    user: UserName
    device: DeviceId
    name: str
    token_hash: str
    at: int


@event
class DeviceRevoked:
    user: UserName
    device: DeviceId
    at: int


@event
class DirectChatOpened:
    chat: ChatId
    user_a: UserName
    user_b: UserName
    at: int


@event
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
    file: FileId | None = None
    scheduled: ScheduledId | None = None  # the scheduled message this posting fulfils
    mentions: list[str] | None = None  # names mentioned, decided by the rule
    edited_at: int | None = None  # a snapshot's edited message


@event
class MessageEdited:
    message: MessageId
    chat: ChatId
    author: UserName
    text: str
    at: int
    mentions: list[str] | None = None
    device: DeviceId | None = None
    client_id: str | None = None


@event
class MessageDeleted:
    """The message and its comments are gone; its seq stays a hole."""

    message: MessageId
    chat: ChatId
    seq: int
    by: UserName
    at: int


@event
class UserSeen:
    """The user's last device went away (presence's ``last_seen``, kept durable)."""

    user: UserName
    at: int


@event
class ReadMarkerMoved:
    user: UserName
    chat: ChatId
    seq: int
    at: int


@event
class CommentAdded:
    comment: CommentId
    message: MessageId
    chat: ChatId
    author: UserName
    text: str
    at: int


@event
class MessageScheduled:
    scheduled: ScheduledId
    chat: ChatId
    author: UserName
    text: str
    send_at: int
    at: int
    file: FileId | None = None
    device: DeviceId | None = None
    client_id: str | None = None


@event
class ScheduledCancelled:
    scheduled: ScheduledId
    author: UserName
    at: int


@event
class UserReported:
    reporter: UserName
    user: UserName
    at: int
    reason: str | None = None


@event
class UserBanned:
    user: UserName
    until: int
    at: int


@event
class FileDropped:
    """No message carries the file any more: it is forgotten (and its bytes deleted)."""

    file: FileId
    at: int


@event
class FileUploaded:
    file: FileId
    name: str
    size: int
    content_type: str
    sha256: str
    uploader: UserName
    at: int


@event
class GroupCreated:
    chat: ChatId
    owner: UserName
    title: str
    at: int


@event
class MemberJoined:
    chat: ChatId
    user: UserName
    at: int
    invited_by: UserName | None = None  # the owner, for an invitation (not an approval)


@event
class MemberLeft:
    chat: ChatId
    user: UserName
    at: int


@event
class JoinLinkCreated:
    """Only the link's hash is kept; the new link replaces (revokes) the old one."""

    chat: ChatId
    link_hash: str
    at: int


@event
class JoinRequested:
    chat: ChatId
    user: UserName
    at: int


@event
class JoinDeclined:
    chat: ChatId
    user: UserName
    at: int


# -- snapshot events: written only by compaction, first in a compacted log -------


@event
class ChatRestored:
    """A chat's settings and markers as they were; its live messages follow."""

    chat: ChatId
    kind: str
    first_seq: int
    read_markers: dict[str, int]
    title: str | None = None
    owner: UserName | None = None
    link_hash: str | None = None
    requests: dict[str, int] | None = None  # user -> when the join was requested
    last_seq: int | None = None  # with first_seq: the slots, expired ones included


@event
class StandingRestored:
    """A user's rate window, reports and ban as they were."""

    user: UserName
    rate_window: int = 0
    rate_count: int = 0
    reporters: list[str] | None = None
    banned_until: int = 0
    chats: list[str] | None = None  # the user's chats, in the order they were joined
    flood_tat: float = 0.0  # the token buckets (server/domain/limits.py)
    invite_tat: float = 0.0
    posted: int | None = None  # messages ever posted; None in older snapshots


@event
class ClientIdsRestored:
    """A device's remembered client_ids, so a retry after compaction stays harmless."""

    device: DeviceId
    client_ids: dict[str, str]  # client_id -> message id


@event
class SnapshotTaken:
    """Ends a snapshot: the state now is the state after the event at ``cursor``."""

    cursor: int


Event = (
    UserRegistered
    | DeviceAuthorized
    | DeviceRevoked
    | DirectChatOpened
    | MessagePosted
    | MessageEdited
    | MessageDeleted
    | UserSeen
    | ReadMarkerMoved
    | CommentAdded
    | MessageScheduled
    | ScheduledCancelled
    | UserReported
    | UserBanned
    | FileUploaded
    | FileDropped
    | GroupCreated
    | MemberJoined
    | MemberLeft
    | JoinLinkCreated
    | JoinRequested
    | JoinDeclined
    | ChatRestored
    | StandingRestored
    | ClientIdsRestored
    | SnapshotTaken
)

EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.__name__: cls
    for cls in (
        UserRegistered,
        DeviceAuthorized,
        DeviceRevoked,
        DirectChatOpened,
        MessagePosted,
        MessageEdited,
        MessageDeleted,
        UserSeen,
        ReadMarkerMoved,
        CommentAdded,
        MessageScheduled,
        ScheduledCancelled,
        UserReported,
        UserBanned,
        FileUploaded,
        FileDropped,
        GroupCreated,
        MemberJoined,
        MemberLeft,
        JoinLinkCreated,
        JoinRequested,
        JoinDeclined,
        ChatRestored,
        StandingRestored,
        ClientIdsRestored,
        SnapshotTaken,
    )
}
_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}


class UnknownEventType(ValueError):
    pass


class MissingField(KeyError):
    """A record without one of its event's required fields (a KeyError, as a lookup's)."""

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return str(self.args[0])


def to_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {"type": type(event).__name__}
    for name in _FIELDS[type(event)]:
        value = getattr(event, name)
        if value is not None:  # absent means the default: keeps records small
            record[name] = value
    return record


def from_record(record: dict[str, Any]) -> Event:
    """The event ``record`` holds; the record is left as it is, its cursor ``"c"``
    (if any) ignored. A missing field raises MissingField (a KeyError), an unknown one
    TypeError."""
    kind = record["type"]
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise UnknownEventType(f"Expected one of {sorted(EVENT_TYPES)}, but got {kind!r}")
    if not record.keys() <= _KEYS[cls]:
        unknown = sorted(record.keys() - _KEYS[cls])
        raise TypeError(f"Expected the fields of {kind}, but got {unknown} too")
    try:
        return _MAKERS[cls](record)
    except KeyError as missing:
        raise MissingField(f"Expected the field {missing} of {kind}, but it is missing") from None


def _maker(cls: type[Event]) -> Callable[[dict[str, Any]], Event]:
    """``cls`` from a record, each field by name: what ``cls(**fields)`` does without
    popping ``type`` and ``c`` and copying the rest into keyword arguments, a third of
    the mapper's time in a replay (bench/replay.py). Generated as dataclasses
    generates ``__init__``: the fields are only known at run time."""
    arguments = []
    for field in dataclasses.fields(cls):
        if field.default is dataclasses.MISSING:
            arguments.append(f"record[{field.name!r}]")
        else:
            arguments.append(f"get({field.name!r}, {field.default!r})")
    source = f"def make(record):\n    get = record.get\n    return cls({', '.join(arguments)})\n"
    namespace: dict[str, Any] = {"cls": cls}
    exec(source, namespace)  # made of the field names and their literal defaults only
    make: Callable[[dict[str, Any]], Event] = namespace["make"]
    return make


_MAKERS: Final[dict[type[Event], Callable[[dict[str, Any]], Event]]] = {
    cls: _maker(cls) for cls in EVENT_TYPES.values()
}
_KEYS: Final[dict[type[Event], frozenset[str]]] = {
    cls: frozenset((*fields, "type", "c")) for cls, fields in _FIELDS.items()
}
