"""The event log's edges, through its public interface: which lines count as records,
which fsyncs each policy makes (seen through an injected ``Disk``, the OS's own
calls through ``os.fsync``), the counters operators read, and when a compaction is
worth it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.config import FsyncPolicy
from server.log import (
    OS_DISK,
    EventLog,
    LogFailed,
    decode_record,
    encode_record,
    fsync_directory,
)
from server.store import Snapshot


class SeenDisk:
    """``log.Disk`` that writes for real and notes each fsync (and wakes a waiter)."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.synced = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)
        self.fsyncs += 1
        self.loop.call_soon_threadsafe(self.synced.set)


@contextlib.asynccontextmanager
async def log_on(path: Path, policy: FsyncPolicy, disk: Any) -> AsyncIterator[EventLog]:
    log = EventLog(path, policy, batch_interval=0.01, disk=disk)
    log.open()
    try:
        yield log
    finally:
        await log.close()


@contextlib.contextmanager
def os_fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What every ``os.fsync`` of the process synced (a path), in order."""
    synced: list[str] = []
    real = os.fsync

    def noted(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", noted)
    yield synced


# -- lines ---------------------------------------------------------------------


def test_a_line_needs_its_space_and_its_newline_whatever_its_checksum() -> None:
    """A record whose checksum matches is still refused without the space after the
    checksum, or with anything but a newline at its end (a torn write)."""
    body = orjson.dumps({"type": "X", "n": 1})
    crc = zlib.crc32(body)
    assert decode_record(b"%08x %b\n" % (crc, body)) == {"type": "X", "n": 1}
    assert decode_record(b"%08x!%b\n" % (crc, body)) is None
    assert decode_record(b"%08x %bx" % (crc, body)) is None
    assert decode_record(b"%08x %b" % (crc, body)) is None
    assert decode_record(b"%08x %b\n" % (crc ^ 1, body)) is None  # another checksum


def test_the_smallest_record_is_an_empty_object() -> None:
    """``{}`` with its checksum (12 bytes) is a record; shorter lines never are."""
    line = encode_record({})
    assert len(line) == 12
    assert decode_record(line) == {}
    assert decode_record(b"00000000 \n") is None
    assert decode_record(line[:8] + b" 1\n") is None


# -- fsync, by policy --------------------------------------------------------------


async def test_always_fsyncs_each_group_and_close_once_more(tmp_path: Path) -> None:
    """Under ``always`` each acknowledged group was fsynced; close fsyncs once more."""
    disk = SeenDisk()
    async with log_on(tmp_path / "events.log", FsyncPolicy.ALWAYS, disk) as log:
        await log.append([{"n": 1}])
        await log.append([{"n": 2}])
        assert disk.fsyncs == 2
    assert disk.fsyncs == 3


async def test_batch_fsyncs_what_was_written_within_its_interval(tmp_path: Path) -> None:
    """Under ``batch`` an append is acknowledged before any fsync, and the syncer fsyncs
    it within ``batch_interval`` without another append."""
    disk = SeenDisk()
    async with log_on(tmp_path / "events.log", FsyncPolicy.BATCH, disk) as log:
        await log.append([{"n": 1}])
        await asyncio.wait_for(disk.synced.wait(), 10)
        assert disk.fsyncs == 1


async def test_never_fsyncs_only_at_close(tmp_path: Path) -> None:
    """Under ``never`` no write is fsynced until the close."""
    disk = SeenDisk()
    async with log_on(tmp_path / "events.log", FsyncPolicy.NEVER, disk) as log:
        for n in range(3):
            await log.append([{"n": n}])
        assert disk.fsyncs == 0
    assert disk.fsyncs == 1


async def test_a_new_log_file_has_its_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the log fsyncs its directory (the new name must survive a power cut);
    opening an existing one does not."""
    path = tmp_path / "events.log"
    with os_fsyncs(monkeypatch) as synced:
        log = EventLog(path, FsyncPolicy.NEVER)
        log.open()
        await log.close()
        assert synced == [str(tmp_path), str(path)]
        synced.clear()
        again = EventLog(path, FsyncPolicy.NEVER)
        again.open()
        await again.close()
        assert synced == [str(path)]


def test_the_os_disk_and_a_directory_fsync_reach_the_os_and_leave_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default disk's fsync is the OS's; a directory fsync closes what it opened."""
    before = len(os.listdir("/proc/self/fd"))
    with os_fsyncs(monkeypatch) as synced:
        fd = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            OS_DISK.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(tmp_path)
    assert synced == [str(tmp_path / "file"), str(tmp_path)]
    assert len(os.listdir("/proc/self/fd")) == before


# -- counters and compaction ------------------------------------------------------------


async def test_appended_counts_records_written_since_open(tmp_path: Path) -> None:
    """``appended`` starts at 0 and counts records, not appends; size is the file's."""
    path = tmp_path / "events.log"
    async with log_on(path, FsyncPolicy.ALWAYS, SeenDisk()) as log:
        assert log.appended == 0
        await log.append([{"n": 1}, {"n": 2}])
        await log.append([{"n": 3}])
        assert log.appended == 3
        assert log.size == path.stat().st_size


