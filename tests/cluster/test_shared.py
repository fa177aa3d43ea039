"""What the cluster shares beyond the log: snapshots for new nodes, scheduled
messages posted once, files seen from every node."""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path
from typing import Any

from nats.js.errors import ObjectNotFoundError

from server.app import Running, run_server
from server.jetstream import JetStreamStore
from tests.cluster.support import Nats, eventually, node_config, nodes, until, wait_for_writer
from tests.server.extras_support import Clock, http_get
from tests.server.test_files import CHUNK, bearer, upload
from tests.wsclient import connected, user_device


def stream_store(running: Running) -> JetStreamStore:
    store = running.service.log
    assert isinstance(store, JetStreamStore)
    return store


async def test_a_new_node_starts_from_the_snapshot(tmp_path: Path, nats: Nats) -> None:
    """The writer stores a snapshot and purges the stream below it; a node that joins
    later loads the snapshot and the tail, not every event since the first."""
    settings: dict[str, Any] = {
        "compact_bytes": 3000,
        "housekeeping_interval": 0.05,
        "rate_limit": 1000,
    }
    async with (
        nodes(tmp_path, [nats.url], 1, **settings) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        for index in range(40):
            await alice.call("send", chat="general", text=f"message {index} " + "x" * 100)
        store = stream_store(writer)
        await until(lambda: store.snapshot_position > 0)
        info = await store.shared.js.stream_info(store.names.stream)
        assert info.state.first_seq > 1  # purged below the snapshot
        await alice.call("send", chat="general", text="after the snapshot")
        config = node_config(tmp_path, [nats.url], "late", **settings)
        async with run_server(config) as late, connected(late.url) as again:
            late_store = stream_store(late)
            assert late_store.snapshot_position > 0
            await again.login("alice")
            history = await again.call("history", chat="general", limit=100)
            assert len(history["messages"]) == 41
            assert history["messages"][-1]["text"] == "after the snapshot"
            assert late.service.state.cursor == writer.service.state.cursor


async def test_a_scheduled_message_is_posted_once_by_whichever_node_writes(
    tmp_path: Path, nats: Nats
) -> None:
    """Scheduled through a follower; the writer stops before it is due; the node that
    takes over posts it, exactly once."""
    settings = {"timer_resolution": 0.05}
    async with contextlib.AsyncExitStack() as first:
        writer = await first.enter_async_context(
            run_server(node_config(tmp_path, [nats.url], "first", **settings))
        )
        await wait_for_writer(writer)
        config = node_config(tmp_path, [nats.url], "second", **settings)
        async with run_server(config) as second, user_device(second.url, "alice") as alice:
            due = int(time.time() * 1000) + 1500
            scheduled = await alice.call("send", chat="general", text="later", send_at=due)
            assert "scheduled" in scheduled
            await first.aclose()  # the writer goes before the message is due
            await wait_for_writer(second)
            event = await alice.next_event("message")
            assert event["params"]["message"]["text"] == "later"
            await alice.no_event(1.0)
            history = await alice.call("history", chat="general")
            assert [m["text"] for m in history["messages"]] == ["later"]
            assert (await alice.call("scheduled"))["scheduled"] == []


async def test_a_file_uploaded_through_one_node_downloads_from_another(
    tmp_path: Path, nats: Nats
) -> None:
    """Files live in the Object Store: uploaded through a follower, they download from
    the writer, by RPC and by HTTP."""
    content = bytes(range(256)) * 40
    async with (
        nodes(tmp_path, [nats.url], 2, upload_chunk_size=CHUNK) as (writer, follower),
        user_device(follower.url, "alice") as alice,
        connected(writer.url) as elsewhere,
    ):
        file = await upload(alice, content, "data.bin", "application/octet-stream")
        await alice.call("send", chat="general", text="", file=file["id"])
        await elsewhere.login("alice")
        got = b""
        offset = 0
        while True:
            piece = await elsewhere.call("download", file=file["id"], offset=offset)
            data = base64.b64decode(piece["data"])
            got += data
            offset += len(data)
            if piece["eof"]:
                break
        assert got == content
        reply = await http_get(writer, f"/files/{file['id']}", bearer(elsewhere))
        assert reply.status == 200
        assert reply.body == content


async def test_a_dropped_file_leaves_the_object_store_and_every_cache(
    tmp_path: Path, nats: Nats
) -> None:
    """A file no message carries is dropped by the writer: after the grace period its
    bytes leave the Object Store, and the follower's cached copy goes too."""
    clock = Clock()
    content = b"forget me" * 100
    settings: dict[str, Any] = {
        "upload_chunk_size": CHUNK,
        "housekeeping_interval": 0.05,
        "blob_grace": 0.1,
    }
    async with (
        nodes(tmp_path, [nats.url], 2, clock=clock, **settings) as (writer, follower),
        user_device(follower.url, "alice") as alice,
    ):
        file = await upload(alice, content, "old.bin", "application/octet-stream")
        cached = follower.service.config.state_dir / "files" / file["sha256"]
        assert cached.exists()
        store = stream_store(writer)
        assert (await store.shared.files.get(file["sha256"])).data == content
        clock.advance(3601)
        await until(lambda: not follower.service.state.files)

        async def gone() -> bool:
            # get_info, not get: a get that overlaps the delete waits for ever for
            # chunks purged under it (nats-py; the server reads with a timeout).
            try:
                await store.shared.files.get_info(file["sha256"])
            except ObjectNotFoundError:
                return True
            return False

        await eventually(gone)
        await until(lambda: not cached.exists())
