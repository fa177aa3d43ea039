"""Edit, delete, mentions, search and presence on a real server (protocol.md
section 14): two devices per user, restarts and compaction between action and read."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from server.app import run_server
from server.config import Config
from tests.cluster.support import until
from tests.server.extras_support import (
    Clock,
    chat_of,
    config_in,
    error_of,
    events_until_quiet,
    log_text,
    post,
    texts,
)
from tests.wsclient import Peer, connected, user_device


@contextlib.asynccontextmanager
async def alice_twice_and_bob(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer, Peer]]:
    """A server with two devices of alice and one of bob."""
    async with (
        run_server(config_in(tmp_path)) as running,
        user_device(running.url, "alice") as a1,
        connected(running.url) as a2,
        user_device(running.url, "bob") as bob,
    ):
        await a2.login("alice")
        yield a1, a2, bob


async def test_an_edit_reaches_every_device_and_history(tmp_path: Path) -> None:
    """The author's edit is told to every device of everyone in the chat, and read back."""
    async with alice_twice_and_bob(tmp_path) as (a1, a2, bob):
        sent = await post(a1, "general", "helo")
        edited = (await a1.call("edit", message=sent["id"], text="hello"))["message"]
        assert edited["text"] == "hello"
        assert edited["edited_at"] is not None
        for device in (a1, a2, bob):
            event = await device.next_event("message.edited")
            assert event["params"]["message"]["text"] == "hello"
        history = (await bob.call("history", chat="general"))["messages"]
        assert texts(history) == ["hello"]
        assert history[0]["edited_at"] == edited["edited_at"]


async def test_only_the_author_edits_and_a_stranger_learns_nothing(tmp_path: Path) -> None:
    """A member who is not the author gets -32002; a non-member of a private chat -32003,
    as for a message that does not exist."""
    async with (
        run_server(config_in(tmp_path)) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "eve") as eve,
    ):
        direct = (await alice.call("send", user="bob", text="secret"))["message"]
        public = await post(alice, "general", "hi")
        assert (await error_of(bob, "edit", message=direct["id"], text="x")).code == -32002
        assert (await error_of(bob, "edit", message=public["id"], text="x")).code == -32002
        for method, params in (
            ("edit", {"text": "x"}),
            ("delete", {}),
        ):
            hidden = await error_of(eve, method, message=direct["id"], **params)
            missing = await error_of(eve, method, message="nosuchmessage", **params)
            assert hidden.code == missing.code == -32003
        assert (await error_of(eve, "search", query="secret", chat=direct["chat"])).code == -32003
        assert (await eve.call("search", query="secret"))["messages"] == []
        assert (await error_of(eve, "presence", users=["alice"])).code == -32002
        assert (await error_of(bob, "delete", message=public["id"])).code == -32002


async def test_edits_are_idempotent_by_client_id(tmp_path: Path) -> None:
    """A repeated edit with the same client_id records nothing new."""
    config = config_in(tmp_path)
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
    ):
        sent = await post(alice, "general", "one")
        first = await alice.call("edit", message=sent["id"], text="two", client_id="e1")
        again = await alice.call("edit", message=sent["id"], text="two", client_id="e1")
        assert first == again
        assert log_text(config).count("MessageEdited") == 1


