"""The rules: given the state, a command and ``now``, which events happen.

Each function checks everything first and raises a ``MessengerError`` before it
returns any event, so a refused command changes nothing. Identifiers and hashes
that need randomness or a KDF are made by the caller and passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final

from server.domain.events import (
    CommentAdded,
    DeviceAuthorized,
    DeviceRevoked,
    DirectChatOpened,
    Event,
    FileUploaded,
    GroupCreated,
    JoinDeclined,
    JoinLinkCreated,
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
    UserRegistered,
    UserReported,
    UserSeen,
)
from server.domain.limits import has_letter_or_digit, skeleton, text_size, wait_for
from server.domain.model import (
    GENERAL,
    Chat,
    ChatId,
    CommentId,
    Device,
    DeviceId,
    FileId,
    Message,
    MessageId,
    ScheduledId,
    StoredFile,
    User,
    UserName,
    user_key,
)
from server.domain.search import mentioned
from server.domain.state import State
from server.errors import (
    Banned,
    Conflict,
    Forbidden,
    InvalidParams,
    NotFound,
    RateLimited,
    TooLarge,
)


def check_name_free(state: State, name: str) -> None:
    """A new name is free when no user has it, in any case, nor one it looks like."""
    if not has_letter_or_digit(name):
        raise InvalidParams(f"Expected a user name with a letter or a digit, but got {name!r}")
    existing = state.user(name)
    if existing is not None:
        raise Conflict(f"User name {name!r} is taken (by {existing.name!r})")
    look_alike = state.skeletons.get(skeleton(name))
    if look_alike is not None:
        taken = state.users[look_alike].name
        raise Conflict(f"User name {name!r} is taken: it looks like {taken!r}")


def register(state: State, name: str, password_hash: str, now: int) -> UserRegistered:
    check_name_free(state, name)
    # The newcomer's last `history_size` messages are live ones.
    return UserRegistered(UserName(name), password_hash, now, state.newcomer_read_seq(now))


def authorize_device(
    user: User, device: DeviceId, device_name: str, token_hash: str, now: int
) -> DeviceAuthorized:
    return DeviceAuthorized(user.name, device, device_name, token_hash, now)


def revoke_device(device: Device, now: int) -> DeviceRevoked:
    return DeviceRevoked(device.user, device.id, now)


def make_room_for_device(
    user: User, connected: Collection[str], limit: int, now: int
) -> list[DeviceRevoked]:
    """A user keeps at most ``limit`` devices (each password login makes one, and a
    script or a browser that forgets its token would make them without end): a new
    one revokes the oldest that are not connected anywhere. With all of them
    connected, the login is refused."""
    excess = len(user.devices) + 1 - limit
    if excess <= 0:
        return []
    idle = sorted(
        (device for device in user.devices.values() if device.id not in connected),
        # By age, ties in the order authorised (the dict's): not by the random id,
        # which picked any of the devices made in one millisecond.
        key=lambda device: device.created_at,
    )
    if len(idle) < excess:
        raise RateLimited(
            f"All {len(user.devices)} devices of this user are connected (at most {limit}); "
            "log out one first",
            60.0,
        )
    return [revoke_device(device, now) for device in idle[:excess]]


def admit_all(
    state: State,
    events: list[Event],
    now: int,
    connected: Callable[[User], Collection[str]],
    max_devices: int,
) -> list[Event]:
    """``admit`` for one batch from another node. A password login there sends the
    devices it revoked to make room with the new one, decided against that node's
    state, which may lack another login's events still on their way (both revoke the
    same device; together they pass the cap): the writer makes the room again
    against its own state, and drops those revocations."""
    logging_in = {user_key(e.user) for e in events if isinstance(e, DeviceAuthorized)}
    admitted: list[Event] = []
    for event in events:
        if isinstance(event, DeviceRevoked) and user_key(event.user) in logging_in:
            continue
        user = state.user(event.user) if isinstance(event, DeviceAuthorized) else None
        if user is not None:
            admitted += make_room_for_device(user, connected(user), max_devices, now)
        admitted.append(admit(state, event, now))
    return admitted


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
    file: FileId | None = None,
) -> MessagePosted:
    """A new message at the end of its chat. ``chat`` is None when an event of the
    same command opens it (a first direct message)."""
    if chat is not None:
        check_member(chat, author)
    check_live_bytes(state, author, text)
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
        file,
        mentions=mentions_in(state, chat, text),
    )


def check_member(chat: Chat, user: User) -> None:
    if user_key(user.name) not in chat.read_markers:
        raise Forbidden(f"You are not a member of chat {chat.id!r}")


def move_read_marker(
    state: State, user: User, chat: Chat, seq: int, now: int
) -> ReadMarkerMoved | None:
    """The read marker only moves forward, and never past the last message."""
    if seq > chat.last_seq:
        raise InvalidParams(f"Expected a seq of at most {chat.last_seq}, but got {seq}")
    if seq <= chat.read_markers[user_key(user.name)]:
        return None
    return ReadMarkerMoved(user.name, chat.id, seq, now)


# -- the extras ----------------------------------------------------------------

SCHEDULED_PER_USER: Final = 100
SCHEDULE_AHEAD_MS: Final = 366 * 24 * 3600 * 1000


def check_not_banned(user: User, now: int) -> None:
    if user.banned_until > now:
        raise Banned(f"You are banned from sending until {user.banned_until}", user.banned_until)


def check_flood(state: State, user: User, now: int) -> None:
    """A token bucket over every send and comment of a user, in every chat."""
    quotas = state.quotas
    retry_after = wait_for(user.flood_tat, now, quotas.flood_interval_ms, quotas.flood_burst)
    if retry_after > 0:
        raise RateLimited(
            f"Expected at most {quotas.flood_burst} messages and comments at once and "
            f"{quotas.flood_rate:g} a second after that, but this would be one more",
            retry_after,
        )


def check_live_bytes(state: State, user: User, text: str) -> None:
    """A user's live messages and comments hold at most ``max_live_bytes`` of text."""
    limit = state.quotas.max_live_bytes
    if limit and user.live_bytes + text_size(text) > limit:
        raise TooLarge(
            f"Expected at most {limit} bytes of text in your live messages and comments, "
            f"but this would make {user.live_bytes + text_size(text)}; wait for some to expire",
            limit,
        )


