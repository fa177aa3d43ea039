"""What the client knows of its user's chats: a fold over status results and events.

Pure: no I/O and no clock. The app feeds it the wire's objects (protocol-contract.md,
"Values") and asks it what is new, what to call things and what to mark read.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final, NewType

from client.errors import UsageError
from wire import GENERAL_CHAT

ChatId = NewType("ChatId", str)
MessageId = NewType("MessageId", str)
FileId = NewType("FileId", str)
ScheduledId = NewType("ScheduledId", str)
Json = dict[str, Any]

GENERAL: Final = ChatId(GENERAL_CHAT)
GROUP_MARK: Final = "+"  # starts every group's label: no group passes for general or @bob
_SPACES: Final = re.compile(r"\s+")
_QUOTED_ID: Final = re.compile(r"'([A-Za-z0-9_\-]{1,64})'")
# What would let other people's text move the cursor, recolour or retitle the terminal,
# or reorder what is shown: C0/C1 controls and DEL, line and paragraph separators, and
# the bidirectional controls (U+061C, U+200E/F, U+202A-E, U+2066-9).
_UNSAFE: Final = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)


def clean(text: str) -> str:
    """Text from other people, safe to put on a terminal."""
    return _UNSAFE.sub("\N{REPLACEMENT CHARACTER}", text.expandtabs(4))


@dataclasses.dataclass(slots=True)
class Chat:
    """One of the user's chats as far as the client knows; counts follow events."""

    id: ChatId
    kind: str  # "general" | "direct" | "group"
    title: str | None
    read_seq: int = 0
    last_seq: int = 0
    unread: int = 0
    suffix: str = ""  # set by the model when another group has the same label
    mentions: int = 0  # of the unread: those that mention the user

    @classmethod
    def from_wire(cls, chat: Json) -> Chat:
        return cls(
            ChatId(chat["id"]),
            chat["kind"],
            chat.get("title"),
            chat.get("read_seq", 0),
            chat.get("last_seq", 0),
            chat.get("unread", 0),
            mentions=chat.get("mentions", 0),
        )

    @property
    def label(self) -> str:
        """How commands and output name the chat: ``general``, ``@bob``, ``+title``
        (a group's title, made one word, with ``~`` and the id's start when two groups
        share it); safe to print."""
        return self.base_label + self.suffix

    @property
    def base_label(self) -> str:
        if self.kind == "direct" and self.title:
            return clean(f"@{self.title}")
        if self.kind == "group":
            return GROUP_MARK + clean(_SPACES.sub("_", (self.title or "").strip()) or self.id)
        return clean(self.id)


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where plain text goes: a chat, or a user whose direct chat does not exist yet."""

    chat: ChatId | None = None
    user: str | None = None

    def params(self) -> Json:
        """The ``chat | user`` part of ``send`` and ``history`` params."""
        return {"chat": self.chat} if self.chat is not None else {"user": self.user}


class Model:
    def __init__(self, me: str) -> None:
        self.me = me
        # @me not inside a longer name: not @me2, not a@me.
        self._mention = re.compile(
            rf"(?<![A-Za-z0-9_.\-@])@{re.escape(me)}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])",
            re.IGNORECASE,
        )
        self.chats: dict[ChatId, Chat] = {}
        self.current = Target(chat=GENERAL)
        self.users: set[str] = set()  # names seen, for completion
        self._shown: set[str] = set()  # ids of the messages and comments shown
        self._mine: set[MessageId] = set()  # ids of the user's own messages seen
        self._by_seq: dict[tuple[ChatId, int], MessageId] = {}
        self._seq_of: dict[MessageId, int] = {}
        self._chat_of: dict[MessageId, ChatId] = {}
        self.files: dict[FileId, Json] = {}  # the files of messages seen, by id
        self._file_of: dict[MessageId, FileId] = {}
        # Pending scheduled messages seen (for completion; the server has the truth).
        self.scheduled: dict[ScheduledId, Json] = {}
        self._scheduled_shown: set[ScheduledId] = set()
        self._cancelled: set[ScheduledId] = set()  # cancellations already told
        self._joined: set[ChatId] = set()  # groups whose joining was already told
        # The last `presence` event of each contact, by case-folded name.
        self.presence: dict[str, Json] = {}

    # -- folding in what the server says ------------------------------------------

    def load_status(self, status: Json) -> None:
        """Replace the chat list with the one in a ``status`` result."""
        self.chats = {}
        for chat in status["chats"]:
            self.chat_seen(chat)

    def chat_seen(self, chat: Json) -> Chat:
        known = Chat.from_wire(chat)
        self.chats[known.id] = known
        self._relabel()
        if known.kind == "direct" and known.title:
            self.users.add(known.title)
            if self.current.user is not None and _same_user(self.current.user, known.title):
                self.current = Target(chat=known.id)
        return known

    def chat_joined(self, chat: Json) -> bool:
        """A group joined (or created); True the first time it is heard of since joining."""
        known = self.chat_seen(chat)
        if known.id in self._joined:
            return False
        self._joined.add(known.id)
        return True

    def chat_left(self, chat_id: str) -> bool:
        """Forget a chat left; True when it was known (the leaving is news)."""
        self._joined.discard(ChatId(chat_id))
        if self.current.chat == chat_id:
            self.current = Target(chat=GENERAL)
        known = self.chats.pop(ChatId(chat_id), None) is not None
        self._relabel()
        return known

    def _relabel(self) -> None:
        """Give each group whose label another group has too a suffix from its id."""
        count: dict[str, int] = {}
        for chat in self.chats.values():
            count[chat.base_label.casefold()] = count.get(chat.base_label.casefold(), 0) + 1
        for chat in self.chats.values():
            shared = chat.kind == "group" and count[chat.base_label.casefold()] > 1
            chat.suffix = f"~{clean(chat.id[:4])}" if shared else ""

    def message_seen(self, message: Json) -> bool:
        """Count ``message`` in; True when it has not been shown before."""
        message_id = MessageId(message["id"])
        chat_id = ChatId(message["chat"])
        seq: int = message["seq"]
        self._by_seq[(chat_id, seq)] = message_id
        self._seq_of[message_id] = seq
        self._chat_of[message_id] = chat_id
        if not _same_user(message["author"], self.me):
            self.users.add(message["author"])
        file: Json | None = message.get("file")
        if file:
            self.files[FileId(file["id"])] = file
            self._file_of[message_id] = FileId(file["id"])
        chat = self.chats.get(chat_id)
        if chat is not None and seq > chat.last_seq:
            if seq > chat.read_seq:
                chat.unread += 1
                chat.mentions += self.mentions_me(message)
            chat.last_seq = seq
        if self.is_mine(message):
            self._mine.add(message_id)
        if chat is not None and self.is_mine(message):
            # The server moves the author's marker: writing in a chat reads it.
            self.read_moved(chat_id, seq)
        if message_id in self._shown:
            return False
        self._shown.add(message_id)
        return True

    def message_edited(self, message: Json) -> None:
        """An edit: the message keeps its place; its text and mentions are new."""
        self.message_seen(message)

    def message_deleted(self, chat_id: str, seq: int, message_id: str) -> None:
        """A deletion: forgotten, and out of the unread count if it was counted (a
        device resuming is told of deletions of messages it was never sent)."""
        self._by_seq.pop((ChatId(chat_id), seq), None)
        known = self._seq_of.pop(MessageId(message_id), None) is not None
        self._chat_of.pop(MessageId(message_id), None)
        self._file_of.pop(MessageId(message_id), None)
        self._mine.discard(MessageId(message_id))
        chat = self.chats.get(ChatId(chat_id))
        if known and chat is not None and seq > chat.read_seq and chat.unread:
            chat.unread -= 1
            chat.mentions = min(chat.mentions, chat.unread)

    def comment_seen(self, comment: Json) -> bool:
        """True when ``comment`` has not been shown before."""
        if comment["id"] in self._shown:
            return False
        self._shown.add(comment["id"])
        return True

    def scheduled_seen(self, scheduled: Json) -> bool:
        """A pending scheduled message; True when it has not been shown before."""
        scheduled_id = ScheduledId(scheduled["id"])
        self.scheduled[scheduled_id] = scheduled
        if scheduled_id in self._scheduled_shown:
            return False
        self._scheduled_shown.add(scheduled_id)
        return True

    def scheduled_cancelled(self, scheduled_id: str) -> bool:
        """True the first time a cancellation is heard of (reply or event)."""
        self.scheduled.pop(ScheduledId(scheduled_id), None)
        if scheduled_id in self._cancelled:
            return False
        self._cancelled.add(ScheduledId(scheduled_id))
        return True

    def scheduled_listed(self, pending: list[Json]) -> None:
        """The server's list of pending scheduled messages replaces what was known."""
        self.scheduled = {ScheduledId(item["id"]): item for item in pending}

    def read_moved(self, chat_id: str, read_seq: int) -> bool:
        """Move the read marker forward; True when it moved (it only moves forward)."""
        chat = self.chats.get(ChatId(chat_id))
        if chat is None or read_seq <= chat.read_seq:
            return False
        chat.read_seq = read_seq
        chat.last_seq = max(chat.last_seq, read_seq)
        # Expiry removes the oldest messages first, so at most these are still unread.
        chat.unread = min(chat.unread, chat.last_seq - read_seq)
        # Which of them mention the user is not known here: none, or at most that many.
        chat.mentions = min(chat.mentions, chat.unread) if read_seq < chat.last_seq else 0
        return True

    # -- questions ----------------------------------------------------------------

    def is_mine(self, message: Json) -> bool:
        return _same_user(message["author"], self.me)

    def is_online(self, chat: Chat) -> bool:
        """A direct chat whose other user was last told online."""
        if chat.kind != "direct" or not chat.title:
            return False
        return bool(self.presence.get(chat.title.casefold(), {}).get("online"))

    def mentions_me(self, message: Json) -> bool:
        """``@me`` in someone else's text (or in the server's ``mentions``, where given)."""
        if self.is_mine(message):
            return False
        named = message.get("mentions")
        if isinstance(named, list):
            return any(isinstance(name, str) and _same_user(name, self.me) for name in named)
        return self._mention.search(message.get("text") or "") is not None

    def comment_wants_attention(self, comment: Json, message_author: str | None = None) -> bool:
        """Someone else's comment on one of the user's messages, or naming the user:
        shown (and rung) whichever chat is open. ``message_author`` (the event's) tells
        a message of the user's that this session never loaded."""
        if self.is_mine(comment):
            return False
        on_mine = MessageId(comment["message"]) in self._mine or (
            isinstance(message_author, str) and _same_user(message_author, self.me)
        )
        return on_mine or self._mention.search(comment.get("text") or "") is not None

    def wants_attention(self, message: Json) -> bool:
        """A mention, or a direct message from someone else: highlighted, and a bell."""
        chat = self.chats.get(ChatId(message["chat"]))
        direct = chat is not None and chat.kind == "direct"
        return not self.is_mine(message) and (direct or self.mentions_me(message))

    def position(self, chat_id: str) -> int | None:
        """The chat's number in the status line (1 for general), for Alt-1..9."""
        for number, known in enumerate(self.chats, start=1):
            if known == chat_id:
                return number
        return None

    def readable(self, text: str) -> str:
        """``text`` (a server's error) with the ids it quotes named as people read them:
        chats by label, messages by ``label#seq``."""

        def name(match: re.Match[str]) -> str:
            quoted = match.group(1)
            if ChatId(quoted) in self.chats:
                return self.chats[ChatId(quoted)].label
            chat_id = self._chat_of.get(MessageId(quoted))
            if chat_id is not None:
                return f"{self.label(chat_id)}#{self._seq_of[MessageId(quoted)]}"
            return match.group(0)

        return _QUOTED_ID.sub(name, text)

    def is_known(self, chat_id: str) -> bool:
        return ChatId(chat_id) in self.chats

    def label(self, chat_id: str) -> str:
        chat = self.chats.get(ChatId(chat_id))
        return chat.label if chat is not None else chat_id

    @property
    def current_label(self) -> str:
        if self.current.chat is not None:
            return self.label(self.current.chat)
        return f"@{self.current.user}"

    def labels(self) -> list[str]:
        return [chat.label for chat in self.chats.values()]

    def find_chat(self, name: str) -> Target | None:
        """The chat a command means by ``name``: a label, an id, a title or ``@user``.

        ``@user`` with no direct chat yet is a target all the same: the first
        ``send`` to it opens the chat.
        """
        if name.startswith("@"):
            user = name[1:]
            for chat in self.chats.values():
                if chat.kind == "direct" and chat.title and _same_user(chat.title, user):
                    return Target(chat=chat.id)
            return Target(user=user) if user else None
        folded = name.casefold()
        if folded == GENERAL:
            return Target(chat=GENERAL)
        # A label beats an id, which beats a title (with or without the group mark).
        found: dict[int, set[ChatId]] = {}
        for chat in self.chats.values():
            title = chat.title or ""
            # A group by its label or title without the mark too, when that is not ambiguous.
            unmarked = (title, GROUP_MARK + title, chat.label[1:]) if chat.kind == "group" else ()
            names = (chat.label, chat.id, title, *unmarked)
            for rank, known_as in enumerate(names):
                if known_as and known_as.casefold() == folded:
                    found.setdefault(min(rank, 2), set()).add(chat.id)
        if not found:
            return None
        best = found[min(found)]
        if len(best) > 1:
            labels = ", ".join(sorted(self.label(chat_id) for chat_id in best))
            raise UsageError(f"{name!r} could be any of {labels}; give its label")
        return Target(chat=best.pop())

    def message_at(self, chat_id: str, seq: int) -> MessageId | None:
        return self._by_seq.get((ChatId(chat_id), seq))

    def seq_of(self, message_id: str) -> int | None:
        return self._seq_of.get(MessageId(message_id))

    def file_of(self, message_id: str) -> Json | None:
        """The file a message seen carries, or None."""
        file_id = self._file_of.get(MessageId(message_id))
        return None if file_id is None else self.files[file_id]

    def group_labels(self) -> list[str]:
        return [chat.label for chat in self.chats.values() if chat.kind == "group"]

    def read_up_to(self, message: Json) -> int | None:
        """The seq to mark read now that ``message`` was shown, or None.

        A message shown in the current chat has been read. (One's own message moved
        the marker on the server already: ``message_seen`` followed it.)
        """
        chat = self.chats.get(ChatId(message["chat"]))
        seq: int = message["seq"]
        if chat is None or seq <= chat.read_seq:
            return None
        return seq if chat.id == self.current.chat else None


def _same_user(a: str, b: str) -> bool:
    # Names are unique case-insensitively and ASCII by the contract's pattern.
    return a.lower() == b.lower()
