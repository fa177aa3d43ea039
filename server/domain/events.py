"""Domain events: frozen, past-tense facts. The log stores exactly these.

``to_record`` / ``from_record`` are the mapper between events and stored records (a
dict: the event's fields, its class name under ``"type"``, its cursor under ``"c"``);
``decode_stored`` reads a stored record's JSON straight into its event, typed and
checked field by field, which is what a start spends most of its time on. A field added
to an event must keep a default so that older logs still replay.
"""

from __future__ import annotations

from typing import Any, Final, final

import msgspec
import orjson

from server.domain.model import (
    ChatId,
    CommentId,
    DeviceId,
    FileId,
    MessageId,
    ScheduledId,
    UserName,
)


class _Event(
    msgspec.Struct,
    frozen=True,  # mypy --strict and the run time refuse any assignment to a field
    gc=False,  # no cycles through an event: the cyclic GC never needs to scan one
    tag_field="type",
    tag=True,  # the class name
    forbid_unknown_fields=True,  # a field this version does not know: not this event
    omit_defaults=True,  # absent means the default: keeps records small
):
    """An event: a frozen, typed struct that msgspec decodes from JSON in C (0.35 us
    for a message against 2 us for orjson's dict and a Python constructor)."""


class UserRegistered(_Event, frozen=True):
    user: UserName
    password_hash: str
    at: int
    # Where the newcomer's general-chat read marker starts (the last `history_size`
    # messages live then are unread); decided by the rule, so that a replay, which
    # expires nothing on the way, gives the same marker. None in logs written before.
    general_read_seq: int | None = None


class DeviceAuthorized(_Event, frozen=True):
    """A password login created a device; only the token's hash is kept."""

    user: UserName
    device: DeviceId
    name: str
    token_hash: str
    at: int


class DeviceRevoked(_Event, frozen=True):
    user: UserName
    device: DeviceId
    at: int


class DirectChatOpened(_Event, frozen=True):
    chat: ChatId
    user_a: UserName
    user_b: UserName
    at: int


class MessagePosted(_Event, frozen=True):
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


class MessageEdited(_Event, frozen=True):
    message: MessageId
    chat: ChatId
    author: UserName
    text: str
    at: int
    mentions: list[str] | None = None
    device: DeviceId | None = None
    client_id: str | None = None


class MessageDeleted(_Event, frozen=True):
    """The message and its comments are gone; its seq stays a hole."""

    message: MessageId
    chat: ChatId
    seq: int
    by: UserName
    at: int


class UserSeen(_Event, frozen=True):
    """The user's last device went away (presence's ``last_seen``, kept durable)."""

    user: UserName
    at: int


class ReadMarkerMoved(_Event, frozen=True):
    user: UserName
    chat: ChatId
    seq: int
    at: int


class CommentAdded(_Event, frozen=True):
    comment: CommentId
    message: MessageId
    chat: ChatId
    author: UserName
    text: str
    at: int


class MessageScheduled(_Event, frozen=True):
    scheduled: ScheduledId
    chat: ChatId
    author: UserName
    text: str
    send_at: int
    at: int
    file: FileId | None = None
    device: DeviceId | None = None
    client_id: str | None = None


class ScheduledCancelled(_Event, frozen=True):
    scheduled: ScheduledId
    author: UserName
    at: int


class UserReported(_Event, frozen=True):
    reporter: UserName
    user: UserName
    at: int
    reason: str | None = None


class UserBanned(_Event, frozen=True):
    user: UserName
    until: int
    at: int


class FileDropped(_Event, frozen=True):
    """No message carries the file any more: it is forgotten (and its bytes deleted)."""

    file: FileId
    at: int


class FileUploaded(_Event, frozen=True):
    file: FileId
    name: str
    size: int
    content_type: str
    sha256: str
    uploader: UserName
    at: int


class GroupCreated(_Event, frozen=True):
    chat: ChatId
    owner: UserName
    title: str
    at: int


class MemberJoined(_Event, frozen=True):
    chat: ChatId
    user: UserName
    at: int
    invited_by: UserName | None = None  # the owner, for an invitation (not an approval)


class MemberLeft(_Event, frozen=True):
    chat: ChatId
    user: UserName
    at: int


class JoinLinkCreated(_Event, frozen=True):
    """Only the link's hash is kept; the new link replaces (revokes) the old one."""

    chat: ChatId
    link_hash: str
    at: int


class JoinRequested(_Event, frozen=True):
    chat: ChatId
    user: UserName
    at: int


class JoinDeclined(_Event, frozen=True):
    chat: ChatId
    user: UserName
    at: int


# -- snapshot events: written only by compaction, first in a compacted log -------


class ChatRestored(_Event, frozen=True):
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


class StandingRestored(_Event, frozen=True):
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


class ClientIdsRestored(_Event, frozen=True):
    """A device's remembered client_ids, so a retry after compaction stays harmless."""

    device: DeviceId
    client_ids: dict[str, str]  # client_id -> message id