async def test_expired_and_deleted_messages_cannot_be_edited(tmp_path: Path) -> None:
    """Editing a message whose lifetime is over, or one deleted, is -32003."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path, message_ttl=60), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        doomed = await post(alice, "general", "soon gone")
        gone = await post(alice, "general", "deleted")
        await alice.call("delete", message=gone["id"])
        clock.advance(61)
        for message in (doomed, gone):
            assert (await error_of(alice, "edit", message=message["id"], text="x")).code == -32003


async def test_a_deletion_is_told_and_leaves_a_hole(tmp_path: Path) -> None:
    """Every device hears of a deletion; history, unread, comments and search skip it;
    the next message takes a new seq."""
    async with alice_twice_and_bob(tmp_path) as (a1, a2, bob):
        first = await post(a1, "general", "keep this")
        doomed = await post(a1, "general", "regret this")
        await bob.call("comment", message=doomed["id"], text="saw it")
        await a1.call("delete", message=doomed["id"])
        for device in (a1, a2, bob):
            event = await device.next_event("message.deleted")
            assert {k: event["params"][k] for k in ("chat", "seq", "id")} == {
                "chat": "general",
                "seq": doomed["seq"],
                "id": doomed["id"],
            }
        assert texts((await bob.call("history", chat="general"))["messages"]) == ["keep this"]
        unread = (await bob.call("unread"))["chats"][0]["messages"]
        assert texts(unread) == ["keep this"]
        assert (await error_of(bob, "comments", message=doomed["id"])).code == -32003
        assert (await bob.call("search", query="regret"))["messages"] == []
        assert (await bob.call("status"))["chats"][0]["unread"] == 1
        after = await post(a1, "general", "next")
        assert after["seq"] == doomed["seq"] + 1
        assert first["seq"] == 1


async def test_a_group_owner_deletes_a_members_message(tmp_path: Path) -> None:
    """The owner of a group may delete anyone's message there; a member may not."""
    async with (
        run_server(config_in(tmp_path)) as running,
        user_device(running.url, "owner") as owner,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        group = (await owner.call("chat.create", title="club"))["chat"]["id"]
        for name in ("bob", "carol"):
            await owner.call("chat.invite", chat=group, user=name)
        spam = await post(bob, group, "spam")
        assert (await error_of(carol, "delete", message=spam["id"])).code == -32002
        await owner.call("delete", message=spam["id"])
        assert (await carol.call("history", chat=group))["messages"] == []


async def test_a_deleted_message_is_not_resumed_and_leaves_the_disk(tmp_path: Path) -> None:
    """A device resuming gets the edit, and after a deletion is not sent the deleted
    text; after a restart (which compacts) the text is no longer in the log, and the
    hole stays."""
    config = config_in(tmp_path)
    async with run_server(config) as running, user_device(running.url, "alice") as alice:
        async with user_device(running.url, "bob") as bob:
            bob_cursor, bob_token = bob.cursor, bob.token
        doomed = await post(alice, "general", "a secret by mistake")
        sorry = await post(alice, "general", "sorry")
        await alice.call("edit", message=sorry["id"], text="@bob sorry")
        await alice.call("delete", message=doomed["id"])
        async with connected(running.url) as again:
            result = await again.call("login", user="bob", token=bob_token, since=bob_cursor)
            assert result["resumed"] is True
            seen = await events_until_quiet(again)
            assert [e["method"] for e in seen] == ["message", "message.edited", "message.deleted"]
            assert seen[1]["params"]["message"]["mentions"] == ["bob"]
            assert "a secret" not in str(seen)
    assert "a secret by mistake" in log_text(config)
    async with run_server(config) as running, user_device(running.url, "bob", False) as bob:
        assert "a secret by mistake" not in log_text(config)
        history = (await bob.call("history", chat="general"))["messages"]
        assert texts(history) == ["@bob sorry"]
        assert history[0]["seq"] == 2
        assert (await error_of(bob, "comments", message=doomed["id"])).code == -32003
        assert (await post(bob, "general", "next"))["seq"] == 3


async def test_deleted_text_leaves_the_disk_at_compaction_while_serving(tmp_path: Path) -> None:
    """Housekeeping compacts after a deletion, as after an expiry: the text is gone."""
    config = config_in(tmp_path, housekeeping_interval=0.05, expired_compaction_delay=0)
    async with run_server(config) as running, user_device(running.url, "alice") as alice:
        doomed = await post(alice, "general", "remove me entirely")
        await alice.call("comment", message=doomed["id"], text="and my comment")
        await alice.call("delete", message=doomed["id"])
        await until(lambda: "remove me" not in log_text(config))
        assert "my comment" not in log_text(config)


async def test_mentions_are_decided_and_counted_until_read(tmp_path: Path) -> None:
    """@name (any case) of a member is a mention; the chat counts unread mentions on
    every device, and the count follows the read marker; an edit can add one."""
    async with (
        run_server(config_in(tmp_path)) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "Bob") as b1,
        connected(running.url) as b2,
        user_device(running.url, "eve") as eve,
    ):
        await b2.login("Bob")
        group = (await alice.call("chat.create", title="club"))["chat"]["id"]
        await alice.call("chat.invite", chat=group, user="Bob")
        one = await post(alice, group, "hi @bob, and @eve, and @nobody.")
        assert one["mentions"] == ["Bob"]  # eve is not in the group
        two = await post(alice, group, "plain")
        await alice.call("edit", message=two["id"], text="plain, @BOB.")
        for device in (b1, b2):
            assert chat_of(await device.call("status"), group)["mentions"] == 2
        await b1.call("read", chat=group, seq=one["seq"])
        await b2.next_event("read")
        assert chat_of(await b2.call("status"), group)["mentions"] == 1
        general = await post(alice, "general", "@eve look")
        assert general["mentions"] == ["eve"]
        assert chat_of(await eve.call("status"), "general")["mentions"] == 1