def check_rate(state: State, user: User, chat_id: ChatId, now: int, limit: int) -> None:
    """The flood bucket; and fixed windows in the general chat: the count resets when a
    new period starts."""
    check_flood(state, user, now)
    if chat_id != GENERAL:
        return
    window = state.rate_window(now)
    if user.rate_window == window and user.rate_count >= limit:
        retry_after = ((window + 1) * state.rate_period_ms - now) / 1000
        raise RateLimited(
            f"Expected at most {limit} messages to the general chat per period, "
            f"but this would be one more",
            retry_after,
        )


def find_message(state: State, user: User, message_id: str, now: int) -> Message:
    """A message of a chat ``user`` is a member of, live at ``now``."""
    message = state.live_message(message_id, now)
    if message is None or user_key(user.name) not in state.chats[message.chat].read_markers:
        raise NotFound(f"No message {message_id!r} among your chats")
    return message


def add_comment(
    state: State, author: User, message_id: str, *, text: str, now: int, comment_id: CommentId
) -> CommentAdded:
    comment = state.comments.get(CommentId(message_id))
    # A comment of an expired message is gone: "not found", not "a comment".
    if (
        comment is not None
        and state.live_message(comment.message, now) is not None
        and user_key(author.name) in state.chats[comment.chat].read_markers
    ):
        raise InvalidParams("Expected a message, but got a comment: no comments on comments")
    message = find_message(state, author, message_id, now)
    check_not_banned(author, now)
    check_flood(state, author, now)
    check_live_bytes(state, author, text)
    return CommentAdded(comment_id, message.id, message.chat, author.name, text, now)


