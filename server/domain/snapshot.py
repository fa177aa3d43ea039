"""The state as events: folding ``snapshot(state)`` into a fresh ``State`` gives the
same state back (what compaction writes at the head of a new log).

Expired messages are not in it: call ``State.expire`` first.
"""

from __future__ import annotations

from collections.abc import Iterator

from server.domain.events import (
    ChatRestored,
    ClientIdsRestored,
    CommentAdded,
    DeviceAuthorized,
    Event,
    FileUploaded,
    MessagePosted,
    MessageScheduled,
    SnapshotTaken,
    StandingRestored,
    UserRegistered,
    UserSeen,
)
from server.domain.state import State


def snapshot(state: State) -> Iterator[Event]:
    """Users, devices, files, chats with their live messages and comments, pending
    schedules, standings, remembered client_ids; last, the cursor."""
    for user in state.users.values():
        yield UserRegistered(user.name, user.password_hash, user.registered_at)
        for device in user.devices.values():
            yield DeviceAuthorized(
                user.name, device.id, device.name, device.token_hash, device.created_at
            )
    for stored in state.files.values():
        yield FileUploaded(
            stored.id,
            stored.name,
            stored.size,
            stored.content_type,
            stored.sha256,
            stored.uploader,
            stored.uploaded_at,
        )
    for chat in state.chats.values():
        yield ChatRestored(
            chat.id,
            chat.kind,
            chat.first_seq,
            {str(key): seq for key, seq in chat.read_markers.items()},
            title=chat.title,
            owner=chat.owner,
            link_hash=chat.link_hash,
            requests={str(key): at for key, at in chat.requests.items()} or None,
            last_seq=chat.last_seq,
        )
    # Every chat's slots are laid out: the messages follow in the order they were
    # posted, across chats, so that the search index is rebuilt in its order.
    for message in state.search.messages:
        if message is None:
            continue
        yield MessagePosted(
            message.id,
            message.chat,
            message.seq,
            message.author,
            message.text,
            message.ts,
            message.expires_at,
            file=message.file,
            mentions=list(message.mentions) or None,
            edited_at=message.edited_at,
        )
        for comment in message.comments:
            yield CommentAdded(
                comment.id, message.id, message.chat, comment.author, comment.text, comment.ts
            )
    for pending in state.scheduled.values():
        yield MessageScheduled(
            pending.id,
            pending.chat,
            pending.author,
            pending.text,
            pending.send_at,
            0,
            pending.file,
            pending.device,
            pending.client_id,
        )
    for user in state.users.values():
        yield StandingRestored(
            user.name,
            rate_window=user.rate_window,
            rate_count=user.rate_count,
            reporters=sorted(user.reporters) or None,
            banned_until=user.banned_until,
            chats=list(user.chats),
            flood_tat=user.flood_tat,
            invite_tat=user.invite_tat,
            posted=user.posted,
        )
        if user.last_seen is not None:
            yield UserSeen(user.name, user.last_seen)
    for device_id, client_ids in state.client_ids.items():
        if client_ids:
            yield ClientIdsRestored(device_id, {k: str(v) for k, v in client_ids.items()})
    yield SnapshotTaken(state.cursor)