async def test_mentions_survive_a_restart(tmp_path: Path) -> None:
    """Mentions and edits are the same after a restart (which compacts the log)."""
    config = config_in(tmp_path)
    async with run_server(config) as running, user_device(running.url, "alice") as alice:
        async with user_device(running.url, "bob"):
            pass
        sent = await post(alice, "general", "hey")
        await alice.call("edit", message=sent["id"], text="hey @bob")
    for _ in range(2):  # the first start compacts, the second reads the snapshot
        async with run_server(config) as running, user_device(running.url, "bob", False) as bob:
            message = (await bob.call("history", chat="general"))["messages"][0]
            assert message["mentions"] == ["bob"]
            assert message["edited_at"] is not None
            assert chat_of(await bob.call("status"), "general")["mentions"] == 1


async def test_search_finds_every_word_newest_first_in_pages(tmp_path: Path) -> None:
    """All words, any case, Unicode-aware; newest first; `before` pages; `chat` narrows;
    an edit moves a message in or out of the results."""
    async with (
        run_server(config_in(tmp_path)) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        direct = (await alice.call("send", user="bob", text="Grüße aus der STRASSE"))["message"]
        for index in range(5):
            await post(alice, "general", f"apple pie number {index}")
        await post(alice, "general", "apple only")
        page = await bob.call("search", query="PIE apple", limit=3)
        assert texts(page["messages"]) == [f"apple pie number {i}" for i in (4, 3, 2)]
        assert page["has_more"] is True
        rest = await bob.call("search", query="pie apple", before=page["messages"][-1]["id"])
        assert texts(rest["messages"]) == ["apple pie number 1", "apple pie number 0"]
        assert rest["has_more"] is False
        assert texts((await bob.call("search", query="GRÜSSE"))["messages"]) == [direct["text"]]
        assert (await bob.call("search", query="STRASSE", chat="general"))["messages"] == []
        found = await bob.call("search", query="straße", chat=direct["chat"])
        assert texts(found["messages"]) == ["Grüße aus der STRASSE"]
        await alice.call("edit", message=direct["id"], text="nothing here")
        assert (await bob.call("search", query="strasse"))["messages"] == []
        assert len((await bob.call("search", query="here"))["messages"]) == 1
        assert (await error_of(bob, "search", query=" ".join("abcdefghijklmnopq"))).code == -32602


async def test_search_survives_restart_and_skips_expired(tmp_path: Path) -> None:
    """The index is rebuilt from the snapshot at start; expired messages are not found."""
    clock = Clock()
    config = config_in(tmp_path, message_ttl=60)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        await post(alice, "general", "old needle")
        clock.advance(30)
        await post(alice, "general", "new needle")
        clock.advance(31)
        assert texts((await alice.call("search", query="needle"))["messages"]) == ["new needle"]
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice", False) as alice,
    ):
        assert texts((await alice.call("search", query="needle"))["messages"]) == ["new needle"]
        await post(alice, "general", "newest needle")
        found = (await alice.call("search", query="needle"))["messages"]
        assert texts(found) == ["newest needle", "new needle"]