def find_file(state: State, user: User, file_id: str, now: int) -> StoredFile:
    """A file is visible to its uploader and to members of chats where a message live
    at ``now`` carries it."""
    stored = state.files.get(FileId(file_id))
    key = user_key(user.name)
    if stored is None:
        raise NotFound(f"No file {file_id!r} you can see")
    if user_key(stored.uploader) == key:
        return stored
    lapsed = state.lapsed(now)
    for chat, carried in stored.chats.items():
        if key not in state.chats[chat].read_markers:
            continue
        if carried > sum(message.file == stored.id for message in lapsed.get(chat, ())):
            return stored
    raise NotFound(f"No file {file_id!r} you can see")


def check_storage(state: State, user: User, size: int, mine: int) -> None:
    """Room for one more file of ``size`` bytes, with ``mine`` bytes of the user's
    being uploaded: within the user's quota, and the server's.

    Others' uploads in progress do not count against the server's quota (so that
    unfinished uploads cannot keep others out); each is checked again as it is stored.
    """
    quotas = state.quotas
    if quotas.user_storage and user.stored_bytes + mine + size > quotas.user_storage:
        raise TooLarge(
            f"Expected at most {quotas.user_storage} bytes of your files stored and being "
            f"uploaded, but this would make {user.stored_bytes + mine + size}; files leave "
            "once no live message carries them",
            quotas.user_storage,
        )
    if quotas.storage and state.stored_bytes + size > quotas.storage:
        room = max(0, quotas.storage - state.stored_bytes)
        raise TooLarge(
            f"Expected a file of at most {room} bytes: the server's file storage is full", room
        )


def schedule_message(
    state: State,
    author: User,
    chat_id: ChatId,
    *,
    text: str,
    file: FileId | None,
    send_at: int,
    now: int,
    scheduled_id: ScheduledId,
    device: DeviceId | None = None,
    client_id: str | None = None,
) -> MessageScheduled:
    if send_at - now > SCHEDULE_AHEAD_MS:
        raise InvalidParams(
            f"Expected send_at at most {SCHEDULE_AHEAD_MS // 86_400_000} days ahead, "
            f"but got {(send_at - now) // 86_400_000} days"
        )
    check_live_bytes(state, author, text)
    if len(author.scheduled) >= SCHEDULED_PER_USER:
        raise InvalidParams(
            f"Expected at most {SCHEDULED_PER_USER} pending scheduled messages, "
            "but this would be one more"
        )
    return MessageScheduled(
        scheduled_id, chat_id, author.name, text, send_at, now, file, device, client_id
    )


def cancel_scheduled(state: State, user: User, scheduled_id: str, now: int) -> ScheduledCancelled:
    pending = state.scheduled.get(ScheduledId(scheduled_id))
    if pending is None or user_key(pending.author) != user_key(user.name):
        raise NotFound(f"No pending scheduled message {scheduled_id!r} of yours")
    return ScheduledCancelled(pending.id, pending.author, now)


def post_due(
    state: State, now: int, new_id: Callable[[], MessageId], ttl_ms: int, limit: int = 200
) -> list[Event]:
    """Post the scheduled messages whose time has come, in send_at order: at most
    ``limit`` at a time, so that thousands falling due at once are posted in slices
    with the event loop free between them (5,000 at once held it for 1.8 s).

    A message whose author is no longer a member of its chat, or is banned when it
    falls due, is cancelled instead.
    Run to completion on one thread, so a ``cancel`` either precedes it (and the
    message is never posted) or follows it (and finds nothing): one winner.
    """
    events: list[Event] = []
    next_seq: dict[ChatId, int] = {}
    for pending in state.due(now)[:limit]:
        chat = state.chats.get(pending.chat)
        author = state.users[user_key(pending.author)]
        if (
            chat is None
            or user_key(pending.author) not in chat.read_markers
            or author.banned_until > now
        ):
            events.append(ScheduledCancelled(pending.id, pending.author, now))
            continue
        seq = next_seq.get(chat.id, chat.last_seq + 1)
        next_seq[chat.id] = seq + 1
        events.append(
            MessagePosted(
                new_id(),
                chat.id,
                seq,
                pending.author,
                pending.text,
                now,
                now + ttl_ms if ttl_ms else None,
                file=pending.file,
                scheduled=pending.id,
                mentions=mentions_in(state, chat, pending.text),
            )
        )
    return events


