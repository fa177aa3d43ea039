"""The commands: one typed, immutable shape per deciding method, what its decision
needs and nothing else (zulip's one shape per request).

A command is data: the acting user and device (from the session), then the
validated params. A cluster's follower sends it to the writer as a record
(``to_record``/``from_record``), and the writer may decide it again after a fence.
``Ids`` is where a decision gets fresh identifiers, so that a test can fix them.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any, Final, Protocol

from server.domain.events import Event
from server.domain.model import ChatId, CommentId, DeviceId, MessageId, ScheduledId, UserName
from server.domain.state import State


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """Who asks: every command is some user's, from one of their devices."""

    user: UserName
    device: DeviceId


@dataclasses.dataclass(frozen=True, slots=True)
class Send(Command):
    text: str
    chat: str | None = None
    to: str | None = None  # a user: the 1-to-1 chat with them (``send {user}``)
    file: str | None = None
    send_at: int | None = None
    client_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MoveReadMarker(Command):
    chat: str
    seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class Edit(Command):
    message: str
    text: str
    client_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Delete(Command):
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class AddComment(Command):
    message: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class CancelScheduled(Command):
    scheduled: str


@dataclasses.dataclass(frozen=True, slots=True)
class Report(Command):
    target: str
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CreateGroup(Command):
    title: str


@dataclasses.dataclass(frozen=True, slots=True)
class Invite(Command):
    chat: str
    invitee: str


@dataclasses.dataclass(frozen=True, slots=True)
class CreateLink(Command):
    chat: str


@dataclasses.dataclass(frozen=True, slots=True)
class Join(Command):
    link: str


@dataclasses.dataclass(frozen=True, slots=True)
class DecideRequest(Command):
    chat: str
    requester: str
    approve: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Leave(Command):
    chat: str


COMMANDS: Final[dict[str, type[Command]]] = {
    kind.__name__: kind
    for kind in (
        Send,
        MoveReadMarker,
        Edit,
        Delete,
        AddComment,
        CancelScheduled,
        Report,
        CreateGroup,
        Invite,
        CreateLink,
        Join,
        DecideRequest,
        Leave,
    )
}


def to_record(command: Command) -> dict[str, Any]:
    """The command as JSON-ready data (what a follower sends the writer)."""
    return {"type": type(command).__name__, **dataclasses.asdict(command)}


def from_record(record: dict[str, Any]) -> Command:
    """The command ``to_record`` made; ``KeyError``/``TypeError`` for anything else."""
    fields = dict(record)
    kind = COMMANDS[fields.pop("type")]
    return kind(**fields)


# -- what a decision gives back -------------------------------------------------

Reply = Callable[[State], dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The events a command makes happen, and its reply: a pure function of the state
    the executor evaluates right after applying the events (a view of a message
    shows what the events made)."""

    events: tuple[Event, ...]
    reply: Reply


def answer(result: dict[str, Any]) -> Reply:
    """A reply that does not depend on the state after the events."""
    return lambda state: result


# -- fresh identifiers ---------------------------------------------------------------


class Ids(Protocol):
    """Fresh identifiers for what a decision creates."""

    def message(self) -> MessageId: ...

    def chat(self) -> ChatId: ...

    def group(self) -> ChatId: ...

    def scheduled(self) -> ScheduledId: ...

    def comment(self) -> CommentId: ...

    def link(self) -> str: ...


class RandomIds:
    """``Ids`` from ``secrets``: 64 random bits an id, 128 for a join link (a secret)."""

    def message(self) -> MessageId:
        return MessageId(secrets.token_hex(8))

    def chat(self) -> ChatId:
        return ChatId(secrets.token_hex(8))

    def group(self) -> ChatId:
        return ChatId("g" + secrets.token_hex(8))

    def scheduled(self) -> ScheduledId:
        return ScheduledId(secrets.token_hex(8))

    def comment(self) -> CommentId:
        return CommentId(secrets.token_hex(8))

    def link(self) -> str:
        return secrets.token_urlsafe(16)


RANDOM_IDS: Final = RandomIds()
