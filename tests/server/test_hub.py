"""The hub without sockets: the resume window's bounds (events and bytes), and the
fan-out's bookkeeping, driven directly. ``Hub`` talks to a connection only through
``hub.Peer``; here a peer is a list of the frames written to it and a byte count a
test sets, as a socket's unsent bytes would be."""

from __future__ import annotations

from server.domain.model import UserKey
from server.domain.views import EVERYONE
from server.hub import Hub, Recent, Session

ALICE, BOB = UserKey("alice"), UserKey("bob")


class Connection:
    """``hub.Peer``: what was written, and how many bytes are still unsent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.unsent = 0
        self.aborted = False

    def write_text(self, data: bytes) -> None:
        self.frames.append(data)

    def buffered(self) -> int:
        return self.unsent

    def abort(self) -> None:
        self.aborted = True

    def close(self, code: int, reason: str) -> None:
        self.aborted = True


def frames(recent: Recent, since: int, key: UserKey = ALICE, now: int | None = None) -> list[bytes]:
    return list(recent.since(since, key, now))


def test_the_window_holds_exactly_max_bytes_of_frames() -> None:
    """Frames adding up to max_bytes all stay; one byte more drops the oldest and moves
    the floor to it."""
    recent = Recent(capacity=100, floor=0, max_bytes=30)
    for cursor in (1, 2, 3):
        recent.add(cursor, EVERYONE, b"x" * 10)
    assert (recent.floor, frames(recent, 0)) == (0, [b"x" * 10] * 3)
    recent.add(4, EVERYONE, b"y")
    assert recent.floor == 1
    assert frames(recent, 1) == [b"x" * 10, b"x" * 10, b"y"]
    recent.add(5, EVERYONE, b"z" * 20)  # 10 + 1 + 20: the oldest two go
    assert recent.floor == 3
    assert frames(recent, 3) == [b"y", b"z" * 20]


def test_the_window_holds_exactly_capacity_events() -> None:
    """capacity events stay; the next one drops the oldest, whose cursor becomes the floor."""
    recent = Recent(capacity=2, floor=0)
    recent.add(1, EVERYONE, b"1")
    recent.add(2, EVERYONE, b"2")
    assert (recent.floor, frames(recent, 0)) == (0, [b"1", b"2"])
    recent.add(3, EVERYONE, b"3")
    assert (recent.floor, frames(recent, 1)) == (1, [b"2", b"3"])


def test_a_window_of_one_event_holds_the_last_and_of_none_holds_nothing() -> None:
    """capacity 1 keeps the newest event (floor just below it); capacity 0 keeps none."""
    one = Recent(capacity=1, floor=0)
    one.add(1, EVERYONE, b"1")
    one.add(2, EVERYONE, b"2")
    assert (one.floor, frames(one, 1)) == (1, [b"2"])
    none = Recent(capacity=0, floor=0)
    none.add(1, EVERYONE, b"1")
    assert (none.floor, frames(none, 0)) == (1, [])


def test_since_leaves_out_others_events_and_those_expired_by_now() -> None:
    """since gives the frames after the cursor that the user heard, and none whose
    expires_at is at or before now."""
    recent = Recent(capacity=10, floor=0)
    recent.add(1, frozenset({BOB}), b"for bob")
    recent.add(2, frozenset({ALICE, BOB}), b"for both")
    recent.add(3, EVERYONE, b"expiring", expires_at=1000)
    recent.add(4, EVERYONE, b"lasting", expires_at=1001)
    assert frames(recent, 0, ALICE, now=999) == [b"for both", b"expiring", b"lasting"]
    assert frames(recent, 0, ALICE, now=1000) == [b"for both", b"lasting"]
    assert frames(recent, 2, BOB) == [b"expiring", b"lasting"]


def session(hub: Hub, key: UserKey) -> tuple[Session, Connection]:
    connection = Connection()
    logged_in = Session(connection, "test")
    logged_in.key = key
    hub.attach(logged_in)
    return logged_in, connection


def test_a_user_whose_last_device_leaves_is_forgotten() -> None:
    """Detaching every device of a user leaves no entry behind: the hub's memory follows
    who is online, not who ever was."""
    hub = Hub(send_buffer_limit=100, recent=Recent(10, 0), published=0)
    phone, _ = session(hub, ALICE)
    laptop, _ = session(hub, ALICE)
    hub.detach(phone)
    assert hub.sessions_of(ALICE) == {laptop}
    hub.detach(laptop)
    hub.detach(laptop)  # twice: harmless
    assert (hub.by_user, hub.sessions) == ({}, set())


def test_a_device_is_cut_off_only_past_the_send_buffer_limit() -> None:
    """A device with exactly send_buffer_limit bytes unsent keeps its connection; one
    byte more and it is aborted and detached, and the others still get the event."""
    hub = Hub(send_buffer_limit=100, recent=Recent(10, 0), published=0)
    _, full = session(hub, ALICE)
    over_session, over = session(hub, BOB)
    full.unsent, over.unsent = 100, 101
    hub.publish(1, EVERYONE, b"event")
    assert (full.frames, full.aborted) == ([b"event"], False)
    assert (over.frames, over.aborted) == ([b"event"], True)
    assert over_session not in hub.sessions
    hub.publish(2, frozenset({ALICE, BOB}), b"next")
    assert (full.frames, over.frames) == ([b"event", b"next"], [b"event"])
