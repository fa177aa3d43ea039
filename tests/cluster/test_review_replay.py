"""Reproductions of a fresh-eyes review of the replay's speed-ups (issue 12) in a
cluster: what ``gc.freeze`` at a node's start puts out of the cyclic GC's reach."""

from __future__ import annotations

import gc
from pathlib import Path

from server.app import run_server
from tests.cluster.support import Nats, node_config, wait_for_writer


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
