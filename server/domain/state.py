"""The state: a fold over the events, plus the indexes that keep every read O(result).

``State.apply`` is the only place that changes state; it never fails for an event
that ``rules`` produced, and replaying the log calls exactly the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

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
    GENERAL,
    Chat,
    ChatId,
    Device,
    DeviceId,
    Message,
    MessageId,
    User,
    UserKey,
    UserName,
    user_key,
)

# How many client_ids per device are remembered for idempotent `send`.
CLIENT_IDS_PER_DEVICE: Final = 1000


class State:
    def __init__(self, history_size: int = 20) -> None:
        self.history_size = history_size
        self.cursor = 0  # cursor of the last applied event
        self.users: dict[UserKey, User] = {}
        self.devices_by_token: dict[str, Device] = {}
        self.chats: dict[ChatId, Chat] = {GENERAL: Chat(GENERAL, "general", "general", None)}
        self.direct_chats: dict[tuple[UserKey, UserKey], ChatId] = {}
        self.messages: dict[MessageId, Message] = {}
        self.client_ids: dict[DeviceId, dict[str, MessageId]] = {}
        self._apply: dict[type[Any], Callable[[Any], None]] = {
            UserRegistered: self._user_registered,
            DeviceAuthorized: self._device_authorized,
            DeviceRevoked: self._device_revoked,
            DirectChatOpened: self._direct_chat_opened,
            MessagePosted: self._message_posted,
            ReadMarkerMoved: self._read_marker_moved,
        }

    def apply(self, event: Event) -> int:
        """Fold one event into the state; returns the event's cursor."""
        self._apply[type(event)](event)
        self.cursor += 1
        return self.cursor

    # -- queries -----------------------------------------------------------------

    def user(self, name: str) -> User | None:
        return self.users.get(user_key(name))

    @property
    def general(self) -> Chat:
        return self.chats[GENERAL]

    def direct_chat_between(self, a: UserName, b: UserName) -> Chat | None:
        chat_id = self.direct_chats.get(_pair(a, b))
        return None if chat_id is None else self.chats[chat_id]

    def expire(self, chat: Chat, now: int) -> None:
        """Drop the chat's messages whose lifetime is over (oldest first).

        Lifetimes end in posting order (one ttl for all messages of a run), so the
        expired messages are a prefix; a read calls this before it looks.
        """
        messages = chat.messages
        dropped = 0
        for message in messages:
            if message.expires_at is None or message.expires_at > now:
                break
            del self.messages[message.id]
            dropped += 1
        if dropped:
            del messages[:dropped]
            chat.first_seq += dropped

    # -- the fold ----------------------------------------------------------------

    def _user_registered(self, event: UserRegistered) -> None:
        key = user_key(event.user)
        self.users[key] = User(event.user, event.password_hash, event.at)
        general = self.general
        # A newcomer's unread starts with the last `history_size` messages.
        general.read_markers[key] = max(0, general.last_seq - self.history_size)
        self.users[key].chats[GENERAL] = None

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
        for name in (event.user_a, event.user_b):
            key = user_key(name)
            chat.read_markers[key] = 0
            self.users[key].chats[event.chat] = None
        self.chats[event.chat] = chat
        self.direct_chats[_pair(event.user_a, event.user_b)] = event.chat

    def _message_posted(self, event: MessagePosted) -> None:
        chat = self.chats[event.chat]
        message = Message(
            event.message,
            event.chat,
            event.seq,
            event.author,
            event.text,
            event.at,
            event.expires_at,
        )
        chat.messages.append(message)
        self.messages[message.id] = message
        if event.client_id is not None and event.device is not None:
            seen = self.client_ids.setdefault(event.device, {})
            seen[event.client_id] = message.id
            if len(seen) > CLIENT_IDS_PER_DEVICE:
                del seen[next(iter(seen))]

    def _read_marker_moved(self, event: ReadMarkerMoved) -> None:
        self.chats[event.chat].read_markers[user_key(event.user)] = event.seq


def _pair(a: str, b: str) -> tuple[UserKey, UserKey]:
    x, y = user_key(a), user_key(b)
    return (x, y) if x <= y else (y, x)
