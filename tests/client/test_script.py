"""Script mode against a real server: commands from stdin, plain lines out, exit status."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import stat
import sys
from pathlib import Path

from server.app import Running, run_server
from server.config import Config
from tests.client.support import PASSWORD, Clients

REPO = Path(__file__).resolve().parents[2]


async def test_script_sends_and_receives(running_server: Running, clients: Clients) -> None:
    """Text goes to general and to a direct chat; the other side prints it as it comes."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    bob = clients.start(running_server.port, "bob")
    await bob.started()
    alice.type("hello everyone")
    await bob.stdout.wait_for("general#1 alice: hello everyone")
    bob.type("/dm @alice just you")
    await alice.stdout.wait_for("@bob#1 bob: just you")
    assert await alice.end() == 0
    assert await bob.end() == 0
    # Each side sees each message once: the send's reply and its event are one message.
    assert alice.stdout.count("alice: hello everyone") == 1
    assert bob.stdout.count("bob: just you") == 1


async def test_start_shows_unread_counts_then_the_latest_of_general(
    server_config: Config, clients: Clients
) -> None:
    """A newcomer sees the unread counts, then general's last messages (history size)."""
    async with run_server(dataclasses.replace(server_config, history_size=5)) as running:
        bob = clients.start(running.port, "bob")
        await bob.started()
        bob.type(*(f"note {n}" for n in range(1, 8)))
        await bob.stdout.wait_for("bob: note 7")
        bob.type("/dm @carol psst")  # carol does not exist yet: an error, the script goes on
        assert await bob.end() == 1
        assert "Not found: No user 'carol'" in bob.stderr.getvalue()

        carol = clients.start(running.port, "carol", history=True)
        await carol.started()
        assert await carol.end() == 0
    lines = carol.stdout.lines()
    assert lines[0] == "Unread: general 5"  # a newcomer's unread starts at history size
    assert [line.split(": ", 1)[1] for line in lines[1:]] == [f"note {n}" for n in range(3, 8)]


async def test_a_script_shows_no_history_and_marks_nothing_read_unless_asked(
    running_server: Running, clients: Clients
) -> None:
    """A cron job's script sees no start and eats no unread message, even with /open and
    /unread; ``--history --mark-read`` brings both back."""
    assert await clients.start(running_server.port, "alice", device="cron").end() == 0
    bob = clients.start(running_server.port, "bob")
    await bob.started()
    bob.type("for alice", "/dm @alice direct")
    await bob.stdout.wait_for("bob: direct")
    assert await bob.end() == 0

    cron = clients.start(running_server.port, "alice", device="cron", register=False)
    await cron.started()
    cron.type("/open @bob", "/unread", "/chats")
    assert await cron.end() == 0
    assert cron.stdout.lines()[0] == "Now in @bob."
    assert "general 1 unread" in " ".join(cron.stdout.getvalue().split())

    person = clients.start(running_server.port, "alice", history=True, mark_read=True)
    await person.started()
    person.type("/chats")
    assert await person.end() == 0
    lines = person.stdout.lines()
    assert lines[0] == "Unread: general 1, @bob 1"
    assert lines[1].endswith("general#1 bob: for alice")


async def test_the_token_is_reused_on_the_second_run(
    running_server: Running, clients: Clients, config_home: Path
) -> None:
    """The first run saves the device token (0600); the next needs no password."""
    first = clients.start(running_server.port, "alice", device="laptop")
    first.type("/quit")
    assert await first.end() == 0
    tokens = config_home / "messenger" / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600

    second = clients.start(
        running_server.port, "alice", device="laptop", password=None, register=False
    )
    second.type("/devices")
    assert await second.end() == 0
    devices = [line for line in second.stdout.lines() if "online" in line]
    assert devices == ["laptop  online   (this device)"]  # the same device, not a new one


async def test_a_revoked_token_falls_back_to_the_password(
    running_server: Running, clients: Clients
) -> None:
    """After /logout the token is forgotten; the next run signs in with the password."""
    first = clients.start(running_server.port, "alice")
    first.type("/logout")
    assert await first.end() == 0
    assert "Signed out" in first.stderr.getvalue()
    without_password = clients.start(running_server.port, "alice", password=None, register=False)
    assert await without_password.end() == 1
    assert "No password: set MESSENGER_PASSWORD" in without_password.stderr.getvalue()
    again = clients.start(running_server.port, "alice", register=False)
    assert await again.end() == 0


