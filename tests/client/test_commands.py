"""The command table: parsing, /help and completion, all read off ``COMMANDS``."""

from __future__ import annotations

import pytest

from client.commands import COMMANDS, SAY, Kind, complete, help_lines, kind_at, parse
from client.errors import UsageError
from client.model import Model
from client.render import plain


def model_with_chats() -> Model:
    model = Model("alice")
    model.load_status(
        {
            "chats": [
                {"id": "general", "kind": "general", "title": "general", "unread": 0},
                {"id": "d1", "kind": "direct", "title": "bob", "unread": 0},
                {"id": "g1", "kind": "group", "title": "book club", "unread": 0},
            ]
        }
    )
    model.users.add("bella")
    return model


def test_plain_text_is_said_to_the_current_chat() -> None:
    """A line that is not a command is text for the current chat."""
    assert parse("hello there") == (SAY, {"text": "hello there"})


def test_double_slash_sends_a_leading_slash() -> None:
    """``//`` escapes a text that starts with a slash."""
    assert parse("//shrug") == (SAY, {"text": "/shrug"})


def test_arguments_are_split_and_the_text_keeps_its_spaces() -> None:
    """The last text argument takes the rest of the line verbatim."""
    command, values = parse("/dm @bob  hi   there")
    assert command.name == "dm"
    assert values == {"user": "bob", "text": "hi   there"}


def test_an_optional_count_may_be_left_out() -> None:
    """``/history`` and ``/history 5`` both parse; the count is an int."""
    assert parse("/history")[1] == {"n": None}
    assert parse("/history 5")[1] == {"n": 5}


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/history 0", "Expected a number from 1 to 100, but got '0'"),
        ("/history lots", "Expected a number from 1 to 100, but got 'lots'"),
        ("/history 5 6", "Usage: /history [n]"),
        ("/dm @bob", "Usage: /dm <@user> <text>"),
        ("/dm @no/such hi", "Expected a user name like @bob, but got '@no/such'"),
        ("/open", "Usage: /open <chat|@user>"),
        ('/send-file "no end', 'Expected a closing " after the path'),
        ("/invite club", "Usage: /invite <group> <@user>"),
        ("/schedule +10m", "Usage: /schedule <when> <text>"),
        ("/frobnicate", "Unknown command /frobnicate; /help lists them"),
    ],
)
def test_a_line_that_does_not_fit_says_how_it_should_look(line: str, error: str) -> None:
    """Wrong arguments give the command's usage or what was expected instead."""
    with pytest.raises(UsageError) as raised:
        parse(line)
    assert str(raised.value) == error


def test_help_lists_every_command_of_the_table() -> None:
    """/help is generated: each command's usage and help text is in it."""
    text = "\n".join(plain(line) for line in help_lines())
    for command in COMMANDS:
        assert command.usage in text
        assert command.help in text
    assert {"help", "chats", "open", "dm", "history", "unread", "devices", "logout", "quit"} <= {
        command.name for command in COMMANDS
    }
    extras = {"comment", "comments", "report", "schedule", "scheduled", "cancel", "send-file",
              "get", "create", "invite", "link", "join", "requests", "approve", "decline",
              "members", "leave"}  # fmt: skip
    assert extras <= {command.name for command in COMMANDS}


def test_a_path_may_be_quoted_to_hold_spaces() -> None:
    """``/send-file "my file.txt" text``: the quotes go, the spaces stay."""
    assert parse('/send-file "my file.txt"  see  this')[1] == {
        "path": "my file.txt",
        "text": "see  this",
    }
    assert parse("/send-file notes.txt")[1] == {"path": "notes.txt", "text": None}
    assert parse("/get general#3 'to here/'")[1] == {"file": "general#3", "path": "to here/"}


def test_command_names_complete() -> None:
    """A slash and a prefix complete to the commands that start so."""
    assert complete("/h", Model("alice")) == ("/h", ["/help", "/history"])


def test_chat_arguments_complete_to_labels_and_users() -> None:
    """Where a chat is expected: chat labels, then @users without a chat yet."""
    model = model_with_chats()
    assert complete("/open ", model)[1] == ["general", "@bob", "+book_club", "@bella"]
    assert complete("/open +b", model) == ("+b", ["+book_club"])


def test_user_arguments_and_mentions_complete_to_user_names() -> None:
    """Where a user is expected, and for an @ in text, user names complete."""
    model = model_with_chats()
    assert complete("/dm @b", model) == ("@b", ["@bella", "@bob"])
    assert complete("see you @bo", model) == ("@bo", ["@bob"])
    assert complete("/dm @bob some te", model) == ("te", [])


def test_group_arguments_complete_to_groups_only() -> None:
    """Where a group is expected, only group labels are offered."""
    model = model_with_chats()
    assert complete("/members ", model)[1] == ["+book_club"]
    assert complete("/invite book_club @b", model) == ("@b", ["@bella", "@bob"])


def test_scheduled_ids_complete_to_their_short_form() -> None:
    """/cancel completes to the short ids of the scheduled messages the client saw."""
    model = Model("alice")
    model.scheduled_seen({"id": "3f9a2c77e1d04b10", "chat": "general", "text": "x"})
    assert complete("/cancel 3", model) == ("3", ["3f9a2c"])


def test_paths_are_left_to_the_console_to_complete() -> None:
    """The argument after /send-file is a path; after it, text."""
    assert kind_at("/send-file ~/Doc") is Kind.PATH
    assert kind_at("/send-file a.txt hel") is Kind.TEXT
    assert kind_at("/get #3 ") is Kind.PATH
    assert kind_at("/sen") is None
