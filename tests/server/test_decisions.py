"""The decisions driven directly: a state folded from events, a fixed ``now`` and
counted ids. No server, no sockets, no clock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from server.auth import token_hash
from server.domain import commands
from server.domain.commands import (
    AddComment,
    Command,
    CreateGroup,
    CreateLink,
    DecideRequest,
    Edit,
    Invite,
    Join,
    MoveReadMarker,
    Report,
    Send,
)
from server.domain.decisions import Policy, decide
from server.domain.events import (
    DeviceAuthorized,
    Event,
    GroupCreated,
    JoinLinkCreated,
    JoinRequested,
    MemberJoined,
    MessageEdited,
    MessagePosted,
    MessageScheduled,
    ReadMarkerMoved,
    UserBanned,
    UserRegistered,
)
from server.domain.limits import Quotas
from server.domain.model import ChatId, CommentId, DeviceId, MessageId, ScheduledId, UserName
from server.domain.state import State
from server.errors import Banned, InvalidParams, NotFound, RateLimited, TooLarge, Unauthenticated

MINUTE = 60_000
NOW = 10 * MINUTE
POLICY = Policy(message_ttl_ms=MINUTE, rate_limit=100, report_threshold=2, ban_ms=MINUTE)


class CountedIds:
    """``Ids`` that count: the same sequence every time."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    def message(self) -> MessageId:
        return MessageId(f"m{next(self.count)}")

    def chat(self) -> ChatId:
        return ChatId(f"d{next(self.count)}")

    def group(self) -> ChatId:
        return ChatId(f"g{next(self.count)}")

    def scheduled(self) -> ScheduledId:
        return ScheduledId(f"s{next(self.count)}")

    def comment(self) -> CommentId:
        return CommentId(f"c{next(self.count)}")

    def link(self) -> str:
        return f"link{next(self.count)}"


def folded(*events: Event) -> State:
    state = State(history_size=20)
    for event in events:
        state.apply(event)
    return state


def user(name: str, at: int = 0) -> list[Event]:
    return [
        UserRegistered(UserName(name), f"hash-{name}", at, 0),
        DeviceAuthorized(UserName(name), DeviceId(f"{name}-d"), "phone", f"token-{name}", at),
    ]


ALICE, BOB = UserName("alice"), UserName("bob")
A, B = DeviceId("alice-d"), DeviceId("bob-d")


def applied(state: State, command: Command, now: int = NOW) -> tuple[list[Event], dict[str, Any]]:
    decision = decide(state, command, now, CountedIds(), POLICY)
    for event in decision.events:
        state.apply(event)
    return list(decision.events), decision.reply(state)


def test_a_send_decided_twice_gives_the_same_events_and_changes_nothing() -> None:
    """A decision is pure: the state is untouched, and deciding again repeats it."""
    state = folded(*user("alice"))
    command = Send(ALICE, A, "hello", chat="general", client_id="k1")
    first = decide(state, command, NOW, CountedIds(), POLICY)
    second = decide(state, command, NOW, CountedIds(), POLICY)
    assert first.events == second.events
    assert state.cursor == 2
    assert not state.messages
    (posted,) = first.events
    assert isinstance(posted, MessagePosted)
    assert (posted.message, posted.seq, posted.expires_at) == ("m1", 1, NOW + MINUTE)


def test_the_reply_shows_the_state_the_events_made() -> None:
    """The message view of a send is read from the state after its events."""
    state = folded(*user("alice"), *user("bob"))
    events, reply = applied(state, Send(ALICE, A, "hi @bob", to="bob"))
    assert [type(e).__name__ for e in events] == ["DirectChatOpened", "MessagePosted"]
    assert reply["message"] == {
        "id": "m2",
        "chat": "d1",
        "seq": 1,
        "author": "alice",
        "text": "hi @bob",
        "ts": NOW,
        "expires_at": NOW + MINUTE,
        "file": None,
        "comments": 0,
        "edited_at": None,
        "mentions": [],
    }


def test_a_repeated_client_id_answers_the_first_result_without_events() -> None:
    """send with a client_id already used: no event, the first message's view."""
    state = folded(*user("alice"))
    _, first = applied(state, Send(ALICE, A, "once", chat="general", client_id="k"))
    decision = decide(
        state, Send(ALICE, A, "once", chat="general", client_id="k"), NOW, CountedIds(), POLICY
    )
    assert decision.events == ()
    assert decision.reply(state) == first


def test_a_send_later_is_scheduled() -> None:
    """send_at in the future: a MessageScheduled and the scheduled view."""
    state = folded(*user("alice"))
    events, reply = applied(state, Send(ALICE, A, "later", chat="general", send_at=NOW + MINUTE))
    assert isinstance(events[0], MessageScheduled)
    assert reply["scheduled"] == {
        "id": "s1",
        "chat": "general",
        "text": "later",
        "file": None,
        "send_at": NOW + MINUTE,
    }