def report(
    state: State,
    reporter: User,
    name: str,
    *,
    reason: str | None,
    now: int,
    threshold: int,
    ban_ms: int,
) -> list[Event]:
    """Distinct reporters count; at ``threshold`` the user is banned for ``ban_ms``.

    Reports made during a ban are not counted: the count starts again after it.
    Nor are reports from accounts without weight (``carries_weight``), so that
    fresh accounts cannot ban anyone.
    """
    user = state.user(name)
    if user is None:
        raise NotFound(f"No user {name!r}")
    if user is reporter:
        raise InvalidParams("Expected another user to report, but got yourself")
    if (
        user.banned_until > now
        or user_key(reporter.name) in user.reporters
        or not carries_weight(state, reporter, now)
    ):
        return []
    events: list[Event] = [UserReported(reporter.name, user.name, now, reason)]
    if len(user.reporters) + 1 >= threshold:
        events.append(UserBanned(user.name, now + ban_ms, now))
    return events


def carries_weight(state: State, reporter: User, now: int) -> bool:
    """A report counts from an account at least ``report_min_age`` old that has posted."""
    min_age = state.quotas.report_min_age_ms
    return not min_age or (reporter.registered_at + min_age <= now and reporter.posted > 0)


def create_group(state: State, owner: User, title: str, chat_id: ChatId, now: int) -> GroupCreated:
    limit = state.quotas.group_limit
    if limit and owner.groups_owned >= limit:
        raise Forbidden(f"Expected at most {limit} groups of yours, but this would be one more")
    return GroupCreated(chat_id, owner.name, title, now)


def owned_group(state: State, owner: User, chat_id: str) -> Chat:
    """A group the caller owns; members who don't own it are refused, others told nothing."""
    chat = find_chat(state, owner, chat_id)
    if chat.kind != "group" or chat.owner is None or user_key(chat.owner) != user_key(owner.name):
        raise Forbidden(f"Only the owner of chat {chat_id!r} may do this")
    return chat


def invite(state: State, owner: User, chat_id: str, name: str, now: int) -> MemberJoined:
    chat = owned_group(state, owner, chat_id)
    user = state.user(name)
    if user is None:
        raise NotFound(f"No user {name!r}")
    if user_key(user.name) in chat.read_markers:
        raise Conflict(f"{user.name} is already a member of {chat.id!r}")
    quotas = state.quotas
    retry_after = wait_for(owner.invite_tat, now, quotas.invite_interval_ms, quotas.invite_limit)
    if retry_after > 0:
        raise RateLimited(
            f"Expected at most {quotas.invite_limit} invitations an hour, "
            "but this would be one more",
            retry_after,
        )
    return MemberJoined(chat.id, user.name, now, invited_by=owner.name)


def create_link(state: State, owner: User, chat_id: str, link_hash: str, now: int) -> Event:
    chat = owned_group(state, owner, chat_id)
    return JoinLinkCreated(chat.id, link_hash, now)


def join(state: State, user: User, link_hash: str, now: int) -> tuple[Chat, str, list[Event]]:
    chat_id = state.links.get(link_hash)
    if chat_id is None:
        raise NotFound("No such link (links are replaced when the owner makes a new one)")
    chat = state.chats[chat_id]
    key = user_key(user.name)
    if key in chat.read_markers:
        return chat, "member", []
    if key in chat.requests:
        raise Conflict("You have already asked to join; the owner has not decided yet")
    return chat, "pending", [JoinRequested(chat.id, user.name, now)]


def decide(state: State, owner: User, chat_id: str, name: str, *, approve: bool, now: int) -> Event:
    chat = owned_group(state, owner, chat_id)
    user = state.user(name)
    key = user_key(name)
    if user is None or key not in chat.requests:
        if key in chat.read_markers:
            raise Conflict(f"{name} is already a member: the request was decided")
        raise NotFound(f"No pending request from {name!r} to join {chat.id!r}")
    if approve:
        return MemberJoined(chat.id, user.name, now)
    return JoinDeclined(chat.id, user.name, now)


