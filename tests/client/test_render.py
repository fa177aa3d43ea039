"""What the client prints: pure functions of wire objects and ``now``."""

from __future__ import annotations

import datetime

import pytest

from client.errors import RpcError
from client.model import Chat, ChatId
from client.render import (
    banned_line,
    clock_time,
    device_lines,
    duration,
    error_text,
    join_request_line,
    message_line,
    plain,
    request_rows,
    scheduled_line,
    scheduled_rows,
    size_text,
    status_line,
)
from wire import ErrorCode

UTC = datetime.UTC
NOW = datetime.datetime(2025, 3, 4, 12, 0, tzinfo=UTC).timestamp()


def ms(hour: int, minute: int, day: int = 4) -> int:
    return int(datetime.datetime(2025, 3, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def text_message(text: str, **extra: object) -> dict[str, object]:
    return {
        "id": "m1",
        "chat": "general",
        "seq": 12,
        "author": "bob",
        "text": text,
        "ts": ms(11, 58),
        "expires_at": None,
        "file": None,
        "comments": 0,
        **extra,
    }


def test_a_message_shows_time_short_id_author_and_text() -> None:
    """``11:58 general#12 bob: hello``: the short id is what commands accept."""
    assert plain(message_line(text_message("hello"), "general", NOW, UTC)) == (
        "11:58 general#12 bob: hello"
    )


def test_an_older_message_shows_its_date() -> None:
    """Only today's messages go without a date."""
    assert clock_time(ms(23, 5, day=3), NOW, UTC) == "2025-03-03 23:05"


def test_control_characters_cannot_reach_the_terminal() -> None:
    """Escape sequences in a text are neutralised; a newline becomes an indented line."""
    line = plain(message_line(text_message("\x1b[2Jgone\nsecond"), "general", NOW, UTC))
    assert "\x1b" not in line
    assert line.endswith("\N{REPLACEMENT CHARACTER}[2Jgone\n    second")


def test_files_and_comments_are_mentioned() -> None:
    """A message with a file says its name, size and how to /get it; then its comments."""
    message = text_message("see", file={"name": "a.txt", "size": 3}, comments=2)
    assert plain(message_line(message, "general", NOW, UTC)).endswith(
        "see [file a.txt, 3 bytes: /get general#12] (2 comments)"
    )


def test_a_file_name_cannot_reach_the_terminal_either() -> None:
    """Control characters in a file's name are neutralised like those of a text."""
    message = text_message("", file={"name": "\x1b]0;pwned\x07.txt", "size": 1})
    assert "\x1b" not in plain(message_line(message, "general", NOW, UTC))


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (5000, "4.9 KiB"),
        (5 * 2**20, "5 MiB"),
        (int(2.5 * 2**20), "2.5 MiB"),
        (3 * 2**30, "3 GiB"),
    ],
)
def test_sizes_read_in_the_unit_that_fits(size: int, text: str) -> None:
    """Bytes below a KiB, then KiB, MiB, GiB with one decimal, none when it is .0."""
    assert size_text(size) == text


def test_a_scheduled_message_shows_its_short_id_time_and_how_to_cancel() -> None:
    """``Scheduled 3f9a2c for 14:30 in general: text (/cancel 3f9a2c)``."""
    scheduled = {
        "id": "3f9a2c77e1d04b10",
        "chat": "general",
        "text": "later",
        "file": None,
        "send_at": ms(14, 30),
    }
    assert plain(scheduled_line(scheduled, "general", NOW, UTC)) == (
        "Scheduled 3f9a2c for 14:30 in general: later (/cancel 3f9a2c)"
    )


def test_a_ban_says_until_when_in_local_time_and_for_how_long() -> None:
    """The banned event reads as the time it ends and the wait, like the -32005 error."""
    assert plain(banned_line(ms(16, 0), NOW, UTC)) == (
        "You are banned until 16:00 (4 h from now): you cannot send or comment until then."
    )


