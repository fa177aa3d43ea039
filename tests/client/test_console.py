"""The interactive console, driven through prompt_toolkit's pipe input on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from client.cli import Options, run
from client.console import Console
from client.render import plain
from server.app import Running, run_server
from server.config import Config
from tests.client.support import FAST, PASSWORD, Clients, Transcript, relay_to


@pytest.fixture
def keyboard() -> Iterator[PipeInput]:
    with create_pipe_input() as pipe:
        yield pipe


async def test_the_console_signs_in_sends_and_prints_events_above_the_prompt(
    running_server: Running, clients: Clients, keyboard: PipeInput, config_home: Path
) -> None:
    """Password typed at a prompt; text sent; /help completed with Tab; bob's messages
    appear while alice types, and what she typed is sent whole."""
    screen = Transcript()
    options = Options(
        user="alice",
        port=running_server.port,
        register=True,
        password=None,
        tokens=config_home / "tokens.json",
        backoff=FAST,
    )
    with create_app_session(input=keyboard, output=PlainTextOutput(screen)):
        task = asyncio.create_task(run(options, Console()))
        await screen.wait_for("Password for alice:")
        keyboard.send_text(PASSWORD + "\r")
        await screen.wait_for("Signed in as alice")
        assert PASSWORD not in screen.getvalue()  # typed without echo

        keyboard.send_text("hello from the console\r")
        await screen.wait_for("general#1 alice: hello from the console")

        typed = len(screen.getvalue())
        keyboard.send_text("/he\t")  # Tab completes the command's name
        await screen.wait_for("/help", after=typed)
        keyboard.send_text("\r")
        await screen.wait_for("/dm <@user> <text>")

        bob = clients.start(running_server.port, "bob")
        await bob.started()
        keyboard.send_text("half a")  # typed, not yet sent
        bob.type("interrupting")
        await screen.wait_for("general#2 bob: interrupting")
        keyboard.send_text(" line\r")
        await screen.wait_for("general#3 alice: half a line")
        await bob.stdout.wait_for("alice: half a line")

        keyboard.send_text("/quit\r")
        assert await asyncio.wait_for(task, 10) == 0
        assert await bob.end() == 0


async def test_an_unknown_user_is_offered_registration(
    running_server: Running, keyboard: PipeInput, config_home: Path
) -> None:
    """No such user: the console asks, takes the password twice, registers, signs in."""
    screen = Transcript()
    options = Options(
        user="carol",
        port=running_server.port,
        password=None,
        tokens=config_home / "tokens.json",
        backoff=FAST,
    )
    with create_app_session(input=keyboard, output=PlainTextOutput(screen)):
        task = asyncio.create_task(run(options, Console()))
        await screen.wait_for("Password for carol:")
        keyboard.send_text(PASSWORD + "\r")
        await screen.wait_for("Register carol? [y/n]")
        keyboard.send_text("y\r")  # the Enter does not fall through to the next prompt
        await screen.wait_for("The same password again:")
        keyboard.send_text(PASSWORD + "\r")
        await screen.wait_for("Signed in as carol")
        keyboard.send_text("\x04")  # Ctrl-D at the prompt quits
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_file_is_sent_with_a_progress_bar_that_goes_away(
    server_config: Config, keyboard: PipeInput, config_home: Path, tmp_path: Path
) -> None:
    """/send-file draws a bar in the status line as chunks go, clears it, and shows the
    message."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(1000))
    screen = Transcript()
    options = Options(
        user="alice",
        port=0,
        register=True,
        password=PASSWORD,
        tokens=config_home / "tokens.json",
        backoff=FAST,
    )
    config = dataclasses.replace(server_config, upload_chunk_size=64)
    async with run_server(config) as running:
        options = dataclasses.replace(options, port=running.port)
        with create_app_session(input=keyboard, output=PlainTextOutput(screen)):
            task = asyncio.create_task(run(options, Console()))
            await screen.wait_for("Signed in as alice")
            keyboard.send_text(f"/send-file {blob} the blob\r")
            await screen.wait_for("general#1 alice: the blob [file blob.bin, 1000 bytes")
            keyboard.send_text("/quit\r")
            assert await asyncio.wait_for(task, 10) == 0
    assert "Sending blob.bin [" not in screen.lines()[-1]  # the bar went with the upload