class SnapshotTaken(_Event, frozen=True):
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
_REQUIRED: Final[dict[type[Event], frozenset[str]]] = {
    cls: frozenset(field.encode_name for field in msgspec.structs.fields(cls) if field.required)
    for cls in EVENT_TYPES.values()
}
_KEYS: Final[dict[type[Event], frozenset[str]]] = {
    cls: frozenset((*cls.__struct_fields__, "type", "c")) for cls in EVENT_TYPES.values()
}


class UnknownEventType(ValueError):
    pass


class MissingField(KeyError):
    """A record without one of its event's required fields (a KeyError, as a lookup's)."""

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return str(self.args[0])


def to_record(event: Event) -> dict[str, Any]:
    """The record of ``event``: its class name under ``"type"`` first, then each field
    that is not its default."""
    record: dict[str, Any] = msgspec.to_builtins(event)
    return record


def from_record(record: dict[str, Any]) -> Event:
    """The event ``record`` holds; the record is left as it is, its cursor ``"c"``
    (if any) ignored. A missing field raises MissingField (a KeyError), an unknown one
    TypeError, a value of the wrong type ``msgspec.ValidationError`` (a ValueError)."""
    kind = record["type"]
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise UnknownEventType(f"Expected one of {sorted(EVENT_TYPES)}, but got {kind!r}")
    keys = record.keys()
    if not keys <= _KEYS[cls]:
        unknown = sorted(keys - _KEYS[cls])
        raise TypeError(f"Expected the fields of {kind}, but got {unknown} too")
    if not _REQUIRED[cls] <= keys:
        missing = sorted(_REQUIRED[cls] - keys)[0]
        raise MissingField(f"Expected the field {missing!r} of {kind}, but it is missing")
    fields = record if "c" not in record else {k: v for k, v in record.items() if k != "c"}
    return msgspec.convert(fields, cls)


@final
class Unfit:
    """What ``decode_stored`` gives for a record that is well-formed JSON but not an
    event this code knows: the reader refuses it, naming where it is."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Unfit({self.error!r})"


Stored = tuple[int | None, Event | Unfit]
_DECODE_EVENT: Final = msgspec.json.Decoder(Event).decode


def decode_stored(body: bytes) -> Stored:
    """(cursor, event) of a stored record's JSON; the cursor is None where the record
    has none (an older log's snapshot at its head) or one that is no integer from 1 on,
    the event an ``Unfit`` where the record is not one (such a cursor included).
    Raises ValueError only when ``body`` is not a JSON object.

    Fast path: the store writes each record with its cursor last
    (``{...,"c":123}``, server/service.py), so the cursor is read off the end and the
    rest decoded straight into its event by msgspec, every field checked and unknown
    ones refused. (This split cannot be fooled by JSON: the ``"`` before ``c`` opens a
    string, since no string is ended by a ``"`` followed by ``c``, and an unescaped
    ``"`` is never inside one; that ``"c"`` followed by ``:`` is a key, and only digits
    and the last ``}`` follow it: the key of the outermost object, its last. A ``,``
    followed by ``"`` may well be inside a string, the end of a text like ``a,``.)
    Any other record takes the general path, orjson's dict and ``from_record``, which
    takes ``"c"`` wherever it is."""
    at = body.rfind(b',"c":', -32)
    digits = body[at + 5 : -1]
    # Digits alone, from 1 on: a sign, a fraction, a 0 take the general path (which
    # refuses a leading 0 as no JSON number, RFC 8259 section 6, and a cursor below 1).
    if at > 0 and digits.isdigit() and digits[:1] != b"0" and body.endswith(b"}"):
        last = int(digits)
        try:
            return last, _DECODE_EVENT(body[:at] + b"}")
        except msgspec.ValidationError as error:
            return last, Unfit(f"{_kind(body)}: {error}")
    record = orjson.loads(body)
    if type(record) is not dict:
        raise ValueError(f"Expected a JSON object, but got {type(record).__name__}")
    cursor = record.get("c")
    if cursor is not None and (type(cursor) is not int or cursor < 1):
        # No cursor to go by: not one the snapshot covers, nor one to skip as folded.
        return None, Unfit(f"Expected an integer cursor of 1 or more, but got {cursor!r}")
    try:
        return cursor, from_record(record)
    except (TypeError, ValueError, KeyError) as error:
        return cursor, Unfit(f"{_kind(body)}: {error}")


def decode_next(body: bytes, cursor: int) -> Event | None:
    """The event of ``body`` if it is the record of ``cursor`` just as the store writes
    it (``{...,"c":123}``, the cursor's digits plain) and an event this code knows;
    otherwise None, and ``decode_stored`` says what it is. A replay's hot path: the
    cursor it expects is compared, not parsed (``decode_stored``'s split, which this
    follows, was more than the decode itself, bench/replay.py)."""
    end = b',"c":%d}' % cursor
    if not body.endswith(end):
        return None
    try:
        return _DECODE_EVENT(body[: len(body) - len(end)] + b"}")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _kind(body: bytes) -> str:
    """What a refused record says it is (for the refusal's message)."""
    kind = orjson.loads(body).get("type")
    return f"a {kind}" if isinstance(kind, str) else "a record without a type"
