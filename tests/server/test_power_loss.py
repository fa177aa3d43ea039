"""Durability at the log's write/fsync boundary, with the power cut a kill -9 cannot
show: a disk layer (as lazyfs is for databases) whose writes reach the file at once,
as the page cache would, but of which only what an fsync covered survives the cut."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from server.app import LOG_FILE, run_server
from server.config import Config, FsyncPolicy
from server.log import EventLog
from server.store import Snapshot
from tests.server.extras_support import Clock, config_in, post
from tests.wsclient import Peer, RpcError, connected, user_device


class PowerCutDisk:
    """The log's ``Disk``: real writes and fsyncs that remember, per file, how many bytes
    an fsync made durable. ``cut_after(n)`` lets the power go right after the n-th write
    from now: that write is in the file but its fsync fails, and so does all that follows.
    ``lose_unsynced`` is the reboot: the file keeps what was fsynced (and ``torn`` bytes
    more, a page that happened to reach the disk)."""

    def __init__(self, fsync_delay: float = 0.0) -> None:
        self.fsync_delay = fsync_delay  # a slow disk: a reply sent too early shows
        self.lock = threading.Lock()
        self.durable: dict[int, int] = {}  # inode -> bytes covered by an fsync
        self.writes = 0
        self.cut_at: int | None = None
        self.off = False

    def cut_after(self, writes: int) -> None:
        with self.lock:
            self.cut_at = self.writes + writes

    def write(self, fd: int, data: memoryview) -> int:
        with self.lock:
            if self.off:
                raise OSError(errno.EIO, "the power is off")
            written = os.write(fd, data)
            self.writes += 1
            self.off = self.writes == self.cut_at
            return written

    def fsync(self, fd: int) -> None:
        time.sleep(self.fsync_delay)
        with self.lock:
            if self.off:
                raise OSError(errno.EIO, "the power is off")
            os.fsync(fd)
            stat = os.fstat(fd)
            self.durable[stat.st_ino] = stat.st_size

    def durable_bytes(self, path: Path) -> bytes:
        with self.lock:
            return path.read_bytes()[: self.durable.get(path.stat().st_ino, 0)]

    def lose_unsynced(self, path: Path, torn: int = 0) -> int:
        """Cut ``path`` back to its durable bytes (plus ``torn``); how many were lost."""
        size = path.stat().st_size
        keep = min(size, self.durable.get(path.stat().st_ino, 0) + torn)
        os.truncate(path, keep)
        return size - keep


async def test_an_append_is_done_only_after_the_fsync_that_covers_it(tmp_path: Path) -> None:
    """Under fsync always, each append's future completes only once an fsync covered its
    bytes, also when appends are grouped into one write."""
    disk = PowerCutDisk(fsync_delay=0.01)
    log = EventLog(tmp_path / "events.log", FsyncPolicy.ALWAYS, disk=disk)
    log.open()
    try:

        async def append(n: int) -> None:
            await log.append([{"type": "T", "n": n}])
            assert b'"n":%d}' % n in disk.durable_bytes(log.path)

        await asyncio.gather(*(append(n) for n in range(50)))
        assert disk.writes < 50  # grouped: the check above saw group commits too
    finally:
        await log.close()


async def test_under_batch_appends_are_fsynced_within_the_interval(tmp_path: Path) -> None:
    """Under fsync batch an append is done after its write, before any fsync; the periodic
    sync makes it durable within the interval, and close makes the rest durable."""
    disk = PowerCutDisk()
    log = EventLog(tmp_path / "events.log", FsyncPolicy.BATCH, batch_interval=0.02, disk=disk)
    log.open()
    try:
        await log.append([{"type": "T", "n": 1}])
        assert disk.durable_bytes(log.path) == b""
        for _ in range(100):
            if disk.durable_bytes(log.path):
                break
            await asyncio.sleep(0.01)
        assert b'"n":1}' in disk.durable_bytes(log.path)
        await log.append([{"type": "T", "n": 2}])
    finally:
        await log.close()
    assert b'"n":2}' in disk.durable_bytes(log.path)


async def test_close_makes_what_is_still_queued_durable(tmp_path: Path) -> None:
    """Records appended but not yet written when close is called are written and fsynced
    before close returns, under every policy."""
    for policy in FsyncPolicy:
        disk = PowerCutDisk()
        log = EventLog(tmp_path / f"{policy}.log", policy, batch_interval=60, disk=disk)
        log.open()
        queued = log.append([{"type": "T", "n": 7}])
        await log.close()
        assert queued.done()
        assert b'"n":7}' in disk.durable_bytes(log.path), policy


async def test_a_compacted_log_is_durable_before_the_compaction_is_done(tmp_path: Path) -> None:
    """Once compact's future is done, a power cut keeps the snapshot whole and the cut
    log: the snapshot written aside was fsynced before it replaced the old one."""
    disk = PowerCutDisk()
    log = EventLog(tmp_path / "events.log", FsyncPolicy.NEVER, disk=disk)
    log.open()
    try:
        await log.append([{"type": "T", "n": n} for n in range(3)])
        snapshot = Snapshot(b"x" * 3 * 2**20, 3)
        await log.compact(snapshot)
        assert disk.lose_unsynced(log.snapshots.path) == 0
        assert disk.lose_unsynced(log.path) == 0
        assert log.snapshots.read() == snapshot
    finally:
        await log.close()


async def test_the_log_is_created_with_its_directory_and_mode_0600(tmp_path: Path) -> None:
    """Opening a log in a directory that does not exist yet creates both; only the owner
    may read the file (it holds password hashes)."""
    log = EventLog(tmp_path / "new" / "events.log", FsyncPolicy.ALWAYS)
    log.open()
    try:
        await log.append([{"type": "T"}])
    finally:
        await log.close()
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


async def test_a_reply_leaves_only_after_the_fsync_of_its_events(tmp_path: Path) -> None:
    """Under --fsync always, when a send's reply arrives its message is already in the
    log's fsynced bytes: for every device sending at once, on a slow disk."""
    disk = PowerCutDisk(fsync_delay=0.01)
    config = config_in(tmp_path)
    path = config.state_dir / LOG_FILE
    async with run_server(config, Clock(), disk) as running:

        async def sender(name: str) -> None:
            async with user_device(running.url, name) as device:
                for n in range(10):
                    message = await post(device, "general", f"{name} {n}")
                    assert message["id"].encode() in disk.durable_bytes(path)

        await asyncio.gather(*(sender(f"user{n}") for n in range(4)))


