"""Edit, delete, search and presence across the nodes of a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.app import Running
from server.jetstream import SNAPSHOT, JetStreamStore
from tests.cluster.support import Nats, eventually, nodes, start_node
from tests.server.extras_support import error_of, texts
from tests.wsclient import Peer, connected, user_device


async def test_edit_and_delete_reach_every_node_and_outlast_a_compaction(
    tmp_path: Path, nats: Nats
) -> None:
    """Edits and deletions through a follower reach every device on both nodes; a
    stranger learns nothing on either node; after a snapshot and a restart of every
    node the edit stands and the deleted message is gone (and found by no search)."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(follower.url, "alice") as a1,
        connected(writer.url) as a2,
        user_device(writer.url, "bob") as bob,
        user_device(follower.url, "eve") as eve,
    ):
        await a2.login("alice")
        group = (await a1.call("chat.create", title="club"))["chat"]["id"]
        await a1.call("chat.invite", chat=group, user="bob")
        kept = (await a1.call("send", chat=group, text="draft"))["message"]
        doomed = (await a1.call("send", chat=group, text="oops secret"))["message"]
        edited = await a1.call("edit", message=kept["id"], text="final @bob")
        assert edited["message"]["mentions"] == ["bob"]
        await a1.call("delete", message=doomed["id"])
        for device in (a1, a2, bob):
            event = await device.next_event("message.edited")
            assert event["params"]["message"]["text"] == "final @bob"
            event = await device.next_event("message.deleted")
            assert event["params"]["id"] == doomed["id"]
        assert (await error_of(eve, "edit", message=kept["id"], text="x")).code == -32003
        assert (await error_of(eve, "delete", message=kept["id"])).code == -32003
        assert (await error_of(eve, "search", query="final", chat=group)).code == -32003
        assert (await eve.call("search", query="final"))["messages"] == []
        assert (await error_of(eve, "presence", users=["alice"])).code == -32002
        assert await stream_holds(writer, b"oops secret")  # until the compaction
        await writer.service.compact()
        assert not await stream_holds(writer, b"oops secret")
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(follower.url, "bob", False) as bob,
    ):
        history = (await bob.call("history", chat=group))["messages"]
        assert texts(history) == ["final @bob"]
        assert history[0]["edited_at"] is not None
        assert (await bob.call("search", query="secret"))["messages"] == []
        assert texts((await bob.call("search", query="FINAL"))["messages"]) == ["final @bob"]
        status = await bob.call("status")
        assert next(c for c in status["chats"] if c["id"] == group)["mentions"] == 1
        assert (await bob.call("send", chat=group, text="next"))["message"]["seq"] == 3


async def test_presence_spans_the_nodes(tmp_path: Path, nats: Nats) -> None:
    """A user is online while a device is connected on any node: moving from one node
    to the other makes no event; the last device leaving makes one, with last_seen."""
    settings: dict[str, Any] = {"presence_grace": 0.3, "presence_heartbeat": 0.2}
    async with (
        nodes(tmp_path, [nats.url], 2, **settings) as (writer, follower),
        user_device(writer.url, "bob") as bob,
    ):
        async with user_device(follower.url, "alice") as on_follower:
            await on_follower.call("send", user="bob", text="hi")
            await bob.next_event("message")
            answer = (await bob.call("presence", users=["alice"]))["users"]
            assert answer[0]["online"] is True
            async with connected(writer.url) as on_writer:
                await on_writer.login("alice")
                await on_follower.close()
                await bob.no_event(0.8)  # past the grace: still online on the writer
                answer = (await bob.call("presence", users=["alice"]))["users"]
                assert answer[0]["online"] is True
        event = await bob.next_event("presence")
        assert event["params"]["online"] is False
        assert event["params"]["last_seen"] > 0
        async with user_device(follower.url, "carol") as carol:
            await carol.call("send", user="alice", text="are you there?")
            answer = (await carol.call("presence", users=["alice"]))["users"]
            assert answer == [
                {"user": "alice", "online": False, "last_seen": event["params"]["last_seen"]}
            ]


async def test_a_node_that_dies_takes_its_users_offline(tmp_path: Path, nats: Nats) -> None:
    """A node killed without a word: after three silent heartbeats its users are
    offline on the others, and their contacts there are told."""
    flags = ("--presence-heartbeat", "0.2", "--presence-grace", "0.2")
    async with nodes(tmp_path, [nats.url], 1, presence_heartbeat=0.2) as (writer,):
        doomed = start_node(tmp_path, [nats.url], "doomed", *flags)
        try:
            async with (
                user_device(writer.url, "bob") as bob,
                user_device(doomed.url, "alice") as alice,
            ):
                await alice.call("send", user="bob", text="hi")
                await bob.next_event("message")
                await until_online(bob, "alice", True)
                doomed.kill()
                event = await bob.next_event("presence")
                assert event["params"]["user"] == "alice"
                assert event["params"]["online"] is False
                await until_online(bob, "alice", False)
        finally:
            doomed.kill()


async def until_online(peer: Peer, user: str, online: bool) -> None:
    async def holds() -> bool:
        answer = (await peer.call("presence", users=[user]))["users"]
        return bool(answer[0]["online"] is online)

    await eventually(holds)


async def stream_holds(running: Running, text: bytes) -> bool:
    """Whether ``text`` is anywhere in the cluster's stream or snapshot."""
    store = running.service.log
    assert isinstance(store, JetStreamStore)
    js = store.shared.js
    info = await js.stream_info(store.names.stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if text in ((await js.get_msg(store.names.stream, seq)).data or b""):
            return True
    snapshot = await store.shared.snapshots.get(SNAPSHOT)
    return text in (snapshot.data or b"")
