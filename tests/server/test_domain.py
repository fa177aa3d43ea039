"""The pure core driven directly with an explicit clock: the fold, the rules, the
views, and the password and login-throttle helpers. No server, no sockets."""

from __future__ import annotations

import orjson
import pytest

from server.auth import LoginThrottle, hash_password, new_token, token_hash, verify_password
from server.domain import rules, views
from server.domain.events import (
    DeviceAuthorized,
    DeviceRevoked,
    DirectChatOpened,
    Event,
    MessagePosted,
    ReadMarkerMoved,
    Unfit,
    UnknownEventType,
    UserRegistered,
    decode_next,
    decode_stored,
    from_record,
    to_record,
)
from server.domain.model import (
    GENERAL,
    Chat,
    ChatId,
    DeviceId,
    Message,
    MessageId,
    ScheduledId,
    User,
    UserName,
    user_key,
)
from server.domain.state import CLIENT_IDS_PER_DEVICE, State
from server.errors import Conflict, Forbidden, InvalidParams, NotFound

MINUTE = 60_000


def register(state: State, *names: str, now: int = 0) -> list[User]:
    for name in names:
        state.apply(rules.register(state, name, f"hash-of-{name}", now))
    return [user for name in names if (user := state.user(name)) is not None]


def post(
    state: State, author: User, chat: Chat, text: str = "hi", *, now: int = 0, ttl_ms: int = 0
) -> MessagePosted:
    event = rules.post_message(
        state,
        author,
        chat,
        chat.id,
        text=text,
        now=now,
        message_id=MessageId(f"m{len(state.messages)}-{state.cursor}"),
        ttl_ms=ttl_ms,
    )
    state.apply(event)
    return event


def live(chat: Chat) -> list[Message]:
    """The chat's messages that have not expired, by seq."""
    return [message for message in chat.messages if message is not None]


def open_direct(state: State, user: User, peer: str, now: int = 0) -> Chat:
    chat, events = rules.direct_chat(state, user, peer, ChatId(f"d{state.cursor}"), now)
    for event in events:
        state.apply(event)
    found = state.direct_chat_between(user.name, state.users[user_key(peer)].name)
    assert found is not None
    assert chat is None or chat is found
    return found


# -- the fold -------------------------------------------------------------------


def test_apply_folds_events_into_users_devices_chats_and_cursor() -> None:
    """Each applied event advances the cursor by one and shows in the state's indexes."""
    state = State()
    assert state.apply(UserRegistered(UserName("Alice"), "h", 1)) == 1
    assert state.apply(DeviceAuthorized(UserName("Alice"), DeviceId("d1"), "phone", "t1", 2)) == 2
    assert state.apply(DeviceAuthorized(UserName("Alice"), DeviceId("d2"), "laptop", "t2", 3)) == 3
    alice = state.user("alice")
    assert alice is not None
    assert alice.name == "Alice"
    assert list(alice.chats) == [GENERAL]
    assert state.general.read_markers == {user_key("Alice"): 0}
    assert set(alice.devices) == {"d1", "d2"}
    assert state.devices_by_token["t1"].name == "phone"
    assert state.apply(DeviceRevoked(UserName("Alice"), DeviceId("d1"), 4)) == 4
    assert set(alice.devices) == {"d2"}
    assert "t1" not in state.devices_by_token
    assert state.cursor == 4


def test_replaying_the_same_events_builds_the_same_state() -> None:
    """The fold is deterministic: replaying recorded events rebuilds an equal state."""
    original = State()
    alice, bob = register(original, "alice", "bob")
    recorded: list[Event] = []
    chat = open_direct(original, alice, "bob")
    for n in range(3):
        recorded.append(post(original, bob, chat, f"m{n}", now=n))
    marker = rules.move_read_marker(original, alice, chat, 2, now=5)
    assert marker is not None
    original.apply(marker)
    replayed = State()
    everything: list[Event] = [
        UserRegistered(UserName("alice"), "hash-of-alice", 0),
        UserRegistered(UserName("bob"), "hash-of-bob", 0),
        DirectChatOpened(chat.id, alice.name, bob.name, 0),
        *recorded,
        marker,
    ]
    for event in everything:
        replayed.apply(from_record(to_record(event)))
    again = replayed.chats[chat.id]
    assert replayed.cursor == original.cursor
    assert again.read_markers == chat.read_markers
    assert [(m.seq, m.text, m.author) for m in live(again)] == [
        (m.seq, m.text, m.author) for m in live(chat)
    ]


