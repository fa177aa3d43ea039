"""The device cap and the admission of another node's events, driven directly: a
state folded from events, an explicit ``now`` and the set of connected devices."""

from __future__ import annotations

import pytest

from server.domain import rules
from server.domain.events import (
    DeviceAuthorized,
    DeviceRevoked,
    Event,
    FileUploaded,
    ReadMarkerMoved,
    UserRegistered,
    UserSeen,
)
from server.domain.limits import Quotas
from server.domain.model import GENERAL, DeviceId, FileId, User, UserName
from server.domain.state import State
from server.errors import Conflict, Forbidden, NotFound, RateLimited, TooLarge

NOW = 1_000_000
ALICE, BOB = UserName("alice"), UserName("bob")


def authorized(user: UserName, device: str, at: int) -> DeviceAuthorized:
    return DeviceAuthorized(user, DeviceId(device), device, f"hash-{device}", at)


def with_devices(**devices: list[str]) -> State:
    """Each user with their devices, authorised in that order one ms apart."""
    state = State()
    for name, ids in devices.items():
        state.apply(UserRegistered(UserName(name), f"hash-{name}", 0, 0))
        for at, device in enumerate(ids, 1):
            state.apply(authorized(UserName(name), device, at))
    return state


def alice(state: State) -> User:
    found = state.user("alice")
    assert found is not None
    return found


def revoked(events: list[DeviceRevoked]) -> list[str]:
    return [event.device for event in events]


def test_below_the_cap_a_login_revokes_nothing() -> None:
    """Fewer devices than the cap (one short, or several): no revocation."""
    for limit in (3, 4, 5):
        state = with_devices(alice=["d1", "d2"])
        assert rules.make_room_for_device(alice(state), set(), limit, NOW) == []


def test_at_the_cap_a_login_revokes_the_oldest_idle_devices() -> None:
    """At the cap one device goes, the oldest not connected; past it (a lowered cap),
    as many as it takes."""
    state = with_devices(alice=["d1", "d2", "d3"])
    made = rules.make_room_for_device(alice(state), {"d1"}, 3, NOW)
    assert made == [DeviceRevoked(ALICE, DeviceId("d2"), NOW)]
    assert revoked(rules.make_room_for_device(alice(state), set(), 2, NOW)) == ["d1", "d2"]
    # Exactly as many idle devices as must go: all of them.
    assert revoked(rules.make_room_for_device(alice(state), {"d1", "d2"}, 3, NOW)) == ["d3"]


def test_at_the_cap_with_every_device_connected_the_login_is_refused() -> None:
    """No idle device to revoke: -32005, nothing revoked."""
    state = with_devices(alice=["d1", "d2"])
    with pytest.raises(RateLimited):
        rules.make_room_for_device(alice(state), {"d1", "d2"}, 2, NOW)


def test_admission_makes_room_again_against_the_writers_state() -> None:
    """Another node's login sends the revocation it decided (of d1, which a login
    admitted first has revoked already); the writer drops it and revokes its own
    oldest idle device instead, then admits the new one."""
    state = with_devices(alice=["d2", "d4"], bob=["b1"])
    batch: list[Event] = [DeviceRevoked(ALICE, DeviceId("d1"), NOW), authorized(ALICE, "d5", NOW)]
    admitted = rules.admit_all(state, batch, NOW + 1, lambda user: set(), 2)
    assert admitted == [DeviceRevoked(ALICE, DeviceId("d2"), NOW + 1), batch[1]]


def test_admission_keeps_a_revocation_of_a_user_not_logging_in() -> None:
    """A logout recorded on another node (no login of that user in the batch) is
    admitted as it came, beside another user's login."""
    state = with_devices(alice=["d1"], bob=["b1"])
    batch: list[Event] = [DeviceRevoked(BOB, DeviceId("b1"), NOW), authorized(ALICE, "d2", NOW)]
    assert rules.admit_all(state, batch, NOW, lambda user: set(), 5) == batch


def uploaded(file: str, size: int) -> FileUploaded:
    return FileUploaded(FileId(file), file, size, "text/plain", "0" * 64, ALICE, NOW)


def test_another_nodes_file_fills_the_servers_storage_exactly_and_no_more() -> None:
    """A file of exactly the server's quota fits an empty store; once it is full the
    next one is refused, with room for 0 bytes."""
    state = State(quotas=Quotas(storage=100))
    state.apply(UserRegistered(ALICE, "hash-alice", 0, 0))
    state.apply(rules.admit(state, uploaded("f1", 100), NOW))
    with pytest.raises(TooLarge) as refused:
        rules.admit(state, uploaded("f2", 1), NOW)
    assert refused.value.limit == 0


def test_admission_records_what_another_node_did_when_it_still_fits() -> None:
    """A device authorised or revoked, a presence, a stored file: admitted as they
    came; a registration is decided again (its newcomer marker is the writer's)."""
    state = with_devices(alice=["d1"])
    for event in (
        authorized(ALICE, "d2", NOW),
        DeviceRevoked(ALICE, DeviceId("d1"), NOW),
        UserSeen(ALICE, NOW),
        uploaded("f1", 10),
    ):
        assert rules.admit(state, event, NOW) is event
    registered = rules.admit(state, UserRegistered(BOB, "hash-bob", NOW - 5, 7), NOW)
    assert registered == UserRegistered(BOB, "hash-bob", NOW, 0)


def test_admission_refuses_what_no_longer_fits_the_writers_state() -> None:
    """A taken name, an unknown user, a device that exists or is gone, a file id
    taken, a file past the user's quota, and any other event: refused."""
    state = State(quotas=Quotas(user_storage=100))
    for done in (UserRegistered(ALICE, "h", 0, 0), authorized(ALICE, "d1", 1), uploaded("f1", 60)):
        state.apply(done)
    refused: list[tuple[Event, type[Exception]]] = [
        (UserRegistered(UserName("ALICE"), "h", NOW, 0), Conflict),
        (authorized(BOB, "b1", NOW), NotFound),
        (uploaded("f1", 1), Conflict),
        (authorized(ALICE, "d1", NOW), Conflict),
        (DeviceRevoked(ALICE, DeviceId("d9"), NOW), NotFound),
        (uploaded("f2", 41), TooLarge),
        (ReadMarkerMoved(ALICE, GENERAL, 0, NOW), Forbidden),
    ]
    for event, error in refused:
        with pytest.raises(error):
            rules.admit(state, event, NOW)
    assert rules.admit(state, uploaded("f2", 40), NOW) == uploaded("f2", 40)
    # The same name in another case is taken by its holder (not merely looks like it).
    with pytest.raises(Conflict, match=r"taken \(by 'alice'\)"):
        rules.admit(state, UserRegistered(UserName("Alice"), "h", NOW, 0), NOW)
