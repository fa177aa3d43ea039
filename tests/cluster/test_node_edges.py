"""A cluster node's edges no other test reaches in this process (each found by a
mutant of server/cluster.py that survived every test, bench/MUTATION.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from server.app import run_server
from tests.cluster.support import Nats, node_config, nodes, until, wait_for_writer
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


async def test_a_writer_that_stops_hands_the_lease_over_at_once(tmp_path: Path, nats: Nats) -> None:
    """A writer that stops deletes its lease: a follower takes over at its lease loop's
    next tick (a third of ``lease_ttl``), not once the lease has lived out its ttl."""
    settings = {"lease_ttl": 6.0}
    async with contextlib.AsyncExitStack() as first:
        writer = await first.enter_async_context(
            run_server(node_config(tmp_path, [nats.url], "first", **settings))
        )
        await wait_for_writer(writer)
        config = node_config(tmp_path, [nats.url], "second", **settings)
        async with run_server(config) as second:
            await until(lambda: cluster_node(second).writer_name == "first")
            await first.aclose()
            began = time.monotonic()
            await wait_for_writer(second, within=10)
            assert time.monotonic() - began < 4.0  # a tick is 2 s; the lease lives 6 s


async def test_a_node_that_re_read_past_what_it_told_asks_its_devices_to_log_in_again(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower that missed events a snapshot now covers re-reads the log and closes
    its devices' connections with 1012 (service restart): it cannot tell them what
    they missed, which they learn by logging in again."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob") as bob,
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        node._follow.cancel()  # the follower stops folding for a while
        await alice.call("send", chat="general", text="missed")
        await writer.service.compact()
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        await alice.call("send", chat="general", text="after")  # a gap: a re-read
        async with asyncio.timeout(10):
            await bob.connection.wait_closed()
        assert bob.connection.close_code == 1012


async def test_a_follower_answers_a_forwarded_send_only_once_it_has_folded_it(
    tmp_path: Path, nats: Nats
) -> None:
    """The writer has decided and stored a send made through a follower; the follower
    answers its device only once its own fold has the message (a read right after the
    reply sees it), however late that fold is."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (_, follower),
        user_device(follower.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        node._follow.cancel()  # the follower stops folding for a while
        sending = asyncio.ensure_future(alice.call("send", chat="general", text="hello"))
        await asyncio.sleep(1.0)
        assert not sending.done()
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        sent = await sending
        history = await alice.call("history", chat="general")
        assert [m["id"] for m in history["messages"]] == [sent["message"]["id"]]