async def test_a_compaction_is_wanted_once_the_log_passes_the_snapshot_and_the_threshold(
    tmp_path: Path,
) -> None:
    """Wanted once the log is larger than its snapshot and than what the threshold
    leaves beside the snapshot; at exactly either, not yet."""
    path = tmp_path / "events.log"
    async with log_on(path, FsyncPolicy.ALWAYS, SeenDisk()) as log:
        await log.compact(Snapshot(b"x" * 400, 0))
        snap = log.snapshots.size
        assert snap > 400
        assert log.size == 0
        pad = snap - len(encode_record({"pad": ""}))
        await log.append([{"pad": "y" * pad}])  # a log as long as the snapshot
        assert log.size == snap
        assert not log.wants_compaction(0)
        assert not log.wants_compaction(2 * snap)
        extra = len(encode_record({}))
        await log.append([{}])
        assert log.wants_compaction(0)
        assert log.wants_compaction(2 * snap + extra - 1)
        assert not log.wants_compaction(2 * snap + extra)


# -- what a log holds while open, and lets go of at close ---------------------------------


def log_threads() -> list[str]:
    return [
        thread.name for thread in threading.enumerate() if thread.name.startswith("messenger-log")
    ]


def log_tasks() -> list[str]:
    return [
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("messenger-log")
    ]


async def test_close_leaves_no_descriptor_thread_or_task(tmp_path: Path) -> None:
    """After close (compactions and a batch syncer included) the log holds no file
    descriptor, no I/O thread and no task more than before it was opened."""
    fds, threads, tasks = len(os.listdir("/proc/self/fd")), log_threads(), log_tasks()
    async with log_on(tmp_path / "events.log", FsyncPolicy.BATCH, SeenDisk()) as log:
        await log.append([{"n": 1}])
        await log.compact(Snapshot(b"{}", 1))
        await log.compact(Snapshot(b"{}", 1))
        assert len(log_tasks()) == len(tasks) + 2  # the writer and the syncer
    assert len(os.listdir("/proc/self/fd")) == fds
    assert (log_threads(), log_tasks()) == (threads, tasks)


async def test_a_compaction_fsyncs_the_new_file_then_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is fsynced before its rename, the directory after it, and only
    then is the log cut: its empty successor fsynced, renamed, the directory fsynced
    (each new name must survive a power cut)."""
    path = tmp_path / "events.log"
    async with log_on(path, FsyncPolicy.NEVER, OS_DISK) as log:
        with os_fsyncs(monkeypatch) as synced:
            await log.compact(Snapshot(b"{}", 1))
        snapshot = str(log.snapshots.path)
    directory = str(tmp_path)
    assert synced[:4] == [snapshot + ".writing", directory, str(path) + ".compacting", directory]


async def test_an_empty_append_costs_no_fsync(tmp_path: Path) -> None:
    """append([]) is done at once, without a write or an fsync."""
    disk = SeenDisk()
    async with log_on(tmp_path / "events.log", FsyncPolicy.ALWAYS, disk) as log:
        await log.append([])
        assert disk.fsyncs == 0


async def test_each_fsync_is_reported_with_its_duration(tmp_path: Path) -> None:
    """fsync_observer hears each fsync of an append, with seconds no longer than the
    append took."""
    heard: list[float] = []
    async with log_on(tmp_path / "events.log", FsyncPolicy.ALWAYS, SeenDisk()) as log:
        log.fsync_observer = heard.append
        began = time.perf_counter()
        await log.append([{"n": 1}])
        took = time.perf_counter() - began
    assert len(heard) == 1
    assert 0 <= heard[0] <= took


class FailingDisk(SeenDisk):
    """Writes wait for ``gate``; the first write, or every fsync, fails."""

    def __init__(self, fail_fsync: bool = False) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.writes = 0
        self.fail_fsync = fail_fsync

    def write(self, fd: int, data: memoryview) -> int:
        self.entered.set()
        self.gate.wait(10)
        self.writes += 1
        if self.writes == 1 and not self.fail_fsync:
            raise OSError(28, "No space left on device")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(5, "Input/output error")
        super().fsync(fd)


async def test_after_a_failed_write_nothing_queued_reaches_the_file(tmp_path: Path) -> None:
    """Records queued while a failing write was under way fail with it, and are never
    written after it, even if the disk works again."""
    path = tmp_path / "events.log"
    disk = FailingDisk()
    async with log_on(path, FsyncPolicy.ALWAYS, disk) as log:
        first = log.append([{"n": "first"}])
        assert await asyncio.to_thread(disk.entered.wait, 10)
        second = log.append([{"n": "second"}])
        disk.gate.set()
        for append in (first, second):
            with pytest.raises(LogFailed):
                await append
        assert log.failed.is_set()
    assert b"second" not in path.read_bytes()


async def test_a_failed_batch_fsync_stops_the_log(tmp_path: Path) -> None:
    """Under ``batch`` an fsync that fails marks the log failed: later appends are refused."""
    disk = FailingDisk(fail_fsync=True)
    disk.gate.set()
    async with log_on(tmp_path / "events.log", FsyncPolicy.BATCH, disk) as log:
        await log.append([{"n": 1}])
        await asyncio.wait_for(log.failed.wait(), 10)
        with pytest.raises(LogFailed):
            await log.append([{"n": 2}])
