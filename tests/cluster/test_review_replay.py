"""Reproductions of a fresh-eyes review of the replay's speed-ups (issue 12) in a
cluster: what ``gc.freeze`` at a node's start puts out of the cyclic GC's reach."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from server.app import run_server
from tests.cluster.support import Nats, node_config, wait_for_writer
from tests.wsclient import user_device


async def test_a_nodes_start_freezes_no_garbage(tmp_path: Path, nats: Nats) -> None:
    """``run_server(freeze=True)`` (messenger-server's start) on a fresh cluster: the
    snapshot lookup fails (no snapshot yet), leaving a task, its exception, their
    tracebacks and frames in reference cycles, made while the replay keeps the GC off.
    Frozen with the state, they would never be freed: nothing frozen may be garbage
    (main: 43 objects, for as long as the node runs)."""
    config = node_config(tmp_path, [nats.url], "node1")
    gc.collect()
    gc.unfreeze()
    try:
        async with run_server(config, freeze=True) as running:
            await wait_for_writer(running)
            assert gc.get_freeze_count() > 0
            gc.collect()  # whatever garbage the cyclic GC can reach
            gc.unfreeze()
            assert gc.collect() == 0  # what the freeze had put out of its reach
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("freeze", [False, True], ids=["gc", "frozen"])
async def test_the_state_a_re_read_replaces_is_freed(
    tmp_path: Path, nats: Nats, freeze: bool
) -> None:
    """A node's re-read of the log (a gap, a fenced append) replaces the state it
    started with: the old one goes with the last reference to it, frozen (no collection
    reaches it) or not. (main: ``run_server``'s local kept it, a second copy of the
    whole state for as long as the node runs.)"""
    config = node_config(tmp_path, [nats.url], "node1")
    gc.unfreeze()
    try:
        async with run_server(config, freeze=freeze) as running:
            await wait_for_writer(running)
            async with user_device(running.url, "alice") as alice:
                await alice.call("send", chat="general", text="hi")
            node = running.node
            assert node is not None
            started = weakref.ref(running.service.state)
            await node._rebuild()
            await asyncio.sleep(0.2)  # the follow loop, restarted, is under way
            assert len(running.service.state.messages) == 1
            gc.collect()
            assert started() is None
    finally:
        gc.unfreeze()
