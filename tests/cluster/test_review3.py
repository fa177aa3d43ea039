"""Reproductions of a fresh-eyes review of the pure-decision executor (issue 7): what
a writer answers after a fence, and commands from a node of another version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats as nats_client
import orjson

from server.domain.commands import Command
from server.domain.events import UserSeen, to_record
from server.domain.model import UserName
from tests.cluster.support import Nats, nodes, until
from tests.cluster.test_review import cluster_node, gate_appends
from tests.wsclient import user_device


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

        async def counted(command: Command) -> dict[str, Any]:
            asked.append(command)  # decided before this task first waits
            return await run_forwarded(command)

        executor.run_forwarded = counted  # type: ignore[method-assign]
        gate = gate_appends(node)
        params = {"chat": "general", "text": "once", "client_id": "k"}
        first = asyncio.ensure_future(alice.call("send", **params))
        await until(lambda: any(m.text == "once" for m in node.service.state.messages.values()))
        repeat = asyncio.ensure_future(alice.call("send", **params))
        await until(lambda: len(asked) == 2)  # the repeat, decided against the first
        # A stale writer's append lands first, at the cursor "once" was given.
        record = {**to_record(UserSeen(UserName("alice"), 1)), "c": node.service.state.cursor}
        other = await nats_client.connect(nats.url)
        try:
            await other.jetstream().publish(node.shared.names.subject, orjson.dumps([record]))
        finally:
            await other.close()
        gate.set()
        sent, again = await first, await repeat
        stored = [m.id for m in node.service.state.messages.values() if m.text == "once"]
        assert stored == [sent["message"]["id"]]
        assert again["message"]["id"] == sent["message"]["id"]