def test_a_logged_out_device_is_refused() -> None:
    """A command from a device that is not (or no longer) the user's: -32001."""
    state = folded(*user("alice"))
    with pytest.raises(Unauthenticated):
        decide(state, Send(ALICE, DeviceId("gone"), "x", chat="general"), NOW, CountedIds(), POLICY)


def test_read_marker_reply_with_and_without_an_event() -> None:
    """read moves the marker forward only; a backward read answers the marker as is."""
    state = folded(*user("alice"), *user("bob"))
    applied(state, Send(BOB, B, "one", chat="general"))
    events, reply = applied(state, MoveReadMarker(ALICE, A, "general", 1))
    assert events == [ReadMarkerMoved(ALICE, ChatId("general"), 1, NOW)]
    assert reply == {"chat": "general", "read_seq": 1}
    events, reply = applied(state, MoveReadMarker(ALICE, A, "general", 0))
    assert events == []
    assert reply == {"read_seq": 1, "chat": "general"}


def test_groups_links_and_requests() -> None:
    """create, link, join by link, approve: the events and the replies."""
    state = folded(*user("alice"), *user("bob"))
    events, reply = applied(state, CreateGroup(ALICE, A, "team"))
    assert events == [GroupCreated(ChatId("g1"), ALICE, "team", NOW)]
    assert reply["chat"]["id"] == "g1"
    assert reply["chat"]["owner"] == "alice"
    events, reply = applied(state, CreateLink(ALICE, A, "g1"))
    assert reply == {"link": "link1"}
    assert events == [JoinLinkCreated(ChatId("g1"), token_hash("link1"), NOW)]
    events, reply = applied(state, Join(BOB, B, "link1"))
    assert events == [JoinRequested(ChatId("g1"), BOB, NOW)]
    assert reply == {"status": "pending", "chat": {"id": "g1", "title": "team"}}
    with pytest.raises(NotFound):  # not a member yet: cannot tell the group from none
        decide(state, DecideRequest(BOB, B, "g1", "bob", True), NOW, CountedIds(), POLICY)
    events, _ = applied(state, DecideRequest(ALICE, A, "g1", "bob", True))
    assert events == [MemberJoined(ChatId("g1"), BOB, NOW)]


def test_comments_and_edits_of_an_expired_message_are_not_found() -> None:
    """A message whose expires_at has passed is gone for every decision."""
    state = folded(*user("alice"))
    applied(state, Send(ALICE, A, "short-lived", chat="general"), now=0)
    _, reply = applied(state, AddComment(ALICE, A, "m1", "nice"), now=MINUTE - 1)
    assert reply["comment"]["id"] == "c1"
    later = MINUTE  # expires_at == now: over
    for command in (AddComment(ALICE, A, "m1", "late"), Edit(ALICE, A, "m1", "new")):
        with pytest.raises(NotFound):
            decide(state, command, later, CountedIds(), POLICY)


def test_reports_ban_at_the_threshold() -> None:
    """Two distinct reporters (with weight) ban the user: the reply says it counted."""
    state = folded(*user("alice"), *user("bob"), *user("carol"))
    events, reply = applied(state, Report(ALICE, A, "carol", "spam"))
    assert reply == {"counted": True}
    assert len(events) == 1
    events, reply = applied(state, Report(BOB, B, "carol"))
    assert [type(e).__name__ for e in events] == ["UserReported", "UserBanned"]


def test_commands_travel_as_records() -> None:
    """A command goes to the writer as a JSON-ready record and comes back equal."""
    for command in (
        Send(ALICE, A, "t", chat="general", send_at=5, client_id="c"),
        DecideRequest(ALICE, A, "g1", "bob", False),
        Report(ALICE, A, "bob", None),
    ):
        assert commands.from_record(commands.to_record(command)) == command
    with pytest.raises(KeyError):
        commands.from_record({"type": "Shutdown"})


def test_a_send_at_now_is_posted_at_once() -> None:
    """send_at equal to now is not in the future: the message is posted, not scheduled."""
    state = folded(*user("alice"))
    events, reply = applied(state, Send(ALICE, A, "now", chat="general", send_at=NOW))
    (posted,) = events
    assert isinstance(posted, MessagePosted)
    assert reply["message"]["id"] == "m1"
    assert not state.scheduled


def test_an_edit_or_comment_whose_message_expired_before_the_reply_is_not_found() -> None:
    """The message was live when decided and expired before the events were applied
    (the executor reclaims between them): the reply says so, -32004."""
    state = folded(*user("alice"))
    applied(state, Send(ALICE, A, "short-lived", chat="general"), now=0)
    for command in (Edit(ALICE, A, "m1", "new"), AddComment(ALICE, A, "m1", "late")):
        decision = decide(state, command, MINUTE - 1, CountedIds(), POLICY)
        after = folded(*user("alice"))
        applied(after, Send(ALICE, A, "short-lived", chat="general"), now=0)
        after.expire(MINUTE)
        for event in decision.events:
            after.apply(event)
        with pytest.raises(NotFound):
            decision.reply(after)