def test_newcomer_unread_starts_history_size_messages_back() -> None:
    """A user registering late finds only the last history_size general messages unread."""
    state = State(history_size=3)
    (alice,) = register(state, "alice")
    for n in range(5):
        post(state, alice, state.general, f"m{n}")
    register(state, "bob")
    assert state.general.read_markers[user_key("bob")] == 2
    assert views.chat_view(state, state.general, user_key("bob"))["unread"] == 3


def test_client_ids_are_remembered_per_device_bounded_and_forgotten_on_revoke() -> None:
    """A send's client_id maps to its message per device, the oldest drop past the bound."""
    state = State()
    (alice,) = register(state, "alice")
    state.apply(DeviceAuthorized(alice.name, DeviceId("d1"), "phone", "t1", 0))
    device = alice.devices[DeviceId("d1")]
    for n in range(CLIENT_IDS_PER_DEVICE + 1):
        state.apply(
            rules.post_message(
                state,
                alice,
                state.general,
                GENERAL,
                text="x",
                now=0,
                message_id=MessageId(f"m{n}"),
                ttl_ms=0,
                device=device,
                client_id=f"c{n}",
            )
        )
    seen = state.client_ids[DeviceId("d1")]
    assert len(seen) == CLIENT_IDS_PER_DEVICE
    assert "c0" not in seen
    assert seen[f"c{CLIENT_IDS_PER_DEVICE}"] == f"m{CLIENT_IDS_PER_DEVICE}"
    state.apply(rules.revoke_device(device, 1))
    assert DeviceId("d1") not in state.client_ids


# -- events: the mapper between events and stored records ---------------------


@pytest.mark.parametrize(
    "event",
    [
        UserRegistered(UserName("alice"), "scrypt$...", 1),
        DeviceAuthorized(UserName("alice"), DeviceId("d"), "phone", "f00", 2),
        DeviceRevoked(UserName("alice"), DeviceId("d"), 3),
        DirectChatOpened(ChatId("c"), UserName("alice"), UserName("bob"), 4),
        MessagePosted(MessageId("m"), GENERAL, 1, UserName("alice"), "hi", 5),
        MessagePosted(MessageId("m"), GENERAL, 2, UserName("a"), "hé", 6, 7, DeviceId("d"), "cid"),
        ReadMarkerMoved(UserName("alice"), GENERAL, 1, 8),
    ],
    ids=lambda event: type(event).__name__,
)
def test_event_survives_to_record_and_back(event: Event) -> None:
    """Every event type maps to a record and back unchanged."""
    record = to_record(event)
    assert record["type"] == type(event).__name__
    assert None not in record.values()  # defaults are left out of the record
    assert from_record(record) == event


def test_unknown_record_type_is_refused() -> None:
    """A record of a type this code does not know raises UnknownEventType."""
    with pytest.raises(UnknownEventType, match="'MessageTeleported'"):
        from_record({"type": "MessageTeleported", "at": 1})


def test_a_record_with_a_field_its_event_does_not_have_is_refused() -> None:
    """A field this code does not know (a newer server's record) raises TypeError naming
    it, rather than being dropped; the cursor ``c`` is not a field, and is ignored."""
    record = to_record(UserRegistered(UserName("alice"), "hash", 1)) | {"c": 7}
    assert from_record(record) == UserRegistered(UserName("alice"), "hash", 1)
    assert record["c"] == 7  # the record is left as it was
    with pytest.raises(TypeError, match="'colour'"):
        from_record(record | {"colour": "blue"})
    with pytest.raises(KeyError, match="'password_hash'"):
        from_record({"type": "UserRegistered", "user": "alice", "at": 1})


# -- the rules --------------------------------------------------------------------


