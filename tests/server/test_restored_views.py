"""What a start rebuilds from today's state, in the pure core: a snapshot keeps when a
user was last seen, and the resume window rebuilt after a restart tells nobody of an
edit to a message deleted since."""

from __future__ import annotations

from server.domain import rules, views
from server.domain.events import UserSeen
from server.domain.model import user_key
from server.domain.state import State
from tests.server.test_domain import post, register
from tests.server.test_snapshot import restored


def test_last_seen_survives_a_snapshot() -> None:
    """A user's last_seen is in the snapshot; a user never seen stays never seen."""
    state = State()
    alice, _ = register(state, "alice", "bob")
    state.apply(UserSeen(alice.name, 1234))
    again = restored(state)
    users = [again.user(name) for name in ("alice", "bob")]
    assert [user and user.last_seen for user in users] == [1234, None]


def test_an_edit_of_a_message_deleted_since_is_told_to_nobody() -> None:
    """Rebuilt after a restart, the edit of a message deleted later tells no one (its
    text is gone), while the deletion itself is told."""
    state = State()
    (alice,) = register(state, "alice")
    posted = post(state, alice, state.general, "oops")
    edited = rules.edit_message(state, alice, posted.message, text="oops!", now=1)
    state.apply(edited)
    state.apply(rules.delete_message(state, alice, posted.message, now=2))
    assert views.notifications(state, edited) == []
    assert views.told_until(state, edited) is None
    assert views.told_about(edited) == posted.message
    assert user_key("alice") in state.chats[posted.chat].read_markers
