"""Bad input, hostile names and lost replies: one line each, never a traceback or a hang."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from client.cli import parse_args
from client.connection import Connection
from client.model import Chat, ChatId
from client.render import clean
from server.app import Running, run_server
from server.config import Config
from tests.client.support import Clients, relay_to


async def test_bad_arguments_are_one_line_each_never_a_traceback(
    running_server: Running, clients: Clients
) -> None:
    """Odd digits, huge numbers, impossible times, unknown ~users: a line each, then on."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    bad = [
        "/history ²",
        "/comment #² hi",
        "/comment #99999999999999999999 hi",
        "/schedule +9999999999999999d later",
        "/schedule 0001-01-01T00:00 past",
        "/send-file ~nosuchuser/x",
        "/get general#1 ~nosuchuser/",
    ]
    alice.type("a message to name", *bad, "/chats")
    await alice.stdout.wait_for("* general")
    assert await alice.end() == 1
    assert "Traceback" not in alice.stderr.getvalue()
    assert len(alice.stderr.lines()) == 1 + len(bad)  # "Signed in as ..." and a line each


def test_a_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--port takes 1 to 65535 only, as the argument parser's own error."""
    with pytest.raises(SystemExit):
        parse_args(["--user", "alice", "--port", "70000"])
    assert "expected a port from 1 to 65535" in capsys.readouterr().err


async def test_a_config_home_that_is_a_file_costs_the_token_not_the_session(
    running_server: Running, tmp_path: Path
) -> None:
    """With nowhere to save the token the client signs in all the same."""
    not_a_directory = tmp_path / "afile"
    not_a_directory.write_text("")
    clients = Clients(not_a_directory)
    try:
        alice = clients.start(running_server.port, "alice")
        await alice.started()
        alice.type("/chats")
        await alice.stdout.wait_for("* general")
        assert await alice.end() == 0
    finally:
        await clients.close()


async def test_a_text_over_the_limits_is_refused_before_it_is_sent(
    server_config: Config, clients: Clients
) -> None:
    """Over text_max or over the frame limit: a usage line, no reconnecting, then on."""
    config = dataclasses.replace(server_config, frame_limit=4096)
    async with run_server(config) as running:
        alice = clients.start(running.port, "alice")
        await alice.started()
        alice.type("x" * 4000)  # under text_max (4096), over the frame limit with its envelope
        await alice.stderr.wait_for("too big to send")
        alice.type("y" * 5000)
        await alice.stderr.wait_for("Expected at most 4096 characters")
        alice.type("fits")
        await alice.stdout.wait_for("general#1 alice: fits")
        assert await alice.end() == 1
    assert "Connection lost" not in alice.stderr.getvalue()


def test_names_are_cleaned_of_terminal_controls() -> None:
    """A group title's escapes, C1 controls, separators and bidi controls never print."""
    hostile = "\x1b[31mRED\x1b]0;PWNED\x07\x9b2J\u2028\u202etxt\u2066"
    label = Chat(ChatId("g1"), "group", hostile).label
    for unsafe in ("\x1b", "\x07", "\x9b", "\u2028", "\u202e", "\u2066"):
        assert unsafe not in label
        assert unsafe not in clean(f"a{unsafe}b")


async def test_groups_cannot_pass_for_general_or_each_other(
    running_server: Running, clients: Clients
) -> None:
    """Groups are +title (~id when two share one); `general` is the general chat."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    mallory = clients.start(running_server.port, "mallory")
    await mallory.started()
    mallory.type("/create general", "/invite +general @alice")
    await alice.stdout.wait_for("You are now in +general")
    alice.type("/create club")
    await alice.stdout.wait_for("You created +club:")
    mallory.type("/create club", "/invite +club @alice")
    await alice.stdout.wait_for("You are now in +club~")
    alice.type("/open general", "to everyone", "/open club")
    await alice.stdout.wait_for("general#1 alice: to everyone")
    await alice.stderr.wait_for("'club' could be any of +club~")
    alice.type("/chats")
    await alice.stdout.wait_for("  +general ")
    assert await alice.end() == 1
    assert await mallory.end() == 0
    assert "Now in general." in alice.stdout.lines()
    assert alice.stdout.count("group    0 unread") == 3  # /chats: the clubs told apart


async def test_starting_with_more_unread_than_shown_keeps_them_unread(
    server_config: Config, clients: Clients
) -> None:
    """History shows the latest; the earlier unread stay unread, and a line says so."""
    config = dataclasses.replace(server_config, history_size=3, rate_limit=100)
    async with run_server(config) as running:
        bob = clients.start(running.port, "bob")
        await bob.started()
        assert await bob.end() == 0
        alice = clients.start(running.port, "alice")
        await alice.started()
        alice.type(*(f"m{n}" for n in range(1, 7)))
        await alice.stdout.wait_for("general#6 alice: m6")
        bob = clients.start(running.port, "bob", register=False, history=True, mark_read=True)
        await bob.stderr.wait_for("Signed in as")
        await bob.stdout.wait_for("3 earlier unread messages: /unread to see them")
        bob.type("/unread")
        await bob.stdout.wait_for("general#1 alice: m1")
        assert await bob.end() == 0
        assert await alice.end() == 0


async def test_a_group_command_whose_reply_is_lost_is_not_repeated(
    running_server: Running, clients: Clients
) -> None:
    """Leaving a group, reply lost: "may or may not have been done", not a false error."""
    async with relay_to(running_server.port) as relay:
        alice = clients.start(running_server.port, "alice")
        await alice.started()
        bob = clients.start(relay.port, "bob")
        await bob.started()
        alice.type("/create club", "/invite +club @bob")
        await bob.stdout.wait_for("You are now in +club")
        relay.cut_on = b'"chat.left"'
        bob.type("/leave +club")
        await bob.stderr.wait_for("may or may not have been done")
        await bob.stderr.wait_for("Reconnected")
        assert await bob.end() == 1
        assert await alice.end() == 0
    assert len(bob.stderr.lines()) == 4  # signed in, lost, the line, reconnected


async def test_a_script_that_is_not_utf8_ends_with_one_line(
    running_server: Running, clients: Clients
) -> None:
    """Strictly decoded stdin with a bad byte: one line and exit 1, not a hang."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    alice.type_bytes(b"hello\n\xff\xfe oops\n/chats\n")
    assert await alice.end() == 1
    assert "Cannot read the script" in alice.stderr.getvalue()


async def test_a_line_with_bytes_that_are_not_utf8_is_refused(
    running_server: Running, clients: Clients
) -> None:
    """Bytes decoded as lone surrogates: a usage line, then the script goes on."""
    alice = clients.start(running_server.port, "alice", stdin_errors="surrogateescape")
    await alice.started()
    alice.type_bytes(b"\xff\xfe oops\nfine\n")
    await alice.stderr.wait_for("Expected UTF-8 text")
    await alice.stdout.wait_for("general#1 alice: fine")
    assert await alice.end() == 1


async def test_a_reply_to_no_pending_request_is_no_warning(
    running_server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A late reply (a call given up on) is logged at DEBUG, not shown as a warning."""
    connection = await Connection.open(running_server.url, lambda method, params: None)
    try:
        with caplog.at_level(logging.DEBUG, logger="messenger.client"):
            connection._received('{"jsonrpc": "2.0", "id": 99, "result": null}')
        assert [record.levelno for record in caplog.records] == [logging.DEBUG]
    finally:
        await connection.close()
    await asyncio.sleep(0)