@pytest.mark.parametrize("taken", ["alice", "ALICE", "aLiCe"])
def test_register_refuses_a_taken_name_case_insensitively(taken: str) -> None:
    """Registering a name that differs from an existing one only in case is a Conflict."""
    state = State()
    register(state, "Alice")
    with pytest.raises(Conflict, match="taken"):
        rules.register(state, taken, "h", 1)
    assert len(state.users) == 1


def test_post_message_seq_is_contiguous_even_after_expiry() -> None:
    """Messages get seq 1, 2, 3... per chat; expiry of old ones does not reuse or skip a seq."""
    state = State()
    alice, bob = register(state, "alice", "bob")
    assert [post(state, alice, state.general, now=n, ttl_ms=MINUTE).seq for n in range(3)] == [
        1,
        2,
        3,
    ]
    direct = open_direct(state, alice, "bob")
    assert post(state, bob, direct).seq == 1  # each chat counts on its own
    state.expire(now=2 + MINUTE)
    assert state.general.first_seq == 4
    assert live(state.general) == []
    assert post(state, bob, state.general, now=3 + MINUTE).seq == 4
    message = state.general.message_at(4)
    assert message is not None
    assert message.author == "bob"


def test_post_message_by_a_non_member_is_forbidden() -> None:
    """Posting into a chat you are not a member of is refused before any event exists."""
    state = State()
    alice, _, carol = register(state, "alice", "bob", "carol")
    direct = open_direct(state, alice, "bob")
    with pytest.raises(Forbidden):
        post(state, carol, direct)
    assert live(direct) == []


def test_find_chat_does_not_tell_a_private_chat_from_no_chat() -> None:
    """A non-member asking for a direct chat gets the same NotFound as for an unknown id."""
    state = State()
    alice, _, carol = register(state, "alice", "bob", "carol")
    direct = open_direct(state, alice, "bob")
    assert rules.find_chat(state, alice, direct.id) is direct
    with pytest.raises(NotFound) as hidden:
        rules.find_chat(state, carol, direct.id)
    with pytest.raises(NotFound) as unknown:
        rules.find_chat(state, carol, "no-such-chat")
    assert str(hidden.value).replace(direct.id, "?") == str(unknown.value).replace(
        "no-such-chat", "?"
    )


def test_move_read_marker_only_forward_and_never_past_the_last_message() -> None:
    """The marker moves forward with an event; back or same is a no-op; past the end is refused."""
    state = State()
    alice, bob, _ = register(state, "alice", "bob", "carol")
    for _ in range(3):
        post(state, bob, state.general)
    moved = rules.move_read_marker(state, alice, state.general, 2, now=7)
    assert moved == ReadMarkerMoved(alice.name, GENERAL, 2, 7)
    state.apply(moved)
    assert state.general.read_markers[user_key("alice")] == 2
    assert rules.move_read_marker(state, alice, state.general, 2, now=8) is None
    assert rules.move_read_marker(state, alice, state.general, 1, now=8) is None
    with pytest.raises(InvalidParams, match="at most 3, but got 4"):
        rules.move_read_marker(state, alice, state.general, 4, now=8)
    assert state.general.read_markers[user_key("alice")] == 2
    assert state.general.read_markers[user_key("carol")] == 0  # markers are per user


def test_posting_reads_the_chat_for_its_author() -> None:
    """Your own message is never unread to you: posting moves your marker to it."""
    state = State()
    alice, bob = register(state, "alice", "bob")
    post(state, bob, state.general)
    post(state, alice, state.general)
    assert state.general.read_markers == {user_key("alice"): 2, user_key("bob"): 1}
    assert views.chat_view(state, state.general, user_key("alice"))["unread"] == 0


def test_direct_chat_is_created_once_then_reused_from_either_side() -> None:
    """The first direct_chat yields DirectChatOpened; later calls, either way round, reuse it."""
    state = State()
    alice, bob = register(state, "alice", "Bob")
    chat, events = rules.direct_chat(state, alice, "bob", ChatId("c1"), now=5)
    assert chat is None
    assert events == [DirectChatOpened(ChatId("c1"), alice.name, bob.name, 5)]
    state.apply(events[0])
    for user, peer in [(alice, "BOB"), (bob, "alice"), (bob, "ALICE")]:
        again, more = rules.direct_chat(state, user, peer, ChatId("c2"), now=6)
        assert more == []
        assert again is state.chats[ChatId("c1")]
    assert ChatId("c2") not in state.chats
    assert list(alice.chats) == [GENERAL, ChatId("c1")]
    assert list(bob.chats) == [GENERAL, ChatId("c1")]