def quick_presence(config: Config) -> Config:
    return dataclasses.replace(config, presence_grace=0.3, presence_persist_every=0)


async def test_presence_is_told_to_contacts_only_and_ignores_flaps(tmp_path: Path) -> None:
    """A contact hears alice come online and go (with last_seen), once; a reconnect
    within the grace makes no event; a user sharing only the general chat hears nothing."""
    clock = Clock()
    async with (
        run_server(quick_presence(config_in(tmp_path)), clock) as running,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "eve") as eve,
    ):
        async with user_device(running.url, "alice") as alice:
            await alice.call("send", user="bob", text="hi")
            await bob.next_event("message")
            assert (await bob.call("presence", users=["alice"]))["users"] == [
                {"user": "alice", "online": True, "last_seen": None}
            ]
        # a flap: gone and back within the grace
        async with user_device(running.url, "alice", False):
            await bob.no_event(0.5)
        left_at = clock.now
        event = await bob.next_event("presence")
        assert event["params"] == {
            "user": "alice",
            "online": False,
            "last_seen": left_at,
            "cursor": event["params"]["cursor"],
        }
        async with user_device(running.url, "alice", False):
            event = await bob.next_event("presence")
            assert event["params"]["online"] is True
        await bob.next_event("presence")
        await eve.no_event(0.1)
        answer = (await bob.call("presence", users=["alice", "bob"]))["users"]
        assert answer == [
            {"user": "alice", "online": False, "last_seen": left_at},
            {"user": "bob", "online": True, "last_seen": None},
        ]
        assert (await error_of(bob, "presence", users=["nobody"])).code == -32003


async def test_last_seen_survives_a_restart(tmp_path: Path) -> None:
    """The moment the last device left is kept across a restart."""
    clock = Clock()
    config = quick_presence(config_in(tmp_path))
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        async with user_device(running.url, "bob"):
            await alice.call("send", user="bob", text="hi")
            left_at = clock.now
        event = await alice.next_event("presence")  # after the grace
        assert event["params"]["last_seen"] == left_at
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice", False) as alice,
    ):
        answer = (await alice.call("presence", users=["bob"]))["users"]
        assert answer == [{"user": "bob", "online": False, "last_seen": left_at}]


async def test_users_connected_at_shutdown_are_last_seen_then(tmp_path: Path) -> None:
    """A server that stops records last_seen for everyone still connected (within the
    grace, and however recently it was recorded before)."""
    clock = Clock()
    config = config_in(tmp_path)  # a 5 s grace and one record a minute: both bypassed
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        async with user_device(running.url, "bob"):
            await alice.call("send", user="bob", text="hi")
        async with user_device(running.url, "bob", False):
            clock.advance(10)
            stopped_at = clock.now
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice", False) as alice,
    ):
        answer = (await alice.call("presence", users=["bob"]))["users"]
        assert answer == [{"user": "bob", "online": False, "last_seen": stopped_at}]


async def test_presence_takes_1_to_100_names(tmp_path: Path) -> None:
    """`users` is a list of 1-100 names (items, in the OpenRPC document too)."""
    async with run_server(config_in(tmp_path)) as running, user_device(running.url, "alice") as a:
        for bad in ([], ["alice"] * 101, ["not a name"], [7]):
            assert (await error_of(a, "presence", users=bad)).code == -32602
        assert "1 to 100 items" in str(await error_of(a, "presence", users=[]))
        document = await a.call("rpc.discover")
        method = next(m for m in document["methods"] if m["name"] == "presence")
        schema = method["params"][0]["schema"]
        assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 100)
