"""The state as the wire shows it (protocol-contract.md, "Values" and "Events"),
and who hears of each event."""

from __future__ import annotations

from typing import Any, Final

from server.domain.events import Event, MessagePosted, ReadMarkerMoved
from server.domain.model import Chat, Message, UserKey, user_key
from server.domain.state import State


class _Everyone:
    """The audience of the general chat: every user, present and future."""

    def __repr__(self) -> str:
        return "EVERYONE"


EVERYONE: Final = _Everyone()
Audience = _Everyone | frozenset[UserKey]


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "chat": message.chat,
        "seq": message.seq,
        "author": message.author,
        "text": message.text,
        "ts": message.ts,
        "expires_at": message.expires_at,
        "file": None,
        "comments": message.comments,
    }


def chat_view(state: State, chat: Chat, viewer: UserKey) -> dict[str, Any]:
    read_seq = chat.read_markers[viewer]
    last_seq = chat.last_seq
    title = chat.title
    if chat.kind == "direct":
        peer = next((key for key in chat.read_markers if key != viewer), viewer)
        title = state.users[peer].name
    # Expired messages are not unread: count only the live ones after the marker.
    unread = last_seq - max(read_seq, chat.first_seq - 1)
    return {
        "id": chat.id,
        "kind": chat.kind,
        "title": title,
        "owner": chat.owner,
        "unread": max(0, unread),
        "read_seq": read_seq,
        "last_seq": last_seq,
    }


def notification(state: State, event: Event) -> tuple[Audience, str, dict[str, Any]] | None:
    """Who hears of ``event`` and what they are told, or None for a silent event.

    Called right after ``event`` is applied, so the state is the state it made.
    """
    if isinstance(event, MessagePosted):
        chat = state.chats[event.chat]
        message = chat.message_at(event.seq)
        if message is None:  # already expired (a replay long after): nothing to tell
            return None
        audience: Audience = EVERYONE if chat.kind == "general" else frozenset(chat.read_markers)
        return audience, "message", {"message": message_view(message)}
    if isinstance(event, ReadMarkerMoved):
        return (
            frozenset((user_key(event.user),)),
            "read",
            {"chat": event.chat, "read_seq": event.seq},
        )
    return None