def test_first_direct_message_opens_the_chat_and_gets_seq_one() -> None:
    """Sending to a user without a chat yet: the open event and the message at seq 1 together."""
    state = State()
    alice, _ = register(state, "alice", "bob")
    _, events = rules.direct_chat(state, alice, "bob", ChatId("c1"), now=1)
    posted = rules.post_message(
        state, alice, None, ChatId("c1"), text="hi", now=1, message_id=MessageId("m"), ttl_ms=0
    )
    assert posted.seq == 1
    for event in [*events, posted]:
        state.apply(event)
    assert state.chats[ChatId("c1")].last_seq == 1


@pytest.mark.parametrize("me", ["alice", "ALICE"])
def test_direct_chat_with_yourself_is_refused(me: str) -> None:
    """A direct chat needs another user: asking for yourself (any case) is InvalidParams."""
    state = State()
    (alice,) = register(state, "alice")
    with pytest.raises(InvalidParams, match="yourself"):
        rules.direct_chat(state, alice, me, ChatId("c"), now=0)


def test_direct_chat_with_an_unknown_user_is_not_found() -> None:
    """A direct chat with a name nobody registered is NotFound."""
    state = State()
    (alice,) = register(state, "alice")
    with pytest.raises(NotFound):
        rules.direct_chat(state, alice, "nobody", ChatId("c"), now=0)


# -- expiry -----------------------------------------------------------------------


def test_expire_drops_exactly_the_messages_whose_lifetime_is_over() -> None:
    """At ``now`` messages with expires_at <= now are gone from the chat and the index."""
    state = State()
    (alice,) = register(state, "alice")
    posted = [
        post(state, alice, state.general, f"m{n}", now=n * 1000, ttl_ms=MINUTE) for n in (0, 1, 2)
    ]
    state.expire(now=MINUTE - 1)
    assert [m.seq for m in live(state.general)] == [1, 2, 3]
    state.expire(now=1000 + MINUTE)  # the boundary: expires_at == now is over
    assert [m.seq for m in live(state.general)] == [3]
    assert state.general.message_at(2) is None
    assert set(state.messages) == {posted[2].message}
    assert views.notification(state, posted[0]) is None  # nothing to tell of a gone message


def test_messages_without_ttl_never_expire() -> None:
    """A message posted with ttl 0 has no expires_at and survives any ``now``."""
    state = State()
    (alice,) = register(state, "alice")
    event = post(state, alice, state.general, ttl_ms=0)
    assert event.expires_at is None
    state.expire(now=2**62)
    assert [m.seq for m in live(state.general)] == [1]


def test_expired_message_behind_a_longer_lived_one_is_dropped() -> None:
    """A message past its lifetime is dropped even when an older one lives longer (ttl changed)."""
    state = State()
    (alice,) = register(state, "alice")
    post(state, alice, state.general, "kept forever", now=0, ttl_ms=0)  # a run with ttl 0
    post(state, alice, state.general, "one minute", now=1, ttl_ms=MINUTE)  # then ttl 60 s
    (bob,) = register(state, "bob")
    state.expire(now=2 * MINUTE)
    assert [m.text for m in live(state.general)] == ["kept forever"]
    assert state.general.message_at(2) is None
    assert views.chat_view(state, state.general, user_key("bob"))["unread"] == 1
    assert post(state, bob, state.general, now=2 * MINUTE).seq == 3  # seq is not reused


# -- views ------------------------------------------------------------------------


