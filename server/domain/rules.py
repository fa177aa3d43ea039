"""The rules: given the state, a command and ``now``, which events happen.

Each function checks everything first and raises a ``MessengerError`` before it
returns any event, so a refused command changes nothing. Identifiers and hashes
that need randomness or a KDF are made by the caller and passed in.
"""

from __future__ import annotations

from server.domain.events import (
    DeviceAuthorized,
    DeviceRevoked,
    DirectChatOpened,
    Event,
    MessagePosted,
    ReadMarkerMoved,
    UserRegistered,
)
from server.domain.model import (
    Chat,
    ChatId,
    Device,
    DeviceId,
    MessageId,
    User,
    UserName,
    user_key,
)
from server.domain.state import State
from server.errors import Conflict, Forbidden, InvalidParams, NotFound


def register(state: State, name: str, password_hash: str, now: int) -> UserRegistered:
    existing = state.user(name)
    if existing is not None:
        raise Conflict(f"User name {name!r} is taken (by {existing.name!r})")
    return UserRegistered(UserName(name), password_hash, now)


def authorize_device(
    user: User, device: DeviceId, device_name: str, token_hash: str, now: int
) -> DeviceAuthorized:
    return DeviceAuthorized(user.name, device, device_name, token_hash, now)


def revoke_device(device: Device, now: int) -> DeviceRevoked:
    return DeviceRevoked(device.user, device.id, now)


def find_chat(state: State, user: User, chat_id: str) -> Chat:
    """The chat, if ``user`` is a member; a non-member cannot tell it from no chat."""
    chat = state.chats.get(ChatId(chat_id))
    if chat is None or user_key(user.name) not in chat.read_markers:
        raise NotFound(f"No chat {chat_id!r} among yours")
    return chat


def direct_chat(
    state: State, user: User, peer_name: str, new_chat_id: ChatId, now: int
) -> tuple[Chat | None, list[Event]]:
    """The 1-to-1 chat with ``peer_name``: an existing one, or the event opening it."""
    peer = state.user(peer_name)
    if peer is None:
        raise NotFound(f"No user {peer_name!r}")
    if peer is user:
        raise InvalidParams("Expected another user for a direct chat, but got yourself")
    chat = state.direct_chat_between(user.name, peer.name)
    if chat is not None:
        return chat, []
    return None, [DirectChatOpened(new_chat_id, user.name, peer.name, now)]


def post_message(
    state: State,
    author: User,
    chat: Chat | None,
    chat_id: ChatId,
    *,
    text: str,
    now: int,
    message_id: MessageId,
    ttl_ms: int,
    device: Device | None = None,
    client_id: str | None = None,
) -> MessagePosted:
    """A new message at the end of its chat. ``chat`` is None when an event of the
    same command opens it (a first direct message)."""
    if chat is not None and user_key(author.name) not in chat.read_markers:
        raise Forbidden(f"You are not a member of chat {chat.id!r}")
    seq = 1 if chat is None else chat.last_seq + 1
    return MessagePosted(
        message_id,
        chat_id,
        seq,
        author.name,
        text,
        now,
        now + ttl_ms if ttl_ms else None,
        None if device is None else device.id,
        client_id,
    )


def move_read_marker(state: State, user: User, chat: Chat, seq: int, now: int) -> Event | None:
    """The read marker only moves forward, and never past the last message."""
    if seq > chat.last_seq:
        raise InvalidParams(f"Expected a seq of at most {chat.last_seq}, but got {seq}")
    if seq <= chat.read_markers[user_key(user.name)]:
        return None
    return ReadMarkerMoved(user.name, chat.id, seq, now)
