"""The interactive console, driven through prompt_toolkit's pipe input on a real server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from client.cli import Options, run
from client.console import Console
from client.render import plain
from server.app import Running, run_server
from server.config import Config
from tests.client.support import FAST, PASSWORD, Clients, Transcript


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