def test_a_join_request_tells_the_owner_how_to_answer() -> None:
    """The owner reads who asks and the two commands that answer."""
    assert plain(join_request_line("book_club", "carol")) == (
        "carol asks to join book_club: /approve book_club @carol or /decline book_club @carol"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 s"),
        (45, "45 s"),
        (49.0000001, "49 s"),
        (61, "1 min 1 s"),
        (120, "2 min"),
        (3600, "1 h"),
        (14_340, "3 h 59 min"),
    ],
)
def test_waits_read_like_a_person_says_them(seconds: float, text: str) -> None:
    """Durations to the second under an hour, rounded up, never promising too early a
    retry."""
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("code", "message", "data", "text"),
    [
        (
            ErrorCode.RATE_LIMITED,
            "slow down",
            {"retry_after": 90.5},
            "Rate limited: try again in 1 min 31 s (at 12:01:31).",
        ),
        (
            ErrorCode.RATE_LIMITED,
            "slow down",
            {"retry_after": 120},
            "Rate limited: try again in 2 min (at 12:02).",
        ),
        (
            ErrorCode.BANNED,
            "banned",
            {"until": ms(16, 0)},
            "You are banned until 16:00 (4 h from now).",
        ),
        (
            ErrorCode.FORBIDDEN,
            "You are not a member of chat 'g1'",
            None,
            "Not allowed: You are not a member of chat 'g1'",
        ),
        (ErrorCode.NOT_FOUND, "No user 'carol'", None, "Not found: No user 'carol'"),
        (ErrorCode.TOO_LARGE, "big", {"max": 5}, "Too large: the server takes at most 5 bytes."),
        (
            ErrorCode.TOO_LARGE,
            "big",
            {"max": 5 * 2**20},
            "Too large: the server takes at most 5 MiB.",
        ),
        (ErrorCode.METHOD_NOT_FOUND, "nope", None, "This server does not support send."),
        (
            ErrorCode.INTERNAL_ERROR,
            "oops",
            None,
            "The server failed on that request (internal error); try again.",
        ),
        (-1, "odd", None, "Server error -1: odd"),
    ],
)
def test_each_error_is_one_line_a_person_understands(
    code: int, message: str, data: object, text: str
) -> None:
    """Every code of the contract reads as a sentence; retry and ban times are spelled out."""
    assert error_text(RpcError(code, message, data, "send"), NOW, UTC) == text


def test_a_rate_limit_ending_on_the_minute_says_that_minute() -> None:
    """49 s before 04:45:00 reads "in 49 s (at 04:45)", not 04:46."""
    now = datetime.datetime(2025, 3, 4, 4, 44, 11, tzinfo=UTC).timestamp()
    error = RpcError(ErrorCode.RATE_LIMITED, "slow down", {"retry_after": 49}, "send")
    assert error_text(error, now, UTC) == "Rate limited: try again in 49 s (at 04:45)."
    # Seen 4 ms after the server said it: still 04:45, and the wait still 49 s.
    error = RpcError(ErrorCode.RATE_LIMITED, "slow down", {"retry_after": 48.996}, "send")
    assert error_text(error, now + 0.008, UTC) == "Rate limited: try again in 49 s (at 04:45)."


def test_the_status_line_shows_the_open_chat_and_those_with_unread() -> None:
    """Numbered for Alt-1..9; quiet chats left out; mentions and DMs stand out; the
    connection and what waits for it."""
    chats = [
        Chat(ChatId("general"), "general", "general", unread=2, mentions=1),
        Chat(ChatId("d1"), "direct", "bob", unread=1),
        Chat(ChatId("g1"), "group", "club"),
        Chat(ChatId("g2"), "group", "quiet", unread=3),
    ]
    line = status_line(chats, "g1", connected=False, queued=2)
    assert plain(line) == (
        " 1:general 2 (1 @) 2:@bob 1 3:+club 4:+quiet 3"
        "  reconnecting\N{HORIZONTAL ELLIPSIS}, 2 queued"
    )
    styles = {text.strip(): style for style, text in line}
    assert styles["2 (1 @)"] == styles["1"] == "class:status.attention"
    assert styles["3"] == "class:status.unread"
    assert plain(status_line(chats[2:3], "g1", connected=True, queued=0)) == " 1:+club"


def test_a_message_that_wants_attention_is_highlighted() -> None:
    """A mention or a DM: the author and text in the mention style."""
    line = message_line(text_message("@alice hi"), "general", NOW, UTC, marked=True)
    assert [style for style, _ in line][2:4] == ["class:mention", "class:mention"]


def test_lists_line_up_in_columns() -> None:
    """/devices, /scheduled and /requests pad each column to its widest entry."""
    devices = [
        {"device": "a1", "name": "phone", "online": True},
        {"device": "b2", "name": "old laptop", "online": False},
    ]
    assert [plain(line) for line in device_lines(devices, "a1")] == [
        "phone       online   (this device)",
        "old laptop  offline",
    ]
    pending = [
        ({"id": "aaaaaa1", "chat": "general", "text": "soon", "send_at": ms(14, 30)}, "general"),
        ({"id": "bbbbbb2", "chat": "d1", "text": "later", "send_at": ms(9, 0, day=5)}, "@bob"),
    ]
    assert [plain(line) for line in scheduled_rows(pending, NOW, UTC)] == [
        "aaaaaa  14:30             general: soon",
        "bbbbbb  2025-03-05 09:00  @bob:    later",
    ]
    requests = [{"user": "al", "ts": ms(11, 0)}, {"user": "carol", "ts": ms(11, 5)}]
    assert [plain(line).split("  /")[0] for line in request_rows(requests, "+c", NOW, UTC)] == [
        "al     asked 11:00",
        "carol  asked 11:05",
    ]