def test_chat_view_counts_unread_after_the_marker() -> None:
    """unread is the number of live messages after the viewer's read marker."""
    state = State()
    alice, bob = register(state, "alice", "bob")
    for n in range(5):
        post(state, bob, state.general, now=n, ttl_ms=MINUTE)
    marker = rules.move_read_marker(state, alice, state.general, 2, now=5)
    assert marker is not None
    state.apply(marker)
    view = views.chat_view(state, state.general, user_key("alice"))
    assert view == {
        "id": "general",
        "kind": "general",
        "title": "general",
        "owner": None,
        "unread": 3,
        "read_seq": 2,
        "last_seq": 5,
        "mentions": 0,
    }
    assert views.chat_view(state, state.general, user_key("bob"))["unread"] == 0  # his own
    register(state, "carol")  # a newcomer: all 5 (fewer than history_size) are unread
    assert views.chat_view(state, state.general, user_key("carol"))["unread"] == 5
    state.expire(now=3 + MINUTE)  # seqs 1-4 expire; only seq 5 is left
    assert views.chat_view(state, state.general, user_key("alice"))["unread"] == 1
    assert views.chat_view(state, state.general, user_key("carol"))["unread"] == 1


def test_chat_view_of_a_direct_chat_is_titled_with_the_peer() -> None:
    """Each side of a direct chat sees the other user's name as its title."""
    state = State()
    alice, _ = register(state, "alice", "Bob")
    direct = open_direct(state, alice, "bob")
    post(state, alice, direct)
    as_alice = views.chat_view(state, direct, user_key("alice"))
    as_bob = views.chat_view(state, direct, user_key("bob"))
    assert (as_alice["kind"], as_alice["title"], as_alice["unread"]) == ("direct", "Bob", 0)
    assert (as_bob["title"], as_bob["unread"], as_bob["last_seq"]) == ("alice", 1, 1)


def test_notification_audiences() -> None:
    """general -> EVERYONE; direct -> both users; read -> that user; others are silent."""
    state = State()
    alice, bob, _ = register(state, "alice", "bob", "carol")
    general = post(state, alice, state.general, "to all", now=10)
    told = views.notification(state, general)
    assert told is not None
    audience, method, params = told
    assert audience is views.EVERYONE
    assert method == "message"
    assert params["message"]["text"] == "to all"
    assert params["message"]["seq"] == 1
    direct = open_direct(state, alice, "bob")
    told = views.notification(state, post(state, alice, direct, "just us"))
    assert told is not None
    assert told[0] == frozenset({user_key("alice"), user_key("bob")})
    marker = rules.move_read_marker(state, bob, state.general, 1, now=11)
    assert marker is not None
    state.apply(marker)
    assert views.notification(state, marker) == (
        frozenset({user_key("bob")}),
        "read",
        {"chat": "general", "read_seq": 1},
    )
    assert views.notification(state, UserRegistered(UserName("carol"), "h", 0)) is None


def test_message_view_has_the_contract_fields() -> None:
    """A message renders with exactly the contract's fields."""
    state = State()
    (alice,) = register(state, "alice")
    event = post(state, alice, state.general, "hé", now=42, ttl_ms=MINUTE)
    assert views.message_view(state, state.messages[event.message]) == {
        "id": event.message,
        "chat": "general",
        "seq": 1,
        "author": "alice",
        "text": "hé",
        "ts": 42,
        "expires_at": 42 + MINUTE,
        "file": None,
        "comments": 0,
        "edited_at": None,
        "mentions": [],
    }


# -- auth -------------------------------------------------------------------------


