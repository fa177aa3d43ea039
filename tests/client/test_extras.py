"""The extras from the console client, in script mode against a real server: scheduled
messages, files, private groups; each event shown on every device concerned."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

from server.app import Running, run_server
from server.config import Config
from tests.client.support import Clients, ScriptClient


def found(client: ScriptClient, pattern: str) -> re.Match[str]:
    """The first match of ``pattern`` in what the client printed on stdout."""
    match = re.search(pattern, client.stdout.getvalue())
    assert match is not None, f"Expected {pattern!r} in:\n{client.stdout.getvalue()}"
    return match


# -- scheduled messages -----------------------------------------------------------


async def test_scheduled_messages_are_listed_and_cancelled_by_short_id(
    running_server: Running, clients: Clients
) -> None:
    """/schedule shows the short id once, on every device; /scheduled lists; /cancel ends."""
    laptop = clients.start(running_server.port, "alice", device="laptop")
    await laptop.started()
    phone = clients.start(running_server.port, "alice", device="phone")
    await phone.started()

    laptop.type("/schedule +1h see you in an hour", "/schedule +2h and in two")
    await laptop.stdout.wait_for("in general: and in two")
    first = found(laptop, r"Scheduled (\w+) for \S+ in general: see you in an hour")[1]
    await phone.stdout.wait_for(f"Scheduled {first} for")  # the event, on the other device

    laptop.type("/scheduled")
    await laptop.stdout.wait_for(f"{first}  ")
    laptop.type(f"/cancel {first}")
    await laptop.stdout.wait_for(f"Scheduled message {first} cancelled.")
    await phone.stdout.wait_for(f"Scheduled message {first} cancelled.")
    typed = len(laptop.stdout.getvalue())
    laptop.type("/scheduled", f"/cancel {first}")
    await laptop.stderr.wait_for(f"No scheduled message '{first}' pending")
    assert await laptop.end() == 1  # the second cancel failed
    assert await phone.end() == 0

    listed = laptop.stdout.getvalue()[typed:]
    assert "general: and in two" in listed
    assert "see you in an hour" not in listed
    # The reply and the event of one action make one line, not two.
    assert laptop.stdout.count("see you in an hour (/cancel") == 1
    assert laptop.stdout.count(f"Scheduled message {first} cancelled.") == 1
    assert "Traceback" not in laptop.stderr.getvalue()


async def test_a_scheduled_message_is_posted_when_its_time_comes(
    server_config: Config, clients: Clients
) -> None:
    """Once the clock passes send_at the message is posted; another user sees it."""
    now = [int(time.time() * 1000)]
    config = dataclasses.replace(server_config, timer_resolution=0.02)
    async with run_server(config, clock=lambda: now[0]) as running:
        alice = clients.start(running.port, "alice")
        await alice.started()
        bob = clients.start(running.port, "bob")
        await bob.started()
        alice.type("/schedule +10m the future is here")
        await alice.stdout.wait_for("in general: the future is here")
        assert "the future is here" not in bob.stdout.getvalue()  # not posted yet

        now[0] += 11 * 60_000
        await bob.stdout.wait_for("general#1 alice: the future is here")
        await alice.stdout.wait_for("general#1 alice: the future is here")
        alice.type("/scheduled")
        await alice.stdout.wait_for("No scheduled messages.")
        assert await alice.end() == 0
        assert await bob.end() == 0


# -- files --------------------------------------------------------------------------


async def test_a_file_sent_comes_back_byte_for_byte_and_never_overwrites(
    server_config: Config, clients: Clients, tmp_path: Path
) -> None:
    """/send-file uploads in chunks and posts; /get saves identical bytes, then a copy
    under a numbered name beside the first."""
    content = os.urandom(5000)
    source = tmp_path / "my notes.bin"  # a space: the path is quoted
    source.write_bytes(content)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    async with run_server(dataclasses.replace(server_config, upload_chunk_size=1024)) as running:
        alice = clients.start(running.port, "alice")
        await alice.started()
        bob = clients.start(running.port, "bob")
        await bob.started()

        alice.type(f'/send-file "{source}" my notes')
        announced = "general#1 alice: my notes [file my notes.bin, 4.9 KiB: /get general#1]"
        await alice.stdout.wait_for(announced)
        await bob.stdout.wait_for(announced)

        bob.type(f"/get general#1 {inbox}")
        await bob.stdout.wait_for(f"Saved {inbox / 'my notes.bin'} (4.9 KiB, SHA-256 checked).")
        bob.type(f"/get #1 {inbox}")  # #1: in the current chat
        await bob.stdout.wait_for(f"Saved {inbox / 'my notes (1).bin'}")
        bob.type(f"/get #1 {inbox}/")
        await bob.stdout.wait_for(f"Saved {inbox / 'my notes (2).bin'}")

        (tmp_path / "empty.txt").touch()
        alice.type(f"/send-file {tmp_path / 'empty.txt'}")  # no text, no bytes
        await bob.stdout.wait_for("general#2 alice: [file empty.txt, 0 bytes: /get general#2]")
        bob.type(f"/get #2 {inbox}")
        await bob.stdout.wait_for(f"Saved {inbox / 'empty.txt'} (0 bytes, SHA-256 checked).")
        assert await alice.end() == 0
        assert await bob.end() == 0
    assert (inbox / "empty.txt").read_bytes() == b""
    copies = sorted(path.name for path in inbox.glob("*.bin"))
    assert copies == ["my notes (1).bin", "my notes (2).bin", "my notes.bin"]
    assert all((inbox / name).read_bytes() == content for name in copies)


async def test_a_file_over_the_limit_is_refused_in_one_line(
    server_config: Config, clients: Clients, tmp_path: Path
) -> None:
    """Too large: the server's limit in one line on stderr, nothing posted, exit 1."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(1000))
    async with run_server(dataclasses.replace(server_config, max_file_size=100)) as running:
        alice = clients.start(running.port, "alice")
        await alice.started()
        alice.type(f"/send-file {big} look", "/get #7", f"/send-file {tmp_path}", "/history")
        assert await alice.end() == 1
    assert alice.stderr.lines()[1:] == [
        "Too large: big.bin is 1000 bytes; the server takes at most 100 bytes",
        "No message general#7 (expired, or not there yet)",
        f"Expected a file to send, but {tmp_path} is not a regular file",
    ]
    assert "look" not in alice.stdout.getvalue()


