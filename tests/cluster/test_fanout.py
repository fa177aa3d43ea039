"""A follower's fan-out: what it folds from the shared log goes out by batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.cluster.support import Nats, nodes
from tests.server.test_hostile import metric
from tests.wsclient import user_device


async def test_a_follower_writes_a_batch_from_the_log_once_per_device(
    tmp_path: Path, nats: Nats
) -> None:
    """What a follower folds from one message of the shared log goes to each of its
    devices in one write, frames in cursor order."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob") as bob,
        user_device(follower.url, "carol") as carol,
    ):
        writes = await metric(follower, "messenger_fanout_writes_total")
        frames = await metric(follower, "messenger_fanout_frames_total")
        # Sent together: the writer appends them in few messages of the log.
        await asyncio.gather(*(alice.call("send", chat="general", text=f"m{n}") for n in range(8)))
        for device in (bob, carol):
            got = [(await device.next_event("message"))["params"] for _ in range(8)]
            assert sorted(e["message"]["text"] for e in got) == [f"m{n}" for n in range(8)]
            cursors = [e["cursor"] for e in got]
            assert cursors == sorted(cursors)
        assert await metric(follower, "messenger_fanout_frames_total") - frames == 16
        assert await metric(follower, "messenger_fanout_writes_total") - writes < 16