def test_the_progress_bar_shows_in_the_status_line(keyboard: PipeInput) -> None:
    """A transfer's bar, percentage and sizes sit in the status line until it ends."""
    with create_app_session(input=keyboard, output=PlainTextOutput(Transcript())):
        console = Console()
        bar = console.progress("Sending blob.bin", 2000)
        bar.advance(1000)
        assert plain(console.status()).strip() == (
            "Sending blob.bin [==========          ]  50% 1000 bytes of 2 KiB"
        )
        bar.close()
        assert plain(console.status()) == ""


@dataclasses.dataclass
class Screen:
    """A console running on a pipe: what it printed, and its keyboard."""

    task: asyncio.Task[int]
    text: Transcript
    keyboard: PipeInput

    def mark(self) -> int:
        return len(self.text.getvalue())


@contextlib.asynccontextmanager
async def console(
    port: int, config_home: Path, user: str = "alice", **changes: Any
) -> AsyncIterator[Screen]:
    """The console of ``user`` signed in (registered first) on the server at ``port``;
    with ``password=None``, at the password prompt."""
    options = Options(
        user=user,
        port=port,
        register=True,
        password=PASSWORD,
        tokens=config_home / "tokens.json",
        backoff=FAST,
    )
    text = Transcript()
    with (
        create_pipe_input() as keyboard,
        create_app_session(input=keyboard, output=PlainTextOutput(text)),
    ):
        options = dataclasses.replace(options, **changes)
        task = asyncio.create_task(run(options, Console()))
        try:
            if options.password is not None:
                await text.wait_for(f"Signed in as {user}")
            yield Screen(task, text, keyboard)
        finally:
            if not task.done():
                keyboard.send_text("\x04")
            await asyncio.wait([task], timeout=10)


async def test_one_chat_in_view_the_others_counted_with_mentions_and_dms_standing_out(
    running_server: Running, clients: Clients, config_home: Path
) -> None:
    """Only the open chat prints; a direct message counts in the status line (unread,
    not shown, so not read) and rings; Alt-2 opens it from the "new messages" line;
    Ctrl-P goes back; a mention rings too; a /dm sent from another view shows once."""
    port = running_server.port
    async with console(port, config_home) as alice:
        bob = clients.start(port, "bob")
        await bob.started()
        bob.type("/dm @alice ping")
        await alice.text.wait_for(" 2:@bob 1")
        assert "ping" not in alice.text.getvalue()
        assert "\a" in alice.text.getvalue()  # a direct message rings
        reader = clients.start(port, "alice", device="script")  # reads nothing itself
        reader.type("/chats")
        assert await reader.end() == 0
        assert "@bob direct 1 unread" in " ".join(reader.stdout.getvalue().split())

        mark = alice.mark()
        alice.keyboard.send_text("\x1b2")  # Alt-2
        await alice.text.wait_for("Now in @bob.", after=mark)
        await alice.text.wait_for("--- new messages ---", after=mark)
        await alice.text.wait_for("@bob#1 bob: ping", after=mark)
        shown = alice.text.getvalue()[mark:]
        assert shown.index("--- new messages ---") < shown.index("bob: ping")

        mark = alice.mark()
        alice.keyboard.send_text("\x10")  # Ctrl-P: back to general
        await alice.text.wait_for("Now in general.", after=mark)
        bob.type("hello @alice", "/dm @alice in the other view")
        await alice.text.wait_for("general#1 bob: hello @alice", after=mark)
        await alice.text.wait_for(" 2:@bob 1", after=mark)
        assert "in the other view" not in alice.text.getvalue()
        assert alice.text.getvalue()[mark:].count("\a") == 2  # the mention, the DM
        alice.keyboard.send_text("/dm @bob from general\r")  # what one sends shows
        await alice.text.wait_for("@bob#3 alice: from general", after=mark)
        alice.keyboard.send_text("/quit\r")
        assert await asyncio.wait_for(alice.task, 10) == 0
        assert await bob.end() == 0
        assert alice.text.count("alice: from general") == 1