# -- private groups -----------------------------------------------------------------


async def test_a_group_is_joined_by_link_approved_or_declined_and_left(
    running_server: Running, clients: Clients
) -> None:
    """Create, link, join, the owner told and approving, the joiner told and then in
    the conversation; a declined requester told (by the group's title); members listed;
    leaving, which the others hear of."""
    port = running_server.port
    alice = clients.start(port, "alice")
    await alice.started()
    bob = clients.start(port, "bob")
    await bob.started()
    carol = clients.start(port, "carol")
    await carol.started()

    alice.type("/create Book Club", "/link +Book_Club")
    await alice.stdout.wait_for("You created +Book_Club: /invite +Book_Club @user adds someone")
    await alice.stdout.wait_for("Join link for +Book_Club")
    link = found(alice, r"Join link for \+Book_Club \(it replaces the last one\): /join (\S+)")[1]

    bob.type(f"/join {link}")
    await bob.stdout.wait_for("Asked to join +Book_Club; you will be told when the owner decides.")
    await alice.stdout.wait_for(
        "bob asks to join +Book_Club: /approve +Book_Club @bob or /decline +Book_Club @bob"
    )
    alice.type("/requests +Book_Club")
    await alice.stdout.wait_for("bob  asked ")
    alice.type("/approve +Book_Club @bob")
    await alice.stdout.wait_for("bob joined +Book_Club.")
    await bob.stdout.wait_for("You are now in +Book_Club (alice's group): /open +Book_Club")

    alice.type("/open +Book_Club", "welcome")
    await bob.stdout.wait_for("+Book_Club#1 alice: welcome")
    bob.type("/open +Book_Club", "thanks")
    await alice.stdout.wait_for("+Book_Club#2 bob: thanks")

    carol.type(f"/join {link}")
    await alice.stdout.wait_for("carol asks to join +Book_Club")
    alice.type("/decline +Book_Club @carol")
    await alice.stdout.wait_for("Declined carol's request to join +Book_Club.")
    await carol.stdout.wait_for("Your request to join +Book_Club was declined.")

    alice.type("/members +Book_Club")
    await alice.stdout.wait_for("+Book_Club: 2 members: alice (owner), bob")
    bob.type("/leave +Book_Club")
    await bob.stdout.wait_for("You are no longer in +Book_Club; you are now in general.")
    await alice.stdout.wait_for("bob left +Book_Club.")
    typed = len(alice.stdout.getvalue())
    alice.type("/members +Book_Club")
    await alice.stdout.wait_for("+Book_Club: 1 member: alice (owner)", after=typed)

    alice.type("/invite +Book_Club @carol")
    await alice.stdout.wait_for("carol joined +Book_Club.")
    await carol.stdout.wait_for("You are now in +Book_Club (alice's group)")
    for client in (alice, bob, carol):
        assert await client.end() == 0
    assert alice.stdout.count("You created +Book_Club") == 1  # reply and event: one line
    assert bob.stdout.count("You are no longer in +Book_Club") == 1
    assert alice.stdout.count("Declined carol's request") == 1  # reply and event: one line