async def send_until_the_power_goes(running_url: str, names: list[str]) -> list[str]:
    """Every device sends until a send fails; the texts of the sends acknowledged."""
    acknowledged: list[str] = []

    async def sender(device: Peer, name: str) -> int:
        for n in range(10_000):
            try:
                await post(device, "general", f"{name} {n}")
            except RpcError as error:
                return error.code
            acknowledged.append(f"{name} {n}")
        return 0

    async with connected(running_url) as first, connected(running_url) as second:
        devices = [first, second]
        for device, name in zip(devices, names, strict=True):
            await device.login(name)
        codes = await asyncio.gather(*(sender(d, n) for d, n in zip(devices, names, strict=True)))
    assert codes == [-32603, -32603]  # nothing can be confirmed durable any more
    return acknowledged


async def history_texts(config: Config) -> list[str]:
    async with run_server(config, Clock()) as running, user_device(running.url, "reader") as peer:
        texts = []
        after = 0
        while True:
            page = await peer.call("history", chat="general", after=after, limit=100)
            texts += [message["text"] for message in page["messages"]]
            if not page["has_more"]:
                return texts
            after = page["messages"][-1]["seq"]


@pytest.mark.parametrize("torn", [0, 100], ids=["clean-cut", "torn-page"])
async def test_every_acknowledged_message_survives_a_power_cut(tmp_path: Path, torn: int) -> None:
    """Power cut mid-traffic (written, not fsynced: lost, or torn): after the reboot and
    replay every acknowledged message is there, and the server takes new ones."""
    disk = PowerCutDisk()
    config = config_in(tmp_path, message_ttl=0)
    names = ["alice", "bob"]
    async with run_server(config, Clock(), disk) as running:
        for name in names:
            async with connected(running.url) as peer:
                await peer.call("register", user=name, password="password1")
        disk.cut_after(30)
        acknowledged = await send_until_the_power_goes(running.url, names)
        await asyncio.wait_for(running.failed.wait(), 5)
    assert len(acknowledged) >= 20  # the writes before the cut acknowledged sends
    lost = disk.lose_unsynced(config.state_dir / LOG_FILE, torn)
    assert lost > 0  # the cut write reached the file, and is gone

    survivors = await history_texts(config)
    assert set(acknowledged) <= set(survivors)
    async with run_server(config, Clock()) as running, connected(running.url) as alice:
        await alice.login("alice")
        after = await post(alice, "general", "after the reboot")
        assert after["seq"] == len(survivors) + 1


async def test_a_repeated_client_id_is_answered_only_once_its_first_send_is_durable(
    tmp_path: Path,
) -> None:
    """A send repeated with its client_id while the first is still on its way to the
    disk gets the first's message, but only once that message is fsynced: a reply
    must not rest on an event a power cut could still take away."""
    disk = PowerCutDisk(fsync_delay=0.3)
    config = config_in(tmp_path)
    path = config.state_dir / LOG_FILE
    async with (
        run_server(config, Clock(), disk) as running,
        user_device(running.url, "alice") as alice,
    ):
        await post(alice, "general", "warm-up")  # the login's events are durable
        first = asyncio.ensure_future(post(alice, "general", "once", client_id="c-1"))
        await asyncio.sleep(0.05)  # the first is decided and being written
        repeat = await post(alice, "general", "once", client_id="c-1")
        assert repeat["id"].encode() in disk.durable_bytes(path)
        assert (await first)["id"] == repeat["id"]


async def test_a_refusal_resting_on_an_event_is_given_only_once_that_event_is_durable(
    tmp_path: Path,
) -> None:
    """A comment on a message whose deletion is still on its way to the disk is refused
    ("not found"), but only once the deletion is fsynced: were the power to go first,
    the message would still be there."""
    disk = PowerCutDisk(fsync_delay=0.3)
    config = config_in(tmp_path)
    path = config.state_dir / LOG_FILE
    async with (
        run_server(config, Clock(), disk) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        message = await post(alice, "general", "soon gone")
        deleting = asyncio.ensure_future(alice.call("delete", message=message["id"]))
        await asyncio.sleep(0.05)  # the deletion is decided and being written
        with pytest.raises(RpcError) as refused:
            await bob.call("comment", message=message["id"], text="too late")
        assert refused.value.code == -32003
        assert b'"MessageDeleted"' in disk.durable_bytes(path)
        await deleting
