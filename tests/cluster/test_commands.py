"""Commands in a cluster (issue 7): a follower sends the writer the command as data;
a writer whose append was fenced off decides again; one whose append's outcome is
unknown does not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats as nats_client
import orjson
import pytest
from nats.aio.msg import Msg

from server.domain.events import UserSeen, to_record
from server.domain.model import UserName
from tests.cluster.support import Nats, lose_the_next_ack, nodes, until
from tests.cluster.test_review import cluster_node, gate_appends, texts
from tests.wsclient import RpcError, user_device


async def test_a_followers_send_goes_to_the_writer_as_a_command(tmp_path: Path, nats: Nats) -> None:
    """A follower's device sends: the writer gets the typed command (not the JSON-RPC
    request), decides it, and the device gets the reply and the event as ever."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(follower.url, "alice") as alice,
        user_device(writer.url, "bob") as bob,
    ):
        node = cluster_node(writer)
        asked: list[dict[str, Any]] = []

        async def overheard(message: Msg) -> None:
            asked.append(orjson.loads(message.data))

        listener = await node.shared.nc.subscribe(node.shared.names.rpc, cb=overheard)
        await node.shared.nc.flush()  # the server has the subscription
        device = (await alice.call("status"))["device"]
        sent = await alice.call("send", chat="general", text="hi", client_id="k1")
        assert sent["message"]["id"] in node.service.state.messages  # decided by the writer
        event = await alice.next_event("message")
        assert event["params"]["message"] == sent["message"]
        assert (await bob.next_event("message"))["params"]["message"] == sent["message"]
        with pytest.raises(RpcError) as refused:  # the writer's refusal, passed on
            await alice.call("delete", message="nothing")
        assert refused.value.code == -32003
        # The listener's copies come on their own task: maybe after the replies.
        await until(lambda: sum(a.get("op") == "command" for a in asked) >= 2)
        await listener.unsubscribe()
        commands = [a["command"] for a in asked if a.get("op") == "command"]
        assert commands[0] == {
            "type": "Send",
            "user": "alice",
            "device": device,
            "text": "hi",
            "chat": "general",
            "to": None,
            "file": None,
            "send_at": None,
            "client_id": "k1",
        }
        assert commands[1]["type"] == "Delete"
        assert not [a for a in asked if a.get("op") == "call"]


async def test_a_fenced_writer_decides_again_and_answers(tmp_path: Path, nats: Nats) -> None:
    """Another writer appends while the writer's append is on its way: JetStream fences
    it off, the writer re-reads the stream, decides the send again and answers it as
    if nothing happened; the message is stored once."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        names = node.shared.names
        gate = gate_appends(node)
        sending = asyncio.ensure_future(alice.call("send", chat="general", text="once"))
        await until(lambda: any(m.text == "once" for m in node.service.state.messages.values()))
        # A stale writer's append lands first, at the cursor "once" was given.
        record = {**to_record(UserSeen(UserName("alice"), 1)), "c": node.service.state.cursor}
        other = await nats_client.connect(nats.url)
        try:
            await other.jetstream().publish(names.subject, orjson.dumps([record]))
        finally:
            await other.close()
        gate.set()
        sent = await sending
        assert sent["message"]["text"] == "once"
        assert node.writer
        assert await texts(alice) == ["once"]
        await node._rebuild()  # the stream read back: the message is there once
        stored = [m for m in node.service.state.messages.values() if m.text == "once"]
        assert [m.id for m in stored] == [sent["message"]["id"]]
        seen = node.service.state.user("alice")
        assert seen is not None
        assert seen.last_seen == 1


async def test_an_append_of_unknown_outcome_is_not_decided_again(
    tmp_path: Path, nats: Nats
) -> None:
    """No answer from JetStream: the append may be stored, so nothing is decided again;
    the device gets -32008, and its repeat with the client_id finds the one message."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        lose_the_next_ack(node.shared.js)
        with pytest.raises(RpcError) as caught:
            await alice.call("send", chat="general", text="maybe", client_id="k")
        assert caught.value.code == -32008

        await until(lambda: not node.store.broken.is_set())  # the writer re-read the stream
        again = await alice.call("send", chat="general", text="maybe", client_id="k")
        assert again["message"]["text"] == "maybe"
        assert await texts(alice) == ["maybe"]


async def test_a_writer_fenced_off_again_and_again_gives_up_after_three_more_decisions(
    tmp_path: Path, nats: Nats
) -> None:
    """A stale writer's append lands first every time: the writer decides the send once
    and three times more (each after re-reading the stream), then answers -32008 rather
    than loop; nothing of it is stored, and the device's repeat posts it once."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        js = node.shared.js
        subject = node.shared.names.subject
        publish = js.publish
        attempts: list[int] = []

        async def always_second(to: str, payload: bytes = b"", **kwargs: Any) -> Any:
            if to == subject:
                cursor = orjson.loads(payload)[0]["c"]  # the cursor the send was given
                attempts.append(cursor)
                stale = {**to_record(UserSeen(UserName("alice"), len(attempts))), "c": cursor}
                await publish(subject, orjson.dumps([stale]))  # no expected sequence: first
            return await publish(to, payload, **kwargs)

        js.publish = always_second  # type: ignore[method-assign,assignment]
        with pytest.raises(RpcError) as caught:
            await alice.call("send", chat="general", text="contested", client_id="k")
        assert caught.value.code == -32008
        assert len(attempts) == 4
        assert attempts == sorted(set(attempts))  # each decided against the re-read stream
        js.publish = publish  # type: ignore[method-assign]
        await until(lambda: not node.store.broken.is_set())
        again = await alice.call("send", chat="general", text="contested", client_id="k")
        assert again["message"]["text"] == "contested"
        assert await texts(alice) == ["contested"]
        seen = node.service.state.user("alice")
        assert seen is not None
        assert seen.last_seen == 4  # every stale append was folded
