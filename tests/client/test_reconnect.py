"""Connection loss: the client reconnects, resumes with ``since``, shows everything once."""

from __future__ import annotations

import asyncio
import dataclasses

from client.connection import Backoff
from server.app import Running, run_server
from server.config import Config
from tests.client.support import WAIT, Clients, relay_to


async def test_the_client_survives_a_server_restart_and_misses_nothing(
    server_config: Config, clients: Clients
) -> None:
    """Messages posted while alice was away arrive by resume, once; live ones follow."""
    async with relay_to() as relay:
        async with run_server(server_config) as first:
            port = relay.target_port = first.port
            alice = clients.start(relay.port, "alice")
            await alice.started()
            bob = clients.start(port, "bob")
            await bob.started()
            bob.type("before the restart")
            await alice.stdout.wait_for("bob: before the restart")
            # Alice's line goes down first, so that she cannot come back before bob posts.
            await relay.cut()
            await alice.stderr.wait_for("Connection lost; reconnecting...")

        async with run_server(dataclasses.replace(server_config, port=port)):
            bob.type("while alice was away")  # bob's client reconnects to the new server too
            await bob.stdout.wait_for("bob: while alice was away")
            await relay.mend()
            await alice.stderr.wait_for("Reconnected; nothing was missed.")
            await alice.stdout.wait_for("bob: while alice was away")
            bob.type("after the restart")
            await alice.stdout.wait_for("bob: after the restart")
            assert await alice.end() == 0
            assert await bob.end() == 0

    for text in ("before the restart", "while alice was away", "after the restart"):
        assert alice.stdout.count(text) == 1, alice.stdout.getvalue()
    assert bob.stderr.count("Reconnected") == 1


async def test_when_the_server_cannot_replay_the_client_refetches_unread(
    server_config: Config, clients: Clients
) -> None:
    """``resumed: false`` (past the resume window): the unread messages come, once each."""
    async with (
        run_server(dataclasses.replace(server_config, resume_window=2)) as running,
        relay_to(running.port) as relay,
    ):
        alice = clients.start(relay.port, "alice", mark_read=True)
        await alice.started()
        bob = clients.start(running.port, "bob")
        await bob.started()
        bob.type("seen live")
        await alice.stdout.wait_for("bob: seen live")
        await relay.cut()
        await alice.stderr.wait_for("Connection lost")
        bob.type(*(f"missed {n}" for n in range(1, 5)))
        await bob.stdout.wait_for("bob: missed 4")
        await relay.mend()
        await alice.stderr.wait_for("could not replay")
        await alice.stdout.wait_for("bob: missed 4")
        alice.type("/unread")
        await alice.stdout.wait_for("No unread messages.")  # what was shown was read
        assert await alice.end() == 0
        assert await bob.end() == 0
    for text in ("seen live", "missed 1", "missed 2", "missed 3", "missed 4"):
        assert alice.stdout.count(text) == 1, alice.stdout.getvalue()


async def test_a_command_during_an_outage_runs_once_the_connection_is_back(
    server_config: Config, clients: Clients
) -> None:
    """A send typed while disconnected waits for the reconnection and is stored once."""
    async with run_server(server_config) as running, relay_to(running.port) as relay:
        alice = clients.start(relay.port, "alice")
        await alice.started()
        await relay.cut()
        await alice.stderr.wait_for("Connection lost")
        alice.type("sent in the dark", "/history")
        await relay.mend()
        await alice.stdout.wait_for("alice: sent in the dark")
        assert await alice.end() == 0
    # Once from the send, once from /history: the server stored it once (seq #1 only).
    assert alice.stdout.count("general#1 alice: sent in the dark") == 2
    assert "general#2" not in alice.stdout.getvalue()


async def test_a_device_signed_out_elsewhere_stops_with_one_line(
    running_server: Running, clients: Clients
) -> None:
    """Two runs share a device; one logs out; the other cannot resume and says why."""
    first = clients.start(running_server.port, "alice", device="shared")
    await first.started()
    second = clients.start(running_server.port, "alice", device="shared", password=None)
    await second.started()
    first.type("/logout")
    assert await first.end() == 0
    await second.stderr.wait_for("This device was signed out; run the client again")
    assert await asyncio.wait_for(second.task, WAIT) == 1  # it stopped by itself
    assert second.stderr.count("signed out") == 1


async def test_a_script_gives_up_on_a_server_that_stays_away(
    server_config: Config, clients: Clients
) -> None:
    """Past its patience without a server, a script fails its command and exits 1."""
    async with run_server(server_config) as running:
        alice = clients.start(
            running.port, "alice", backoff=Backoff(initial=0.02, maximum=0.1, give_up_after=0.3)
        )
        await alice.started()
    alice.type("into the void")
    assert await alice.end() == 1
    assert alice.stderr.lines()[-1] == (
        f"Cannot reach the messenger server at ws://127.0.0.1:{running.port}/ "
        "(connection refused; gave up after 0.3 s)"
    )
    assert "Traceback" not in alice.stderr.getvalue()
