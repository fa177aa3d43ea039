"""Connecting to the cluster's JetStream, and the files in its Object Store: the edges
a cluster of nodes does not reach (each found by a mutant that survived every test,
bench/MUTATION.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import nats.js.errors
import pytest

from server import jetstream
from server.jetstream import ObjectBlobs
from server.store import StoreFailed
from tests.cluster.support import Nats, free_port, nats_server


def connections(server: Nats) -> int:
    """How many clients the nats-server has, from its monitoring endpoint."""
    url = f"http://127.0.0.1:{server.monitor_port}/connz"
    with urllib.request.urlopen(url, timeout=5) as reply:
        found: int = json.load(reply)["num_connections"]
        return found


async def test_a_stream_of_another_configuration_is_refused_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    """A stream under the cluster's name but of another configuration is refused at
    once (not asked for again and again), and the node leaves no connection open."""
    server = Nats(tmp_path / "nats", monitor_port=free_port())
    server.start()
    try:
        other = await nats.connect(server.url)
        await other.jetstream().add_stream(name="taken_events", subjects=["elsewhere"])
        await other.close()
        async with asyncio.timeout(10):
            with pytest.raises(nats.js.errors.BadRequestError):
                await jetstream.connect([server.url], "taken", 1.0, "a")
        assert await asyncio.to_thread(connections, server) == 0
    finally:
        server.stop()


async def test_a_jetstream_cluster_too_small_for_three_replicas_is_refused(
    tmp_path: Path,
) -> None:
    """Two clustered JetStream servers cannot place three replicas: a node refuses to
    start on them rather than keep the log on one server unreplicated."""
    ports = [free_port() for _ in range(2)]
    servers = [
        Nats(tmp_path / f"js{index}", name=f"js{index}", cluster_port=port, routes=ports)
        for index, port in enumerate(ports)
    ]
    for server in servers:
        server.start()
    try:
        with pytest.raises(nats.js.errors.BadRequestError, match="no suitable peers"):
            await jetstream.connect([server.url for server in servers], "small", 1.0, "a")
    finally:
        for server in servers:
            server.stop()


async def test_without_jetstream_a_node_asks_every_half_second_then_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A NATS without JetStream (or one still electing a leader) is asked again every
    half second, and a node gives up with StoreFailed once ``READY_WITHIN`` passed."""
    monkeypatch.setattr(jetstream, "READY_WITHIN", 1.2)
    server = Nats(tmp_path / "nats", jetstream=False)
    server.start()
    try:
        with caplog.at_level(logging.INFO, logger="messenger.server.cluster"):
            async with asyncio.timeout(10):
                with pytest.raises(StoreFailed, match=r"did not answer within 1\.2 s"):
                    await jetstream.connect([server.url], "none", 1.0, "a")
        waits = [r for r in caplog.records if "waiting for JetStream" in r.getMessage()]
        assert 2 <= len(waits) <= 4
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def object_blobs(
    tmp_path: Path, in_use: Callable[[], set[str]], grace: float = 60.0
) -> AsyncIterator[ObjectBlobs]:
    with nats_server(tmp_path) as server:
        shared = await jetstream.connect([server.url], "files", 1.0, "a")
        cache = tmp_path / "cache"
        cache.mkdir()
        try:
            yield ObjectBlobs(shared, cache, in_use, grace)
        finally:
            await shared.close()


async def stored(blobs: ObjectBlobs, content: bytes) -> str:
    sha256 = hashlib.sha256(content).hexdigest()
    await blobs.shared.files.put(sha256, content)
    return sha256


async def test_a_pruned_copy_is_fetched_again_and_a_missing_file_leaves_nothing(
    tmp_path: Path,
) -> None:
    """A fetch once done is not remembered: a copy pruned from the cache comes back
    with the next fetch; a fetch of a file the store does not hold leaves no part
    file behind."""
    async with object_blobs(tmp_path, set) as blobs:
        sha256 = await stored(blobs, b"a file" * 100)
        await blobs.fetch(sha256)
        blobs.prune_cache(set())
        assert list(blobs.cache.iterdir()) == []
        await blobs.fetch(sha256)
        await blobs.fetch("0" * 64)
        assert [path.name for path in blobs.cache.iterdir()] == [sha256]
        assert (blobs.cache / sha256).read_bytes() == b"a file" * 100


async def test_pruning_keeps_the_files_named_and_those_being_fetched(tmp_path: Path) -> None:
    """``prune_cache(keep)`` deletes the copies not in ``keep``, but no part file of a
    fetch under way."""
    async with object_blobs(tmp_path, set) as blobs:
        for name in ("kept", "dropped", "coming.1a2b3c4d.part"):
            (blobs.cache / name).write_bytes(b"x")
        blobs.prune_cache({"kept"})
        assert sorted(path.name for path in blobs.cache.iterdir()) == [
            "coming.1a2b3c4d.part",
            "kept",
        ]


async def test_a_file_in_use_again_within_the_grace_is_not_removed(tmp_path: Path) -> None:
    """``remove`` waits the grace period and asks again: a file in use again by then
    stays in the Object Store, one still unused goes."""
    in_use: set[str] = set()
    async with object_blobs(tmp_path, lambda: in_use, grace=0.5) as blobs:
        back = await stored(blobs, b"stored again")
        gone = await stored(blobs, b"forgotten")
        removing = asyncio.gather(blobs.remove(back), blobs.remove(gone))
        await asyncio.sleep(0.1)
        in_use.add(back)
        await removing
        await blobs.shared.files.get_info(back)
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await blobs.shared.files.get_info(gone)