def leave(state: State, user: User, chat_id: str, now: int) -> MemberLeft:
    chat = find_chat(state, user, chat_id)
    if chat.kind != "group":
        raise Forbidden(f"Only group chats can be left, and {chat.id!r} is a {chat.kind} chat")
    if chat.owner is not None and user_key(chat.owner) == user_key(user.name):
        raise Forbidden("The owner cannot leave the group")
    return MemberLeft(chat.id, user.name, now)


def admit(state: State, event: Event, now: int) -> Event:
    """Whether an event decided on another node of a cluster (one that only records
    what happened there: an account made with its password hash, a device
    authorised or revoked, a file stored) still fits the writer's state; the event
    to append, as the writer would have decided it."""
    if isinstance(event, UserRegistered):
        return register(state, event.user, event.password_hash, now)
    user = state.user(getattr(event, "user", getattr(event, "uploader", "")))
    if user is None:
        raise NotFound(f"No user {getattr(event, 'user', '')!r}")
    if isinstance(event, DeviceAuthorized):
        if event.device in user.devices:
            raise Conflict(f"Device {event.device!r} exists")
        return event
    if isinstance(event, DeviceRevoked):
        if event.device not in user.devices:
            raise NotFound(f"No device {event.device!r}")
        return event
    if isinstance(event, UserSeen):  # presence: when the user's last device left
        return event
    if isinstance(event, FileUploaded):
        if event.file in state.files:
            raise Conflict(f"File {event.file!r} exists")
        check_storage(state, user, event.size, 0)  # the quotas hold for the whole cluster
        return event
    raise Forbidden(f"Expected an event another node may record, but got {type(event).__name__}")


# -- beyond the seed: edit, delete, mentions -------------------------------------


def mentions_in(state: State, chat: Chat | None, text: str) -> list[str] | None:
    """The names ``@name`` in ``text`` mentions among those who see ``chat`` (None:
    a direct chat this command opens, where only its two members could be named)."""
    if chat is None or "@" not in text:
        return None

    def member(name: str) -> UserName | None:
        user = state.user(name)
        if user is None or user_key(user.name) not in chat.read_markers:
            return None
        return user.name

    return [str(name) for name in mentioned(text, member)] or None


def edit_message(
    state: State,
    editor: User,
    message_id: str,
    *,
    text: str,
    now: int,
    device: DeviceId | None = None,
    client_id: str | None = None,
) -> MessageEdited:
    """The author changes the text of a live message of theirs."""
    message = find_message(state, editor, message_id, now)
    if user_key(message.author) != user_key(editor.name):
        raise Forbidden(f"Only the author of message {message.id!r} may edit it")
    if not text and message.file is None:
        raise InvalidParams("Expected text of at least 1 character, but got none")
    check_not_banned(editor, now)
    check_flood(state, editor, now)
    limit = state.quotas.max_live_bytes
    grown = text_size(text) - text_size(message.text)
    if limit and grown > 0 and editor.live_bytes + grown > limit:
        raise TooLarge(
            f"Expected at most {limit} bytes of text in your live messages and comments, "
            f"but this edit would make {editor.live_bytes + grown}",
            limit,
        )
    chat = state.chats[message.chat]
    return MessageEdited(
        message.id,
        message.chat,
        editor.name,
        text,
        now,
        mentions_in(state, chat, text),
        device,
        client_id,
    )


def delete_message(state: State, user: User, message_id: str, now: int) -> MessageDeleted:
    """The author, or the owner of the group it is in, removes a message for good."""
    message = find_message(state, user, message_id, now)
    chat = state.chats[message.chat]
    key = user_key(user.name)
    owner = chat.kind == "group" and chat.owner is not None and user_key(chat.owner) == key
    if user_key(message.author) != key and not owner:
        raise Forbidden(f"Only the author or the group's owner may delete {message.id!r}")
    return MessageDeleted(message.id, message.chat, message.seq, user.name, now)
