"""Live connections by user, fan-out of encoded events, and the recent events that
``login {since}`` resumes from.

Each event is encoded once; the same bytes are written to every device concerned
without awaiting any of them. A device whose unsent bytes pass the bound is cut
off at once (it comes back with ``since``) so that it never holds the others up
and never holds unbounded memory.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from typing import Protocol

from server.domain.model import DeviceId, UserKey, UserName
from server.domain.views import EVERYONE, Audience

logger = logging.getLogger("messenger.server.hub")


class Peer(Protocol):
    """The transport's side of one connection."""

    def write_text(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...

    def abort(self) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Session:
    """One connection; logged in once ``user`` is set. ``remote`` is the client's
    address (behind a trusted proxy, the one it forwarded for): what per-address
    limits count and log lines name."""

    __slots__ = ("device", "key", "peer", "remote", "user")

    def __init__(self, peer: Peer, remote: str) -> None:
        self.peer = peer
        self.remote = remote
        self.user: UserName | None = None
        self.key: UserKey | None = None
        self.device: DeviceId | None = None

    def __repr__(self) -> str:
        return f"<Session {self.remote} user={self.user} device={self.device}>"


class Recent:
    """The last ``capacity`` published events (and at most ``max_bytes`` of them), for
    ``login {since}``.

    ``floor`` is the newest cursor whose event may be gone: every event after it is
    here (events nobody hears of take no room). An event with ``expires_at`` (a
    message's) is not resumed once that time has come: an expired message is
    never shown again.
    """

    def __init__(self, capacity: int, floor: int, max_bytes: int = 64 * 2**20) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.floor = floor
        self.size = 0  # bytes of the frames held
        self.events: collections.deque[tuple[int, Audience, bytes, int | None]] = (
            collections.deque()
        )
        self.about: dict[int, str] = {}  # cursor -> the message its event shows
        self.retracted: dict[str, int] = {}  # deleted message -> its events still held

    def add(
        self,
        cursor: int,
        audience: Audience,
        frame: bytes,
        expires_at: int | None = None,
        about: str | None = None,
    ) -> None:
        if self.capacity <= 0:
            self.floor = cursor
            return
        self.events.append((cursor, audience, frame, expires_at))
        if about is not None:
            self.about[cursor] = about
        self.size += len(frame)
        while len(self.events) > self.capacity or self.size > self.max_bytes:
            gone, _, gone_frame, _ = self.events.popleft()
            self.floor = gone
            self.size -= len(gone_frame)
            message = self.about.pop(gone, None)
            if message is not None and message in self.retracted:
                self.retracted[message] -= 1
                if not self.retracted[message]:
                    del self.retracted[message]

    def retract(self, message: str) -> None:
        """A deleted message: the events that show it are not resumed any more."""
        held = sum(1 for shown in self.about.values() if shown == message)  # rare: O(held)
        if held:
            self.retracted[message] = held

    def since(self, cursor: int, key: UserKey, now: int | None = None) -> Iterator[bytes]:
        """The frames after ``cursor`` that ``key`` would have received and that have
        not expired by ``now``, oldest first."""
        newer: list[bytes] = []
        for event_cursor, audience, frame, expires_at in reversed(self.events):
            if event_cursor <= cursor:
                break
            if self.retracted and self.about.get(event_cursor) in self.retracted:
                continue
            if isinstance(audience, frozenset) and key not in audience:
                continue
            if expires_at is not None and now is not None and expires_at <= now:
                continue
            newer.append(frame)
        return reversed(newer)


class Hub:
    def __init__(
        self,
        send_buffer_limit: int,
        recent: Recent,
        published: int,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.send_buffer_limit = send_buffer_limit
        self.recent = recent
        self.clock = clock  # ms since the epoch; decides which resumed events expired
        self.published = published  # cursor of the last event handed to the devices
        self.sessions: set[Session] = set()  # logged-in ones
        self.fanout_bytes = 0  # bytes of events handed to devices, for /metrics
        self.cut_offs = 0  # devices cut off as too slow, for /metrics
        self.by_user: dict[UserKey, set[Session]] = {}
        # Presence (server/presence.py): a user's first device here, and last.
        self.arrived: Callable[[UserKey], None] | None = None
        self.left: Callable[[UserKey], None] | None = None
        # Any device of the user connected or gone here (a cluster tells the others).
        self.devices_changed: Callable[[UserKey], None] | None = None

    def attach(self, session: Session) -> None:
        assert session.key is not None
        self.sessions.add(session)
        devices = self.by_user.setdefault(session.key, set())
        devices.add(session)
        if len(devices) == 1 and self.arrived is not None:
            self.arrived(session.key)
        if self.devices_changed is not None:
            self.devices_changed(session.key)

    def detach(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        assert session.key is not None
        devices = self.by_user[session.key]
        devices.discard(session)
        if not devices:
            del self.by_user[session.key]
            if self.left is not None:
                self.left(session.key)
        if self.devices_changed is not None:
            self.devices_changed(session.key)

    def sessions_of(self, key: UserKey) -> set[Session]:
        return self.by_user.get(key, set())

    def online_devices(self, key: UserKey) -> set[DeviceId]:
        return {s.device for s in self.sessions_of(key) if s.device is not None}

    def publish(
        self,
        cursor: int,
        audience: Audience,
        frame: bytes,
        expires_at: int | None = None,
        about: str | None = None,
    ) -> None:
        """Hand one encoded event to every device of its audience, and remember it
        (until ``expires_at``, when given, for resume; while message ``about`` is not
        deleted)."""
        self.published = cursor
        self.recent.add(cursor, audience, frame, expires_at, about)
        if audience is EVERYONE:
            self.deliver(list(self.sessions), frame)
        else:
            assert isinstance(audience, frozenset)
            targets: list[Session] = []
            for key in audience:
                targets.extend(self.by_user.get(key, ()))
            self.deliver(targets, frame)

    def advance(self, cursor: int) -> None:
        """Every event up to ``cursor`` is durable and told (some concern nobody)."""
        self.published = max(self.published, cursor)

    def deliver(self, targets: list[Session], frame: bytes) -> None:
        limit = self.send_buffer_limit
        self.fanout_bytes += len(frame) * len(targets)
        for session in targets:
            peer = session.peer
            peer.write_text(frame)
            if peer.buffered() > limit:
                self.cut_off(session)

    def reply(self, session: Session, frame: bytes) -> None:
        """Hand a reply to its connection: like an event, without waiting for the peer,
        and counted towards the same bound, so that a client that sends requests and
        never reads is cut off instead of holding its replies in memory."""
        session.peer.write_text(frame)
        if session.peer.buffered() > self.send_buffer_limit:
            self.cut_off(session)

    def resume(self, session: Session, since: int) -> bool:
        """Push what ``session`` missed after ``since``; False (pushing nothing) if not
        all of it is held, or if it is too much to push at once."""
        assert session.key is not None
        if not self.recent.floor <= since <= self.published:
            return False
        now = None if self.clock is None else self.clock()
        frames = list(self.recent.since(since, session.key, now))
        if sum(len(frame) for frame in frames) > self.send_buffer_limit // 2:
            # More than the device could take without being cut off: it is
            # cheaper for it to refetch (status, unread) than to be fed this.
            return False
        for frame in frames:
            session.peer.write_text(frame)
        return True

    def cut_off(self, session: Session) -> None:
        logger.warning(
            "cutting off %s: %d bytes unsent (limit %d)",
            session,
            session.peer.buffered(),
            self.send_buffer_limit,
        )
        self.cut_offs += 1
        self.detach(session)
        session.peer.abort()