async def test_two_clients_of_one_user_see_each_others_messages_and_reading(
    running_server: Running, clients: Clients
) -> None:
    """Two devices of alice both get bob's message; one reads it, the other's count clears."""
    laptop = clients.start(running_server.port, "alice", device="laptop", mark_read=True)
    await laptop.started()
    phone = clients.start(running_server.port, "alice", device="phone")
    await phone.started()
    bob = clients.start(running_server.port, "bob")
    await bob.started()

    bob.type("/dm @alice are you there")
    await laptop.stdout.wait_for("@bob#1 bob: are you there")
    await phone.stdout.wait_for("@bob#1 bob: are you there")
    laptop.type("/open @bob")
    await phone.stdout.wait_for("@bob: read up to #1 elsewhere, 0 unread")

    phone.type("from the phone")
    await laptop.stdout.wait_for("general#1 alice: from the phone")
    laptop.type("/devices")
    await laptop.stdout.wait_for("phone   online")
    for client in (laptop, phone, bob):
        assert await client.end() == 0
    assert "laptop  online   (this device)" in laptop.stdout.lines()


async def test_errors_are_one_line_each_and_fail_the_script(
    server_config: Config, clients: Clients
) -> None:
    """Rate limited (with when to retry) and banned: a line on stderr each, exit 1."""
    config = dataclasses.replace(server_config, rate_limit=1, report_threshold=1)
    async with run_server(config) as running:
        alice = clients.start(running.port, "alice")
        await alice.started()
        alice.type("one", "two")
        await alice.stderr.wait_for("Rate limited: try again in ")
        bob = clients.start(running.port, "bob")
        await bob.started()
        bob.type("/report @alice spam")
        await bob.stdout.wait_for("Reported alice.")
        await alice.stdout.wait_for("You are banned until ")
        alice.type("/dm @bob let me explain")
        await alice.stderr.wait_for("You are banned until ")
        assert await alice.end() == 1
        assert await bob.end() == 0
    errors = alice.stderr.lines()[1:]  # after "Signed in as ..."
    assert len(errors) == 2
    assert "Traceback" not in alice.stderr.getvalue()


async def test_a_wrong_password_is_one_clear_line(
    running_server: Running, clients: Clients
) -> None:
    """A wrong password (or unknown user) says so, and how to register, and exits 1."""
    clients.start(running_server.port, "alice").type("/quit")
    await clients.started[-1].end()
    wrong = clients.start(
        running_server.port, "alice", password="not-the-one", register=False, device="other"
    )
    assert await wrong.end() == 1
    assert wrong.stderr.lines() == [
        "Wrong password for alice, or no such user (--register creates it)"
    ]


async def test_a_password_too_short_to_be_anyones_is_one_clear_line(
    running_server: Running, clients: Clients
) -> None:
    """MESSENGER_PASSWORD shorter than any password: said so, without asking the server."""
    short = clients.start(running_server.port, "alice", password="short")
    assert await short.end() == 1
    assert short.stderr.lines() == ["Expected a password of 8 to 1024 characters, but it has 5."]


async def test_an_unreachable_server_is_one_clear_line(clients: Clients) -> None:
    """Nothing listening on the port: one line on stderr, exit 1, no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = clients.start(port, "alice")
    assert await client.end() == 1
    assert client.stderr.lines() == [
        f"Cannot reach the messenger server at ws://127.0.0.1:{port}/ (connection refused)"
    ]


async def test_the_command_line_runs_a_script_and_reports_its_status(
    running_server: Running, tmp_path: Path
) -> None:
    """``python -m client`` with a piped script: 0 when all went well, 1 with the error."""
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "MESSENGER_PASSWORD": PASSWORD,
    }
    command = [
        sys.executable,
        "-m",
        "client",
        "--user",
        "alice",
        "--port",
        str(running_server.port),
    ]

    async def script(text: str, *extra: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *command,
            *extra,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(text.encode()), 30)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    status, out, err = await script("hello from a script\n/history 1\n", "--register")
    assert status == 0, err
    assert out.count("general#1 alice: hello from a script") == 2  # sent, then /history
    status, out, err = await script("/open nowhere\nstill sent\n")
    assert status == 1
    assert "No chat 'nowhere' among yours; /chats lists them" in err
    assert "alice: still sent" in out