async def test_an_outage_queues_what_is_typed_and_quit_does_not_wait(
    running_server: Running, config_home: Path
) -> None:
    """Cut off: the status line says reconnecting and counts what waits; it goes out on
    reconnection; /quit while cut off quits at once, saying what was not run."""
    async with relay_to(running_server.port) as relay, console(relay.port, config_home) as alice:
        await relay.cut()
        await alice.text.wait_for("reconnecting")
        alice.keyboard.send_text("sent in the dark\r")
        await alice.text.wait_for("(queued) sent in the dark")
        await alice.text.wait_for("reconnecting\N{HORIZONTAL ELLIPSIS}, 1 queued")
        await relay.mend()
        await alice.text.wait_for("general#1 alice: sent in the dark")

        await relay.cut()
        await alice.text.wait_for("Connection lost")
        alice.keyboard.send_text("never sent\r/quit\r")
        assert await asyncio.wait_for(alice.task, 2) == 0
        await alice.text.wait_for("1 queued command not run.")


async def test_ctrl_c_clears_the_line_and_on_an_empty_line_quits(
    running_server: Running, config_home: Path
) -> None:
    """Ctrl-C drops what was half typed (it is not sent); the next one quits."""
    async with console(running_server.port, config_home) as alice:
        alice.keyboard.send_text("half typed\x03done\r")
        await alice.text.wait_for("general#1 alice: done")
        alice.keyboard.send_text("\x03")
        assert await asyncio.wait_for(alice.task, 5) == 0
    assert "half typed" not in alice.text.getvalue().split("Signed in as")[1].split("\n", 2)[-1]


async def test_tab_adds_a_space_after_a_command_and_quotes_a_path_with_spaces(
    running_server: Running, config_home: Path, tmp_path: Path
) -> None:
    """``/hel<Tab>open`` is /help open (full usage and an example); a path with a space
    completes quoted and is sent."""
    (tmp_path / "my notes.txt").write_text("minutes")
    async with console(running_server.port, config_home) as alice:
        mark = alice.mark()
        alice.keyboard.send_text("/hel\t")  # completion runs in the background: wait
        await alice.text.wait_for("/help", after=mark)
        alice.keyboard.send_text("open\r")
        await alice.text.wait_for("/open <chat|@user>  Make a chat current")
        await alice.text.wait_for("For example: /open @bob")
        mark = alice.mark()
        alice.keyboard.send_text(f"/send-file {tmp_path}/my\t")
        await alice.text.wait_for('my notes.txt"', after=mark)
        alice.keyboard.send_text(" the minutes\r")
        await alice.text.wait_for("alice: the minutes [file my notes.txt, 7 bytes")


async def test_sign_in_asks_again_until_it_works(
    running_server: Running, clients: Clients, config_home: Path
) -> None:
    """A wrong password, one too short, a confirmation that differs: each asks again;
    ``y`` and Enter registers."""
    port = running_server.port
    assert await clients.start(port, "alice").end() == 0
    async with console(port, config_home, password=None, register=False) as alice:
        await alice.text.wait_for("Password for alice:")
        alice.keyboard.send_text("not-the-password\r")
        await alice.text.wait_for("Register alice? [y/n]")
        alice.keyboard.send_text("n\r")
        await alice.text.wait_for("Then the password again")
        alice.keyboard.send_text(PASSWORD + "\r")
        await alice.text.wait_for("Signed in as alice")
    async with console(port, config_home, "dave", password=None, register=False) as dave:
        await dave.text.wait_for("Password for dave:")
        dave.keyboard.send_text("short\r")
        await dave.text.wait_for("Expected a password of 8 to 1024 characters, but it has 5.")
        mark = dave.mark()
        dave.keyboard.send_text(PASSWORD + "\r")
        await dave.text.wait_for("Register dave? [y/n]", after=mark)
        dave.keyboard.send_text("y\r")
        await dave.text.wait_for("The same password again:", after=mark)
        dave.keyboard.send_text("something-else\r")
        await dave.text.wait_for("The passwords differ; nothing was registered.", after=mark)
        mark = dave.mark()
        dave.keyboard.send_text(PASSWORD + "\ry\r" + PASSWORD + "\r")
        await dave.text.wait_for("Signed in as dave", after=mark)