def test_password_hash_verifies_only_the_same_password() -> None:
    """A stored scrypt hash accepts its password and refuses any other; salts differ."""
    stored = hash_password("correct horse", 2**4)
    assert stored.startswith("scrypt$16$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("Correct horse", stored)
    assert hash_password("correct horse", 2**4) != stored


@pytest.mark.parametrize("stored", ["", "plain", "md5$1$8$1$c2FsdA$a2V5", "scrypt$16$8$1"])
def test_malformed_stored_hash_verifies_nothing(stored: str) -> None:
    """A stored hash of another scheme or shape refuses every password."""
    assert not verify_password("password1", stored)


def test_token_is_stored_only_as_its_hash() -> None:
    """new_token gives a fresh token and the hash it is looked up by."""
    token, stored = new_token()
    other, _ = new_token()
    assert token != other
    assert len(token) == 43  # 256 bits, base64url, unpadded
    assert stored == token_hash(token)
    assert token not in stored


def test_login_throttle_backs_off_after_free_failures_and_doubles() -> None:
    """After ``free`` failures a name waits ``backoff``, doubling per failure up to the ceiling."""
    throttle = LoginThrottle(free=3, backoff=1.0, ceiling=5.0)
    throttle.failed("alice", now=100.0)
    throttle.failed("alice", now=100.0)
    assert throttle.retry_after("alice", now=100.0) == 0
    throttle.failed("alice", now=100.0)
    assert throttle.retry_after("alice", now=100.0) == 1.0
    assert throttle.retry_after("alice", now=100.5) == 0.5
    assert throttle.retry_after("alice", now=101.0) == 0
    throttle.failed("alice", now=101.0)
    assert throttle.retry_after("alice", now=101.0) == 2.0
    throttle.failed("alice", now=103.0)
    assert throttle.retry_after("alice", now=103.0) == 4.0
    throttle.failed("alice", now=107.0)
    assert throttle.retry_after("alice", now=107.0) == 5.0  # the ceiling
    assert throttle.retry_after("bob", now=107.0) == 0  # per name


def test_login_throttle_resets_on_success() -> None:
    """A successful login forgets the failures: the next failure is free again."""
    throttle = LoginThrottle(free=2, backoff=1.0)
    for _ in range(4):
        throttle.failed("alice", now=0.0)
    assert throttle.retry_after("alice", now=0.0) > 0
    throttle.succeeded("alice")
    assert throttle.retry_after("alice", now=0.0) == 0
    throttle.failed("alice", now=0.0)
    assert throttle.retry_after("alice", now=0.0) == 0


def test_login_throttle_forgets_the_least_recently_failed_past_capacity() -> None:
    """Past ``capacity`` names, the one whose last failure is oldest is dropped."""
    throttle = LoginThrottle(free=1, backoff=10.0, capacity=2)
    throttle.failed("a", now=0.0)
    throttle.failed("b", now=0.0)
    throttle.failed("a", now=1.0)  # a is active again: b is now the oldest
    throttle.failed("c", now=1.0)
    assert throttle.retry_after("b", now=1.0) == 0
    assert throttle.retry_after("a", now=1.0) > 0
    assert throttle.retry_after("c", now=1.0) > 0


def test_login_throttle_counts_attempts_still_being_checked() -> None:
    """At most ``free`` password checks of one name run at once; the next waits a backoff."""
    throttle = LoginThrottle(free=2, backoff=1.0)
    with throttle.checking("alice"), throttle.checking("alice"):
        assert throttle.retry_after("alice", now=0.0) == 1.0
        assert throttle.retry_after("bob", now=0.0) == 0
    assert throttle.retry_after("alice", now=0.0) == 0


# -- scheduled messages ------------------------------------------------------------


def schedule(state: State, author: User, text: str, send_at: int) -> str:
    event = rules.schedule_message(
        state,
        author,
        GENERAL,
        text=text,
        file=None,
        send_at=send_at,
        now=0,
        scheduled_id=ScheduledId(f"s-{text}"),
        device=None,
        client_id=None,
    )
    state.apply(event)
    return event.scheduled


def test_due_is_a_query_and_the_fold_alone_takes_what_was_posted_or_cancelled() -> None:
    """``due`` lists what is due, soonest first, changing nothing; posting and
    cancelling (the fold) take entries off, so the next due time is a pending one's."""
    state = State()
    (alice,) = register(state, "alice")
    for text, at in (("c", 3 * MINUTE), ("a", MINUTE), ("b", 2 * MINUTE), ("later", 9 * MINUTE)):
        schedule(state, alice, text, at)
    heap_before = list(state.schedule)
    assert [p.text for p in state.due(2 * MINUTE)] == ["a", "b"]
    assert [p.text for p in state.due(2 * MINUTE)] == ["a", "b"]  # asked twice: same
    assert state.schedule == heap_before
    state.apply(rules.cancel_scheduled(state, alice, "s-a", MINUTE))
    assert state.next_due() == 2 * MINUTE
    events = rules.post_due(state, 3 * MINUTE, lambda: MessageId(f"m{state.cursor}"), 0)
    assert [e.text for e in events if isinstance(e, MessagePosted)] == ["b", "c"]
    assert state.next_due() == 2 * MINUTE  # deciding changed nothing...
    for event in events:
        state.apply(event)
    assert state.next_due() == 9 * MINUTE  # ...folding did
    assert [p.text for p in state.due(10 * MINUTE)] == ["later"]


def test_many_due_at_once_are_posted_in_slices_in_order() -> None:
    """Past ``limit`` due at once, each decision posts the soonest ``limit``; the next
    one goes on from there, so the loop is free between slices and nothing is lost."""
    state = State()
    (alice,) = register(state, "alice")
    for index in range(7):
        schedule(state, alice, f"m{index}", MINUTE + index)
    posted: list[str] = []
    while state.due(2 * MINUTE):
        events = rules.post_due(state, 2 * MINUTE, lambda: MessageId(f"m{state.cursor}"), 0, 3)
        assert len(events) <= 3
        for event in events:
            state.apply(event)
            assert isinstance(event, MessagePosted)
            posted.append(event.text)
    assert posted == [f"m{index}" for index in range(7)]
    assert [m.seq for m in live(state.general)] == list(range(1, 8))


# -- decode_stored: a stored record's JSON straight into its event -----------------


def stored(record: dict[str, object]) -> bytes:
    return orjson.dumps(record)


def test_decode_stored_reads_the_cursor_off_the_end_and_the_event_typed() -> None:
    """The store writes the cursor last: the fast path gives the same event as the
    dict mapper, and the cursor as an int."""
    event = MessagePosted(MessageId("m"), GENERAL, 2, UserName("a"), "hé", 6, 7, DeviceId("d"))
    body = stored({**to_record(event), "c": 41})
    assert decode_stored(body) == (41, event)


def test_decode_stored_takes_the_cursor_wherever_it_is() -> None:
    """A record whose cursor is not last (or that has none, an older log's snapshot
    head) takes the general path, with the same result."""
    event = ReadMarkerMoved(UserName("alice"), GENERAL, 3, 8)
    assert decode_stored(stored({"c": 5, **to_record(event)})) == (5, event)
    assert decode_stored(stored({"c": 1, **to_record(event)})) == (1, event)  # the first
    assert decode_stored(stored({**to_record(event), "c": 1})) == (1, event)
    assert decode_stored(stored(to_record(event))) == (None, event)


@pytest.mark.parametrize(
    "text", ['x,"c":5}', ',"c":9', '"c":1}', "\\", "a\nb", '{"c":2}'], ids=repr
)
def test_decode_stored_is_not_fooled_by_a_text_that_looks_like_a_cursor(text: str) -> None:
    """A message text ending like a cursor is inside a JSON string, where its quotes
    are escaped: the cursor read off the end is the record's own."""
    event = MessagePosted(MessageId("m"), GENERAL, 1, UserName("a"), text, 6)
    assert decode_stored(stored({**to_record(event), "c": 12})) == (12, event)


@pytest.mark.parametrize("cursor_last", [True, False], ids=["fast-path", "general-path"])
@pytest.mark.parametrize(
    ("record", "said"),
    [
        ({"type": "UserSeen", "user": "alice", "at": 1, "colour": "blue"}, "colour"),
        ({"type": "UserSeen", "user": 5, "at": 1}, "$.user"),
        ({"type": "UserSeen", "user": "alice", "at": 1.5}, "$.at"),
        ({"type": "UserSeen", "at": 1}, "user"),
        ({"type": "MessageTeleported", "at": 1}, "MessageTeleported"),
        (
            {
                "type": "ReadMarkerMoved",
                "user": "a",
                "chat": "c",
                "seq": 1,
                "at": 1,
                "mentions": None,
            },
            "mentions",
        ),
    ],
    ids=[
        "unknown-field",
        "wrong-type",
        "float-for-int",
        "missing-field",
        "unknown-type",
        "another-events-field",
    ],
)
def test_decode_stored_refuses_what_is_not_an_event_on_either_path(
    record: dict[str, object], said: str, cursor_last: bool
) -> None:
    """Not an event (a newer server's field, a wrong type, a field missing): an Unfit
    saying what and naming the record's type, the cursor still read, on the fast path
    and the general one alike; never dropped silently."""
    body = stored({**record, "c": 7} if cursor_last else {"c": 7, **record})
    cursor, event = decode_stored(body)
    assert cursor == 7
    assert isinstance(event, Unfit)
    assert said in event.error
    assert str(record["type"]) in event.error


def test_decode_stored_refuses_a_cursor_that_is_not_an_integer() -> None:
    cursor, event = decode_stored(stored({"type": "UserSeen", "user": "a", "at": 1, "c": "7"}))
    assert cursor is None  # none to skip the record by
    assert isinstance(event, Unfit)
    assert "cursor" in event.error


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"[1, 2]", "Expected a JSON object, but got list"),
        (b"not json", "invalid literal"),
        (b"", "empty document"),
        (b'{"type": "UserSeen",', "unexpected end of data"),
        (b'{"type":"UserSeen","user":"a",,"c":3}', "JSON is malformed"),
    ],
)
def test_decode_stored_raises_valueerror_for_what_is_no_json_object(body: bytes, said: str) -> None:
    """Not JSON, or not an object (the reader refuses the start, naming the record)."""
    with pytest.raises(ValueError, match=said):
        decode_stored(body)


