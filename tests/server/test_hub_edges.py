"""The hub's edges without sockets: a deleted message's events are not resumed (and
the bookkeeping of that ends with the window), presence hears a user's first and last
device, the counters /metrics shows, and replies count towards the same bound as
events."""

from __future__ import annotations

from server.domain.model import UserKey
from server.domain.views import EVERYONE
from server.hub import Hub, Recent
from tests.server.test_hub import ALICE, BOB, frames, session


def test_a_deleted_messages_events_are_not_resumed_and_others_are() -> None:
    """retract(m) leaves out every held event showing m, and only those."""
    recent = Recent(capacity=10, floor=0)
    recent.add(1, EVERYONE, b"m1 posted", about="m1")
    recent.add(2, EVERYONE, b"m2 posted", about="m2")
    recent.add(3, EVERYONE, b"m1 edited", about="m1")
    recent.add(4, EVERYONE, b"no message")
    recent.retract("m1")
    assert frames(recent, 0) == [b"m2 posted", b"no message"]
    recent.retract("m9")  # nothing held shows it: nothing to remember
    assert recent.retracted == {"m1": 2}


def test_a_retraction_is_forgotten_once_its_events_leave_the_window() -> None:
    """The window remembers a deleted message until the last of its events is dropped:
    one dropped, still remembered; both, forgotten."""
    recent = Recent(capacity=2, floor=0)
    recent.add(1, EVERYONE, b"m1 posted", about="m1")
    recent.add(2, EVERYONE, b"m1 edited", about="m1")
    recent.retract("m1")
    recent.add(3, EVERYONE, b"m2 posted", about="m2")
    assert recent.retracted == {"m1": 1}
    assert frames(recent, 1) == [b"m2 posted"]
    recent.add(4, EVERYONE, b"plain")
    assert (recent.retracted, recent.about) == ({}, {3: "m2"})
    assert frames(recent, 2) == [b"m2 posted", b"plain"]


def test_an_event_about_no_message_is_not_remembered_as_one() -> None:
    """Only events with ``about`` are indexed: dropping the others touches no index."""
    recent = Recent(capacity=1, floor=0)
    recent.add(1, EVERYONE, b"plain")
    recent.add(2, EVERYONE, b"about m", about="m")
    assert recent.about == {2: "m"}


def test_presence_hears_a_users_first_and_last_device_and_every_change() -> None:
    """arrived on the first device only, left on the last only; devices_changed on every
    attach and detach."""
    hub = Hub(send_buffer_limit=100, recent=Recent(10, 0), published=0)
    heard: list[tuple[str, UserKey]] = []
    hub.arrived = lambda key: heard.append(("arrived", key))
    hub.left = lambda key: heard.append(("left", key))
    hub.devices_changed = lambda key: heard.append(("changed", key))
    phone, _ = session(hub, ALICE)
    laptop, _ = session(hub, ALICE)
    _, _ = session(hub, BOB)
    hub.detach(phone)
    hub.detach(laptop)
    assert heard == [
        ("arrived", ALICE),
        ("changed", ALICE),
        ("changed", ALICE),
        ("arrived", BOB),
        ("changed", BOB),
        ("changed", ALICE),
        ("left", ALICE),
        ("changed", ALICE),
    ]


def test_the_metrics_counters_start_at_zero_and_count_bytes_per_device() -> None:
    """fanout_bytes counts each event once per device it was handed to; cut_offs counts
    devices cut off."""
    hub = Hub(send_buffer_limit=100, recent=Recent(10, 0), published=0)
    assert (hub.fanout_bytes, hub.cut_offs) == (0, 0)
    _, alice = session(hub, ALICE)
    _, bob = session(hub, BOB)
    hub.publish(1, EVERYONE, b"12345")
    hub.publish(2, frozenset({ALICE}), b"123")
    assert hub.fanout_bytes == 5 * 2 + 3
    bob.unsent = 101
    hub.publish(3, EVERYONE, b"1")
    assert (hub.cut_offs, bob.aborted, alice.aborted) == (1, True, False)


def test_replies_count_towards_the_send_buffer_limit() -> None:
    """A reply leaving exactly the limit unsent keeps the connection; one byte more
    cuts the device off (a client that never reads its replies)."""
    hub = Hub(send_buffer_limit=100, recent=Recent(10, 0), published=0)
    reader, connection = session(hub, ALICE)
    connection.unsent = 100
    hub.reply(reader, b"reply")
    assert (connection.frames, connection.aborted) == ([b"reply"], False)
    connection.unsent = 101
    hub.reply(reader, b"another")
    assert connection.aborted
    assert reader not in hub.sessions
