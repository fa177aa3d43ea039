"""The console client's /edit, /delete, /search and /who against a real server."""

from __future__ import annotations

from server.app import Running
from tests.client.support import Clients


async def test_edit_delete_search_and_who_in_a_script(
    running_server: Running, clients: Clients
) -> None:
    """An edit shows as edited and a deletion as removed on the other side; /search
    finds by every word; /who tells who is online; /chats counts mentions."""
    alice = clients.start(running_server.port, "alice")
    await alice.started()
    bob = clients.start(running_server.port, "bob")
    await bob.started()
    alice.type("lunch at noon", "a typo here")
    await bob.stdout.wait_for("general#2 alice: a typo here")
    alice.type("/edit #2 lunch moved to one, @bob")
    await bob.stdout.wait_for("general#2 alice: lunch moved to one, @bob (edited)")
    alice.type("/delete #1")
    await bob.stdout.wait_for("general#1 [message removed]")
    bob.type("/search LUNCH")
    await bob.stdout.wait_for("1 found, newest first.")
    assert bob.stdout.count("general#2 alice: lunch moved to one, @bob (edited)") == 2
    bob.type("/chats")
    await bob.stdout.wait_for("1 mentioning you")
    alice.type("/dm @bob are you there?")
    await bob.stdout.wait_for("@alice#1 alice: are you there?")
    bob.type("/who @alice")
    await bob.stdout.wait_for("alice is online")
    bob.type("/chats")
    await bob.stdout.wait_for("1 unread  online")
    bob.type("/who @nobody")
    for client in (alice, bob):
        assert await client.end() == (1 if client is bob else 0)
    assert "No user 'nobody'" in bob.stderr.getvalue()
    assert "lunch at noon" not in bob.stdout.getvalue().split("[message removed]")[1]