def test_an_event_is_frozen_and_its_record_leaves_defaults_out() -> None:
    event = UserRegistered(UserName("alice"), "hash", 1)
    with pytest.raises(AttributeError):
        event.at = 2  # type: ignore[misc]
    assert to_record(event) == {
        "type": "UserRegistered",
        "user": "alice",
        "password_hash": "hash",
        "at": 1,
    }


@pytest.mark.parametrize("cursor", [b"07", b"00", b"0012"])
def test_decode_stored_refuses_a_cursor_with_a_leading_zero_as_no_json(cursor: bytes) -> None:
    """``"c":07`` is no JSON number (RFC 8259 section 6): refused on the fast path as
    the general path refuses it, not read as cursor 7."""
    body = b'{"type":"UserSeen","user":"a","at":1,"c":%b}' % cursor
    with pytest.raises(ValueError, match="leading zero"):
        orjson.loads(body)
    with pytest.raises(ValueError, match="leading zero"):
        decode_stored(body)


# -- decode_next: a replay's hot path, the record it expects or None ----------------


@pytest.mark.parametrize("text", ["hé", 'x,"c":5}', '"c":12}', "\\", "a\nb"], ids=repr)
def test_decode_next_gives_the_event_of_the_record_it_expects(text: str) -> None:
    """The record of cursor 12 as the store writes it: the same event as
    ``decode_stored``, whatever the text looks like."""
    event = MessagePosted(MessageId("m"), GENERAL, 2, UserName("a"), text, 6, 7, DeviceId("d"))
    body = stored({**to_record(event), "c": 12})
    assert decode_next(body, 12) == event == decode_stored(body)[1]


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"UserSeen","user":"a","at":1,"c":11}',  # the one before
        b'{"type":"UserSeen","user":"a","at":1,"c":13}',  # the one after
        b'{"type":"UserSeen","user":"a","at":1,"c":112}',  # ends like it
        b'{"type":"UserSeen","user":"a","at":1,"c":012}',  # no JSON number
        b'{"type":"UserSeen","user":"a","at":1,"c": 12}',
        b'{"c":12,"type":"UserSeen","user":"a","at":1}',  # not last
        b'{"type":"UserSeen","user":"a","at":1,"c":12} ',
        b'{"type":"UserSeen","user":"a","at":1,"colour":"blue","c":12}',  # no event
        b'{"type":"UserSeen","user":"a","at":1,"c":5,"c":12}',
        b'{"type":"UserSeen","user":"a","at":1,,"c":12}',  # no JSON
        b'{,"c":12}',
    ],
    ids=repr,
)
def test_decode_next_leaves_anything_else_to_decode_stored(body: bytes) -> None:
    """Not plainly the record of cursor 12 (another cursor, another spelling of it,
    not last, not an event, not JSON): None, never a guess."""
    assert decode_next(body, 12) is None
