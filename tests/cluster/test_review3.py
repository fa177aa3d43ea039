"""Reproductions of a fresh-eyes review of the pure-decision executor (issue 7): what
a writer answers after a fence, and commands from a node of another version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats as nats_client
import orjson
import pytest

from server.domain.commands import Command
from server.domain.events import UserSeen, to_record
from server.domain.model import UserName
from tests.cluster.support import Nats, nodes, until
from tests.cluster.test_review import cluster_node, gate_appends
from tests.wsclient import RpcError, connected, user_device


async def stale_append(nats: Nats, subject: str, cursor: int) -> None:
    """A stale writer's append lands first, at ``cursor``: the writer's own is fenced."""
    record = {**to_record(UserSeen(UserName("alice"), 1)), "c": cursor}
    other = await nats_client.connect(nats.url)
    try:
        await other.jetstream().publish(subject, orjson.dumps([record]))
    finally:
        await other.close()


async def test_a_client_id_repeat_answered_while_the_first_send_is_fenced_names_the_stored_message(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower's device repeats a send (its client_id) while the first is on its way
    to JetStream; that append is then fenced off and the first send decided again.
    The repeat must answer the message that was stored, not the one JetStream refused
    (main: the repeat, which made no events, was answered from the refused state)."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(follower.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        executor = node.service.executor
        asked: list[Command] = []
        run_forwarded = executor.run_forwarded

        async def counted(command: Command, within: float | None = None) -> dict[str, Any]:
            asked.append(command)  # decided before this task first waits
            return await run_forwarded(command, within)

        executor.run_forwarded = counted  # type: ignore[method-assign]
        gate = gate_appends(node)
        params = {"chat": "general", "text": "once", "client_id": "k"}
        first = asyncio.ensure_future(alice.call("send", **params))
        await until(lambda: any(m.text == "once" for m in node.service.state.messages.values()))
        repeat = asyncio.ensure_future(alice.call("send", **params))
        await until(lambda: len(asked) == 2)  # the repeat, decided against the first
        # A stale writer's append lands first, at the cursor "once" was given.
        await stale_append(nats, node.shared.names.subject, node.service.state.cursor)
        gate.set()
        sent, again = await first, await repeat
        stored = [m.id for m in node.service.state.messages.values() if m.text == "once"]
        assert stored == [sent["message"]["id"]]
        assert again["message"]["id"] == sent["message"]["id"]


async def test_a_command_from_a_node_of_another_version_is_decided_or_refused_plainly(
    tmp_path: Path, nats: Nats
) -> None:
    """A rolling upgrade: a node of a newer version sends the writer a command with a
    field the writer does not know, or a command it does not know. A field left
    unset (None, as every optional param) means what its absence means: the command is
    decided. One set to a value, or an unknown command, is refused with -32008 naming
    what the writer does not know (main: -32603 "Internal error" and a traceback in the
    writer's log, as for a bug)."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        device = (await alice.call("status"))["device"]
        names = cluster_node(writer).shared.names
        newer = await nats_client.connect(nats.url)
        try:

            async def ask(command: dict[str, Any]) -> dict[str, Any]:
                request = orjson.dumps({"op": "command", "command": command})
                answer: dict[str, Any] = orjson.loads(
                    (await newer.request(names.rpc, request, timeout=5)).data
                )
                return answer

            send = {"type": "Send", "user": "alice", "device": device, "chat": "general"}
            unset = await ask({**send, "text": "plain", "reply_to": None})
            assert unset["reply"]["message"]["text"] == "plain"
            set_ = await ask({**send, "text": "a reply", "reply_to": unset["reply"]["message"]})
            assert set_["error"]["code"] == -32008
            assert "reply_to" in set_["error"]["message"]
            pin = await ask({"type": "Pin", "user": "alice", "device": device, "message": "m"})
            assert pin["error"]["code"] == -32008
            assert "Pin" in pin["error"]["message"]
        finally:
            await newer.close()
        assert [m["text"] for m in (await alice.call("history", chat="general"))["messages"]] == [
            "plain"
        ]


async def test_a_login_whose_append_is_fenced_answers_unavailable_and_a_repeat_logs_in(
    tmp_path: Path, nats: Nats
) -> None:
    """What a login records is not a command: after a fence it is not decided again
    (protocol.md said every request was); -32008, and the repeat logs in."""
    async with nodes(tmp_path, [nats.url], 1) as (writer,):
        async with user_device(writer.url, "alice"):
            pass
        node = cluster_node(writer)
        gate = gate_appends(node)
        async with connected(writer.url) as peer:
            cursor = node.service.state.cursor
            logging_in = asyncio.ensure_future(peer.login("alice"))
            await until(lambda: node.service.state.cursor > cursor)  # its device, applied
            await stale_append(nats, node.shared.names.subject, node.service.state.cursor)
            gate.set()
            with pytest.raises(RpcError) as fenced:
                await logging_in
            assert fenced.value.code == -32008
            await until(lambda: not node.store.broken.is_set())  # the stream re-read
            assert (await peer.login("alice"))["user"] == "alice"


async def test_events_from_a_node_of_another_version_are_refused_at_once(
    tmp_path: Path, nats: Nats
) -> None:
    """A newer node's login sends the writer its DeviceAuthorized with a field the
    writer does not know: it answers -32008 at once (main: no answer at all, a
    traceback in its log, and the login waited --forward-timeout for nothing)."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice"),
    ):
        names = cluster_node(writer).shared.names
        newer = await nats_client.connect(nats.url)
        try:
            authorized = {
                "type": "DeviceAuthorized",
                "user": "alice",
                "device": "d2",
                "name": "phone",
                "token_hash": "0" * 64,
                "at": 1,
                "platform": "ios",
            }
            request = orjson.dumps({"op": "append", "events": [authorized]})
            # Well within the nodes' --forward-timeout (5 s): an answer, not a wait.
            answer = orjson.loads((await newer.request(names.rpc, request, timeout=2)).data)
        finally:
            await newer.close()
        assert answer["error"]["code"] == -32008
        assert "platform" in answer["error"]["message"]
        alice = writer.service.state.user("alice")
        assert alice is not None
        assert "d2" not in alice.devices


async def test_a_command_the_follower_gave_up_on_is_not_decided_later(
    tmp_path: Path, nats: Nats
) -> None:
    """The follower tells its device -32008 once --forward-timeout has passed; a
    command with no client_id (here `chat.create`) that the writer decided after that
    (its requests held by a compaction, a long re-read after a fence) would be made
    twice by the device's repeat. The writer decides nothing past the follower's
    patience."""
    async with (
        nodes(tmp_path, [nats.url], 2, forward_timeout=0.5) as (writer, follower),
        user_device(follower.url, "alice") as alice,
    ):
        service = writer.service
        held, release = asyncio.Event(), asyncio.Event()

        async def hold_requests() -> None:
            async with service.pause.paused():  # as a compaction does
                held.set()
                await release.wait()

        holding = asyncio.ensure_future(hold_requests())
        await held.wait()
        with pytest.raises(RpcError) as gave_up:
            await alice.call("chat.create", title="late")
        assert gave_up.value.code == -32008
        release.set()  # past the writer's share (0.8) of the follower's 0.5 s
        await holding
        created = await alice.call("chat.create", title="again")  # the device's repeat
        titles = [chat.title for chat in service.state.chats.values() if chat.title]
        assert titles == ["general", "again"], titles  # before: "late" too
        assert created["chat"]["title"] == "again"
