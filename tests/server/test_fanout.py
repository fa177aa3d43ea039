"""Fan-out by batch, on a real server with real connections: what a durable batch owes
one device goes out in one write (separate frames, in cursor order), a device is cut
off mid-batch past the unsent bound, and it resumes across the cut."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from server.app import Running, run_server
from server.config import FsyncPolicy
from server.domain.model import UserKey
from server.log import EventLog
from server.transport import WebSocketPeer
from tests.server.extras_support import config_in
from tests.server.test_durability import slow_device
from tests.server.test_hostile import metric
from tests.wsclient import Peer, connected, user_device


@asynccontextmanager
async def disk_stalled(running: Running) -> AsyncIterator[None]:
    """The log's I/O thread is busy until the block ends: what is recorded meanwhile
    becomes durable in one group commit, one batch."""
    log = running.service.log
    assert isinstance(log, EventLog)
    disk_back = threading.Event()
    stuck = asyncio.get_running_loop().run_in_executor(log._io, disk_back.wait, 10)
    try:
        yield
    finally:
        disk_back.set()
        await stuck


async def one_batch(running: Running, *calls: Awaitable[Any]) -> tuple[list[Any], float, float]:
    """Run ``calls`` so that their events are durable together; their results, and the
    transport writes and frames written meanwhile."""
    writes = await metric(running, "messenger_fanout_writes_total")
    frames = await metric(running, "messenger_fanout_frames_total")
    async with disk_stalled(running):
        tasks = [asyncio.ensure_future(call) for call in calls]
        for _ in range(500):  # until every request waits for the disk
            if await metric(running, "messenger_requests_in_flight") == len(tasks):
                break
            await asyncio.sleep(0.01)
    results = await asyncio.gather(*tasks)
    return (
        results,
        await metric(running, "messenger_fanout_writes_total") - writes,
        await metric(running, "messenger_fanout_frames_total") - frames,
    )


async def messages(peer: Peer, count: int) -> list[tuple[int, str]]:
    """The next ``count`` messages pushed to ``peer``: (cursor, text)."""
    got = []
    for _ in range(count):
        event = await peer.next_event("message")
        got.append((event["params"]["cursor"], event["params"]["message"]["text"]))
    return got


async def test_a_batch_goes_to_each_device_in_one_write_frames_in_cursor_order(
    tmp_path: Path,
) -> None:
    """A device owed many frames and one owed a single frame by the same batch each get
    them in one write; per device the cursors rise across batches."""
    async with (
        run_server(config_in(tmp_path, fsync=FsyncPolicy.ALWAYS)) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        await alice.call("send", user="bob", text="hello")  # the direct chat exists
        await messages(bob, 1)
        await messages(alice, 1)
        seen: dict[str, list[tuple[int, str]]] = {"alice": [], "bob": [], "carol": []}
        for batch in range(3):
            sends = [alice.call("send", user="bob", text=f"{batch}.dm{n}") for n in range(5)]
            sends.append(alice.call("send", chat="general", text=f"{batch}.all"))
            results, writes, frames = await one_batch(running, *sends)
            assert len(results) == 6
            # alice: 6 events, then her 6 replies in a write of their own (the
            # requests wake once the events are out); bob: 6 events; carol: 1 event.
            assert (writes, frames) == (4, 19)
            seen["alice"] += await messages(alice, 6)
            seen["bob"] += await messages(bob, 6)
            seen["carol"] += await messages(carol, 1)
        for user, got in seen.items():
            cursors = [cursor for cursor, _ in got]
            assert cursors == sorted(set(cursors)), user
        assert [text for _, text in seen["carol"]] == ["0.all", "1.all", "2.all"]
        assert sorted(text for _, text in seen["bob"]) == sorted(
            f"{batch}.{what}"
            for batch in range(3)
            for what in ("all", "dm0", "dm1", "dm2", "dm3", "dm4")
        )
        assert seen["alice"] == seen["bob"]  # one order for everyone
        await bob.no_event(0.05)
        await carol.no_event(0.05)


async def test_a_slow_device_is_cut_off_mid_batch_and_resumes_across_the_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that does not read is cut off at the frame of a batch that takes it past
    the bound, not at the batch's end; the others get every batch. Logging in again
    with the last cursor it got, it is told what it missed is too much to push, and
    history then has the rest: nothing lost, nothing twice, in order."""
    limit = 64 * 2**10
    config = config_in(tmp_path, send_buffer_limit=limit, fsync=FsyncPolicy.ALWAYS)
    filler = "x" * 1000
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        async with slow_device(running.url, "carol") as slow:
            # A thin pipe: the kernel holds a few KB for it, not megabytes.
            (session,) = running.service.hub.sessions_of(UserKey("carol"))
            assert isinstance(session.peer, WebSocketPeer)
            sock = session.peer.connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sent = 0
            while not await metric(running, "messenger_slow_cutoffs_total"):
                assert sent < 2000, "the slow device was never cut off"
                await asyncio.gather(
                    *(
                        alice.call("send", chat="general", text=f"{sent + n} {filler}")
                        for n in range(8)
                    )
                )
                sent += 8
            got = [text.split()[0] for _, text in await messages(bob, sent)]
            assert got == [str(n) for n in range(sent)]
            before_cut = [e["params"] for e in await slow.drain_until_closed()]
        cut = [r.getMessage() for r in caplog.records if "cutting off" in r.getMessage()]
        assert len(cut) == 1, cut
        assert "user=carol" in cut[0]
        unsent = re.search(r"(\d+) bytes unsent", cut[0])
        assert unsent is not None
        assert limit < int(unsent[1]) <= limit + 1100  # one frame past the bound
        since = before_cut[-1]["cursor"] if before_cut else slow.cursor
        after = before_cut[-1]["message"]["seq"] if before_cut else 0
        async with connected(running.url) as carol:
            result = await carol.call("login", user="carol", password="password1", since=since)
            assert result["resumed"] is False  # more than half the bound: refetch instead
            page = await carol.call("history", chat="general", after=after, limit=100)
            rest = [m["text"].split()[0] for m in page["messages"]]
            texts = [p["message"]["text"].split()[0] for p in before_cut] + rest
            assert not page["has_more"]
            assert texts == [str(n) for n in range(sent)]
