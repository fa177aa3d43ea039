"""Several messenger nodes on one real JetStream behave as one server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.support import Nats, nodes
from tests.wsclient import RpcError, connected, user_device


async def test_devices_on_different_nodes_get_every_event_once_in_order(
    tmp_path: Path, nats: Nats
) -> None:
    """One user's devices on two nodes get each message once, in order, own ones too."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice_a,
        connected(follower.url) as alice_b,
        user_device(follower.url, "bob") as bob,
    ):
        await alice_b.login("alice")
        for index in range(5):
            sender = alice_b if index % 2 else alice_a
            await sender.call("send", chat="general", text=f"m{index}")
        for device in (alice_a, alice_b, bob):
            got = [(await device.next_event("message"))["params"] for _ in range(5)]
            assert [e["message"]["text"] for e in got] == [f"m{i}" for i in range(5)]
            cursors = [e["cursor"] for e in got]
            assert cursors == sorted(cursors)
            await device.no_event(0.3)


async def test_a_reply_from_a_follower_comes_after_its_events(tmp_path: Path, nats: Nats) -> None:
    """A send through a follower: the sender's own event arrives before its reply."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (_, follower),
        user_device(follower.url, "alice") as alice,
    ):
        sent = await alice.call("send", chat="general", text="hi")
        assert not alice.events.empty()
        event = alice.events.get_nowait()
        assert event["params"]["message"]["id"] == sent["message"]["id"]


async def test_read_markers_sync_across_nodes(tmp_path: Path, nats: Nats) -> None:
    """A read marker moved on one node reaches the user's device on another."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "bob") as bob,
        user_device(follower.url, "alice") as a1,
        connected(writer.url) as a2,
    ):
        await a2.login("alice")
        await bob.call("send", chat="general", text="hello")
        await a1.next_event("message")
        await a1.call("read", chat="general", seq=1)
        event = await a2.next_event("read")
        assert event["params"]["read_seq"] == 1
        status = await a2.call("status")
        general = next(c for c in status["chats"] if c["id"] == "general")
        assert general["unread"] == 0


async def test_private_chats_stay_private_on_every_node(tmp_path: Path, nats: Nats) -> None:
    """A direct chat and a group are invisible to a non-member on every node."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob") as bob,
        user_device(follower.url, "eve") as eve,
    ):
        direct = (await alice.call("send", user="bob", text="secret"))["message"]["chat"]
        group = (await alice.call("chat.create", title="club"))["chat"]["id"]
        await bob.next_event("message")
        for chat in (direct, group):
            with pytest.raises(RpcError) as caught:
                await eve.call("history", chat=chat)
            assert caught.value.code in (-32002, -32003)
            with pytest.raises(RpcError) as caught:
                await eve.call("send", chat=chat, text="let me in")
            assert caught.value.code in (-32002, -32003)
        await eve.no_event(0.3)


async def test_one_name_registered_at_once_on_two_nodes(tmp_path: Path, nats: Nats) -> None:
    """The same name registered at once through two nodes: one account, one -32007."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        connected(writer.url) as one,
        connected(follower.url) as two,
    ):
        results = await asyncio.gather(
            one.call("register", user="carol", password="password1"),
            two.call("register", user="Carol", password="password2"),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, RpcError)]
        assert len(errors) == 1
        assert errors[0].code == -32007
        for running in (writer, follower):
            assert len([u for u in running.service.state.users if u == "carol"]) == 1


async def test_rate_limit_counts_sends_through_every_node(tmp_path: Path, nats: Nats) -> None:
    """The general chat's allowance is shared by sends made through any node."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=3) as (writer, follower),
        user_device(writer.url, "alice") as a1,
        connected(follower.url) as a2,
    ):
        await a2.login("alice")
        await a1.call("send", chat="general", text="1")
        await a2.call("send", chat="general", text="2")
        await a1.call("send", chat="general", text="3")
        with pytest.raises(RpcError) as caught:
            await a2.call("send", chat="general", text="4")
        assert caught.value.code == -32004


async def test_client_id_repeat_through_another_node(tmp_path: Path, nats: Nats) -> None:
    """A repeat with the same client_id through another node returns the first result."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        connected(follower.url) as first,
    ):
        await first.call("register", user="alice", password="password1")
        login = await first.login("alice")
        sent = await first.call("send", chat="general", text="once", client_id="k1")
        async with connected(writer.url) as again:
            await again.call("login", user="alice", token=login["token"])
            repeat = await again.call("send", chat="general", text="once", client_id="k1")
            assert repeat == sent
            history = await again.call("history", chat="general")
            assert [m["text"] for m in history["messages"]] == ["once"]


async def test_three_reports_through_three_nodes_ban(tmp_path: Path, nats: Nats) -> None:
    """Three reports made through three nodes ban the user on every node."""
    async with (
        nodes(tmp_path, [nats.url], 3) as running,
        user_device(running[0].url, "mallory") as mallory,
    ):
        for index, node in enumerate(running):
            async with user_device(node.url, f"judge{index}") as judge:
                await judge.call("report", user="mallory")
        await mallory.next_event("banned")
        with pytest.raises(RpcError) as caught:
            await mallory.call("send", chat="general", text="spam")
        assert caught.value.code == -32005


async def test_a_device_logged_out_on_one_node_is_cut_off_on_another(
    tmp_path: Path, nats: Nats
) -> None:
    """Logout revokes the device everywhere: its connection on another node is closed
    and its token no longer logs in on any node."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(follower.url, "alice") as here,
        connected(writer.url) as there,
    ):
        assert here.token is not None
        await there.call("login", user="alice", token=here.token)
        assert await here.call("logout") == {}
        async with asyncio.timeout(5):
            await there.connection.wait_closed()  # the server closed it
        assert there.connection.close_code == 1008
        for node in (writer, follower):
            async with connected(node.url) as again:
                with pytest.raises(RpcError) as caught:
                    await again.call("login", user="alice", token=here.token)
                assert caught.value.code == -32001
