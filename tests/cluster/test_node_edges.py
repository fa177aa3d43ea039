"""A cluster node's edges no other test reaches in this process (each found by a
mutant of server/cluster.py that survived every test, bench/MUTATION.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster.support import Nats, nodes, until
from tests.cluster.test_review import cluster_node
from tests.wsclient import RpcError, user_device


async def test_without_nats_a_follower_refuses_at_once_and_says_so(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower says on /healthz whom it follows; with NATS gone, it says it cannot
    reach NATS (503) and refuses a send at once with -32008, not after waiting
    ``forward_timeout`` for no writer; once NATS is back it says ``ok`` again."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (_, follower),
        user_device(follower.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        await until(lambda: node.health()[1].startswith("ok node node2 follower of node1 "))
        nats.kill()
        await until(lambda: not node.shared.connected)
        assert node.health() == (False, "unavailable: node node2 cannot reach NATS")
        began = time.monotonic()
        with pytest.raises(RpcError) as refused:
            await alice.call("send", chat="general", text="while NATS is away")
        assert refused.value.code == -32008
        assert "node2 cannot reach the shared log" in str(refused.value)
        assert time.monotonic() - began < 2.0  # forward_timeout is 5 s
        nats.start()
        await until(lambda: node.health()[0], 20)