async def test_group_commands_refused_say_so_in_one_line(
    running_server: Running, clients: Clients
) -> None:
    """Not the owner, a bad link, the owner leaving: one line each, no traceback."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    alice.type("/create club", "/invite club @alice")
    await alice.stderr.wait_for("Conflict: ")
    bob = clients.start(running_server.port, "bob")
    await bob.started()
    bob.type("/join not-a-link", "/leave general", "/members nowhere")
    assert await bob.end() == 1
    alice.type("/leave club")
    assert await alice.end() == 1
    assert bob.stderr.lines()[1:] == [
        "Not found: No such link (links are replaced when the owner makes a new one)",
        "general is everyone's chat: it has no owner, and nobody leaves it",
        "No chat 'nowhere' among yours; /chats lists them",
    ]
    assert alice.stderr.lines()[1] == "Conflict: alice is already a member of +club"
    assert alice.stderr.lines()[-1] == "Not allowed: The owner cannot leave the group"


async def test_one_device_acts_and_the_others_are_told(
    running_server: Running, clients: Clients
) -> None:
    """Invite, approve, decline and report on the phone show on the laptop; members see
    who joined and left; a second report says it did not count; /leave of the open chat
    says where one is now."""
    port = running_server.port
    who = [("alice", "phone"), ("alice", "laptop"), ("bob", None), ("carol", None), ("dave", None)]
    phone, laptop, bob, carol, dave = [clients.start(port, u, device=d) for u, d in who]
    for client in (phone, laptop, bob, carol, dave):
        await client.started()

    phone.type("/create club", "/invite club @bob", "/link club")
    await laptop.stdout.wait_for("bob joined +club.")
    await phone.stdout.wait_for("Join link for +club")
    link = found(phone, r"/join (\S+)")[1]
    carol.type(f"/join {link}")
    dave.type(f"/join {link}")
    await laptop.stdout.wait_for("dave asks to join +club")
    phone.type("/approve club @carol", "/decline club @dave", "/report @dave spam")
    await laptop.stdout.wait_for("carol joined +club.")
    await bob.stdout.wait_for("carol joined +club.")
    await laptop.stdout.wait_for("Declined dave's request to join +club.")
    await laptop.stdout.wait_for("Reported dave.")
    await dave.stdout.wait_for("Your request to join +club was declined.")
    phone.type("/report @dave again")
    await phone.stdout.wait_for("You reported dave before; this report did not count.")

    bob.type("/open +club", "/leave +club")
    await bob.stdout.wait_for("You are no longer in +club; you are now in general.")
    await laptop.stdout.wait_for("bob left +club.")
    await carol.stdout.wait_for("bob left +club.")
    for client in (phone, laptop, bob, carol, dave):
        assert await client.end() == 0
    assert phone.stdout.count("Reported dave.") == 1  # the event's line, not two


async def test_small_answers_read_well(running_server: Running, clients: Clients) -> None:
    """An empty chat's /history says so; two groups of one title: the name lists both;
    general has no owner; /help CMD gives the usage and an example."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    alice.type("/create club", "/create club", "/open club")
    await alice.stderr.wait_for("'club' could be any of +club~g")
    alice.type("/history", "/invite general @alice", "/help schedule")
    assert await alice.end() == 1
    assert "No messages in general yet." in alice.stdout.lines()
    assert alice.stderr.lines()[-1] == (
        "general is everyone's chat: it has no owner, and nobody leaves it"
    )
    assert alice.stdout.lines()[-2:] == [
        "/schedule <when> <text>  Send text to the current chat later: +10m, +2h, 14:30, "
        "2026-11-24T14:30.",
        "For example: /schedule +2h stand-up in 5 minutes",
    ]