async def test_a_ban_in_force_is_said_at_sign_in(
    server_config: Config, clients: Clients, config_home: Path
) -> None:
    """Banned before the console starts: it says until when, right after signing in."""
    config = dataclasses.replace(server_config, report_threshold=1)
    async with run_server(config) as running:
        assert await clients.start(running.port, "alice").end() == 0
        bob = clients.start(running.port, "bob")
        bob.type("/report @alice")
        assert await bob.end() == 0
        async with console(running.port, config_home) as alice:
            await alice.text.wait_for("You are banned until ")


async def test_logout_quits_the_console_and_leaves_nothing_behind(
    running_server: Running, config_home: Path
) -> None:
    """/logout runs, says so and ends the console; nothing is reported as not run."""
    async with console(running_server.port, config_home) as alice:
        alice.keyboard.send_text("/logout\r")
        assert await asyncio.wait_for(alice.task, 5) == 0
    assert "Signed out; this device's token is forgotten." in alice.text.getvalue()
    assert "not run" not in alice.text.getvalue()


async def test_edits_deletions_and_presence_show_in_the_open_chat(
    server_config: Config, clients: Clients, config_home: Path
) -> None:
    """In the open chat an edit reprints the message marked (edited) and a deletion
    shows as removed; a contact going offline shows in the view of their direct chat."""
    config = dataclasses.replace(server_config, presence_grace=0.2)
    async with run_server(config) as running, console(running.port, config_home) as alice:
        bob = clients.start(running.port, "bob")
        await bob.started()
        bob.type("helo @alice")
        await alice.text.wait_for("general#1 bob: helo @alice")
        mark = alice.mark()
        bob.type("/edit #1 hello @alice")
        await alice.text.wait_for("general#1 bob: hello @alice (edited)", after=mark)
        bob.type("/delete #1")
        await alice.text.wait_for("general#1 [message removed]", after=mark)
        bob.type("/dm @alice psst")
        await alice.text.wait_for(" 2:@bob 1")
        mark = alice.mark()
        alice.keyboard.send_text("/open @bob\r")
        await alice.text.wait_for("@bob#1 bob: psst", after=mark)
        assert await bob.end() == 0
        await alice.text.wait_for("bob is offline, last seen", after=mark)


async def test_a_comment_on_my_message_in_another_chat_shows_and_rings(
    running_server: Running, clients: Clients, config_home: Path
) -> None:
    """With general open, a comment in another chat is not shown, unless it is on one
    of the user's own messages or names the user: then it shows, saying where, and
    rings (before, every comment outside the open chat was dropped unseen)."""
    port = running_server.port
    async with console(port, config_home) as alice:
        bob = clients.start(port, "bob")
        await bob.started()
        bob.type("/dm @alice first")
        await alice.text.wait_for(" 2:@bob 1")
        mark = alice.mark()
        alice.keyboard.send_text("/dm @bob mine\r")
        await alice.text.wait_for("@bob#2 alice: mine", after=mark)
        bells = alice.text.getvalue().count("\a")
        bob.type(
            "/comment @alice#1 on my own",
            "/comment @alice#2 on hers",
            "/comment @alice#1 and @alice, look",
        )
        await alice.text.wait_for("re @bob#2 bob: on hers", after=mark)
        await alice.text.wait_for("re @bob#1 bob: and @alice, look", after=mark)
        assert "on my own" not in alice.text.getvalue()
        assert alice.text.getvalue().count("\a") == bells + 2
        assert await bob.end() == 0


async def test_a_comment_on_my_message_of_an_earlier_session_shows_and_rings(
    running_server: Running, clients: Clients, config_home: Path
) -> None:
    """A comment on a message the user wrote before this console started (so never
    loaded by it), in a chat not open, shows and rings as well: the event says whose
    message it is. On main it was dropped unseen."""
    port = running_server.port
    async with console(port, config_home) as alice:
        bob = clients.start(port, "bob")
        await bob.started()
        alice.keyboard.send_text("/dm @bob written yesterday\r")
        await alice.text.wait_for("@bob#1 alice: written yesterday")
    async with console(port, config_home, register=False) as alice:
        mark = alice.mark()
        bells = alice.text.getvalue().count("\a")
        bob.type("/comment @alice#1 about yesterday")
        await alice.text.wait_for("re @bob bob: about yesterday", after=mark)
        assert alice.text.getvalue().count("\a") == bells + 1
        assert await bob.end() == 0