def quota_state(quotas: Quotas, *texts: str) -> State:
    """alice with quotas, who posted ``texts`` (m1, m2, ...) to the general chat at 0."""
    state = State(quotas=quotas)
    for event in user("alice"):
        state.apply(event)
    for seq, text in enumerate(texts, 1):
        state.apply(MessagePosted(MessageId(f"m{seq}"), ChatId("general"), seq, ALICE, text, 0))
    return state


def edit_refused(state: State, text: str, now: int = NOW) -> bool:
    try:
        decide(state, Edit(ALICE, A, "m1", text), now, CountedIds(), POLICY)
    except TooLarge:
        return True
    return False


def test_an_edit_to_no_text_of_a_text_message_is_refused() -> None:
    """Only a message with a file may lose its text."""
    with pytest.raises(InvalidParams):
        decide(quota_state(Quotas(), "hi"), Edit(ALICE, A, "m1", ""), NOW, CountedIds(), POLICY)


def test_a_banned_author_cannot_edit() -> None:
    """A ban stops edits as it stops sends, until it ends."""
    state = quota_state(Quotas(), "hi")
    state.apply(UserBanned(ALICE, NOW + 1, NOW))
    with pytest.raises(Banned):
        decide(state, Edit(ALICE, A, "m1", "new"), NOW, CountedIds(), POLICY)
    assert decide(state, Edit(ALICE, A, "m1", "new"), NOW + 1, CountedIds(), POLICY).events


def test_an_edit_spends_the_flood_bucket_as_a_send_does() -> None:
    """One a second, a burst of one: an edit right after a send waits a second."""
    state = quota_state(Quotas(flood_rate=1.0, flood_burst=1))
    applied(state, Send(ALICE, A, "hi", chat="general"), now=NOW)
    with pytest.raises(RateLimited):
        decide(state, Edit(ALICE, A, "m1", "new"), NOW, CountedIds(), POLICY)
    assert decide(state, Edit(ALICE, A, "m1", "new"), NOW + 1000, CountedIds(), POLICY).events


def test_an_edit_may_grow_the_live_text_up_to_the_quota_and_no_further() -> None:
    """max_live_bytes 10: growing to exactly 10 passes, one byte past is refused; an
    edit that does not grow passes even above the quota (lowered since)."""
    limit = Quotas(max_live_bytes=10)
    assert not edit_refused(quota_state(limit, "123456789"), "1234567890")
    assert edit_refused(quota_state(limit, "123456789", "1"), "1234567890")
    assert edit_refused(quota_state(limit, "12345"), "12345678901")
    assert not edit_refused(quota_state(limit, "123456789", "1"), "12345")
    assert not edit_refused(quota_state(limit, "123456", "123456"), "abcdef")


def test_a_scheduled_send_counts_against_the_live_bytes_quota() -> None:
    """max_live_bytes 10 with 9 live: a send scheduled for later of 2 bytes is refused."""
    state = quota_state(Quotas(max_live_bytes=10), "123456789")
    with pytest.raises(TooLarge):
        decide(
            state, Send(ALICE, A, "12", chat="general", send_at=NOW + 1), NOW, CountedIds(), POLICY
        )


def test_an_owner_invites_once_an_interval_to_the_millisecond() -> None:
    """One invitation an hour: the next is refused half a second early, made on time."""
    state = quota_state(Quotas(invite_limit=1))
    for event in (*user("bob"), *user("carol")):
        state.apply(event)
    applied(state, CreateGroup(ALICE, A, "team"), now=0)
    applied(state, Invite(ALICE, A, "g1", "bob"), now=0)
    with pytest.raises(RateLimited):
        decide(state, Invite(ALICE, A, "g1", "carol"), 3_599_500, CountedIds(), POLICY)
    assert decide(state, Invite(ALICE, A, "g1", "carol"), 3_600_000, CountedIds(), POLICY).events


def test_edits_and_scheduled_sends_spend_the_flood_bucket_in_the_fold() -> None:
    """Folded, an edit and a scheduled send each move the author's bucket a second on."""
    state = quota_state(Quotas(flood_rate=1.0, flood_burst=1), "hi")
    account = state.user("alice")
    assert account is not None
    state.apply(MessageEdited(MessageId("m1"), ChatId("general"), ALICE, "new", NOW))
    assert account.flood_tat == NOW + 1000
    state.apply(
        MessageScheduled(ScheduledId("s1"), ChatId("general"), ALICE, "t", NOW + MINUTE, NOW)
    )
    assert account.flood_tat == NOW + 2000
