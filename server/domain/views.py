"""The state as the wire shows it (protocol-contract.md, "Values" and "Events"),
and who hears of each event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from server.domain.events import (
    CommentAdded,
    Event,
    GroupCreated,
    JoinDeclined,
    JoinRequested,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    MessageScheduled,
    ReadMarkerMoved,
    ScheduledCancelled,
    UserBanned,
    UserReported,
)
from server.domain.model import (
    Chat,
    Comment,
    FileId,
    Message,
    Scheduled,
    StoredFile,
    UserKey,
    UserName,
    user_key,
)
from server.domain.state import State


class _Everyone:
    """The audience of the general chat: every user, present and future."""

    def __repr__(self) -> str:
        return "EVERYONE"


EVERYONE: Final = _Everyone()
Audience = _Everyone | frozenset[UserKey]


def file_view(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "name": stored.name,
        "size": stored.size,
        "content_type": stored.content_type,
        "sha256": stored.sha256,
    }


def _file(state: State, file_id: FileId | None) -> dict[str, Any] | None:
    stored = None if file_id is None else state.files.get(file_id)
    return None if stored is None else file_view(stored)


def message_view(state: State, message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "chat": message.chat,
        "seq": message.seq,
        "author": message.author,
        "text": message.text,
        "ts": message.ts,
        "expires_at": message.expires_at,
        "file": _file(state, message.file),
        "comments": len(message.comments),
        "edited_at": message.edited_at,
        "mentions": list(message.mentions),
    }


def comment_view(comment: Comment) -> dict[str, Any]:
    return {
        "id": comment.id,
        "message": comment.message,
        "chat": comment.chat,
        "author": comment.author,
        "text": comment.text,
        "ts": comment.ts,
    }


def scheduled_view(state: State, pending: Scheduled) -> dict[str, Any]:
    return {
        "id": pending.id,
        "chat": pending.chat,
        "text": pending.text,
        "file": _file(state, pending.file),
        "send_at": pending.send_at,
    }


def chat_view(
    state: State, chat: Chat, viewer: UserKey, lapsed: Sequence[Message] = ()
) -> dict[str, Any]:
    """The chat as ``viewer`` sees it; ``lapsed``: its messages whose lifetime is over
    but not reclaimed yet (``State.lapsed``), which count as gone."""
    read_seq = chat.read_markers[viewer]
    last_seq = chat.last_seq
    title = chat.title
    if chat.kind == "direct":
        peer = next((key for key in chat.read_markers if key != viewer), viewer)
        title = state.users[peer].name
    # Expired messages are not unread.
    unread = chat.live_after(read_seq) - sum(message.seq > read_seq for message in lapsed)
    gone = {message.seq for message in lapsed}
    mentions = state.mentions.unread(
        chat.id,
        viewer,
        read_seq,
        chat.first_seq,
        lambda seq: seq not in gone and chat.message_at(seq) is not None,
    )
    return {
        "id": chat.id,
        "kind": chat.kind,
        "title": title,
        "owner": chat.owner,
        "unread": unread,
        "read_seq": read_seq,
        "last_seq": last_seq,
        "mentions": mentions,
    }


def _members(chat: Chat) -> Audience:
    return EVERYONE if chat.kind == "general" else frozenset(chat.read_markers)


def _only(name: UserName) -> frozenset[UserKey]:
    return frozenset((user_key(name),))


Told = tuple[Audience, str, dict[str, Any]]


_ABOUT_A_MESSAGE: Final = (MessagePosted, CommentAdded, MessageEdited)


def told_until(state: State, event: Event) -> int | None:
    """Until when telling ``event`` makes sense: a message's and its comments' events
    die with the message (a resumed device is not sent them after that)."""
    if isinstance(event, _ABOUT_A_MESSAGE):
        message = state.messages.get(event.message)
        return None if message is None else message.expires_at
    return None


def told_about(event: Event) -> str | None:
    """The message an event shows: once it is deleted, a resumed device is not sent
    that event any more (its text is gone for good)."""
    if isinstance(event, _ABOUT_A_MESSAGE):
        return event.message
    return None


def notifications(state: State, event: Event) -> list[Told]:
    """Everyone who hears of ``event``: what ``notification`` tells, and what the
    acting user's other devices and the group's other members are told besides.

    The audiences never overlap, so nobody gets two frames of one cursor.
    """
    told = notification(state, event)
    also = also_told(state, event)
    return ([] if told is None else [told]) + ([] if also is None else [also])


def also_told(state: State, event: Event) -> Told | None:
    """News of a group action for the others concerned (protocol.md, section 7):
    members hear who joined and left, the owner hears of a decline, a reporter of a
    report, on every device."""
    match event:
        case MemberJoined() | MemberLeft():
            chat = state.chats[event.chat]
            others = frozenset(chat.read_markers) - {user_key(event.user)}
            if not others:
                return None
            joined = isinstance(event, MemberJoined)
            method = "chat.member_joined" if joined else "chat.member_left"
            return others, method, {"chat": event.chat, "user": event.user}
        case JoinDeclined():
            owner = state.chats[event.chat].owner
            assert owner is not None
            return _only(owner), "chat.request_declined", {"chat": event.chat, "user": event.user}
        case UserReported():
            return _only(event.reporter), "reported", {"user": event.user}
    return None


def notification(state: State, event: Event) -> Told | None:
    """Who hears of ``event`` and what they are told, or None for a silent event.

    Called right after ``event`` is applied, so the state is the state it made.
    """
    match event:
        case MessagePosted():
            message = state.messages.get(event.message)
            if message is None:  # already expired (a replay long after): nothing to tell
                return None
            chat = state.chats[event.chat]
            return _members(chat), "message", {"message": message_view(state, message)}
        case MessageEdited():
            message = state.messages.get(event.message)
            if message is None:
                return None
            chat = state.chats[event.chat]
            return _members(chat), "message.edited", {"message": message_view(state, message)}
        case MessageDeleted():
            deleted = {"chat": event.chat, "seq": event.seq, "id": event.message}
            return _members(state.chats[event.chat]), "message.deleted", deleted
        case ReadMarkerMoved():
            return _only(event.user), "read", {"chat": event.chat, "read_seq": event.seq}
        case CommentAdded():
            comment = state.comments.get(event.comment)
            if comment is None:
                return None
            chat = state.chats[event.chat]
            params: dict[str, Any] = {"comment": comment_view(comment)}
            parent = state.messages.get(comment.message)
            if parent is not None:  # whose message: a client may not have seen it
                params["message_author"] = parent.author
            return _members(chat), "comment", params
        case MessageScheduled():
            pending = state.scheduled.get(event.scheduled)
            if pending is None:
                return None
            view = scheduled_view(state, pending)
            return _only(event.author), "scheduled", {"scheduled": view}
        case ScheduledCancelled():
            return _only(event.author), "scheduled.cancelled", {"id": event.scheduled}
        case UserBanned():
            return _only(event.user), "banned", {"until": event.until}
        case GroupCreated() | MemberJoined():
            user = event.owner if isinstance(event, GroupCreated) else event.user
            key = user_key(user)
            chat = state.chats[event.chat]
            if key not in chat.read_markers:  # left again since (a replay)
                return None
            return frozenset((key,)), "chat.joined", {"chat": chat_view(state, chat, key)}
        case JoinRequested():
            owner = state.chats[event.chat].owner
            assert owner is not None
            request = {"chat": event.chat, "user": event.user}
            return _only(owner), "chat.join_request", request
        case JoinDeclined():
            declined = {"chat": event.chat, "title": state.chats[event.chat].title}
            return _only(event.user), "chat.declined", declined
        case MemberLeft():
            return _only(event.user), "chat.left", {"chat": event.chat}
    return None
