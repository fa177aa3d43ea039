"""The event log on a real disk: the contract every log implementation keeps (run
once per fsync policy), group commit, and recovery from a torn or damaged file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import stat
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from zlib_ng.zlib_ng import crc32 as server_crc32

from server.config import FsyncPolicy
from server.log import (
    EventLog,
    LogCorrupted,
    LogFailed,
    decode_dict,
    encode_record,
    read_records,
)
from server.store import Snapshot

LogFactory = Callable[[Path], EventLog]
LogT = TypeVar("LogT", bound=EventLog)

RECORDS: list[dict[str, Any]] = [
    {"type": "UserRegistered", "user": "alice", "password_hash": "scrypt$16$...", "at": 1},
    {"type": "MessagePosted", "text": 'héllo 👋\nnew line \u2028 "quoted"', "seq": 1},
    {"type": "ReadMarkerMoved", "nested": {"list": [1, 2.5, None, True]}, "at": 2**53},
]


@pytest.fixture(params=list(FsyncPolicy), ids=str)
def make_log(request: pytest.FixtureRequest) -> LogFactory:
    """One log implementation under the contract: the EventLog with one fsync policy."""
    policy: FsyncPolicy = request.param
    return lambda path: EventLog(path, policy, batch_interval=0.01)


@contextlib.asynccontextmanager
async def opened(log: LogT) -> AsyncIterator[LogT]:
    log.open()
    try:
        yield log
    finally:
        await log.close()


def numbered(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"type": "Numbered", "n": n} for n in range(start, start + count)]


# -- the contract: every implementation, every policy ---------------------------


async def test_records_replay_in_order_after_close_and_reopen(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """Appended records come back equal and in order from the file after close, across reopens."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        await log.append(RECORDS[:2])
        await log.append(RECORDS[2:])
    assert list(read_records(path)) == RECORDS
    async with opened(make_log(path)) as log:
        await log.append(numbered(3))
    assert list(read_records(path)) == RECORDS + numbered(3)


async def test_acknowledged_append_is_in_the_file_before_close(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """Once an append is acknowledged its records are written (a reader of the file sees them)."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        await log.append(numbered(5))
        assert list(read_records(path)) == numbered(5)
        await asyncio.gather(*(log.append(numbered(1, n)) for n in range(5, 50)))
        assert list(read_records(path)) == numbered(50)


async def test_concurrent_appends_keep_the_order_they_were_issued_in(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """Appends issued while earlier ones are being written land after them, in issue order."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        pending = []
        for n in range(300):
            pending.append(log.append(numbered(1, n)))
            if n % 7 == 0:
                await asyncio.sleep(0)  # let the writer pick up a group mid-stream
        await asyncio.gather(*pending)
    assert list(read_records(path)) == numbered(300)


async def test_append_of_no_records_completes(make_log: LogFactory, tmp_path: Path) -> None:
    """Appending an empty list is acknowledged at once instead of waiting forever."""
    async with opened(make_log(tmp_path / "events.log")) as log:
        await asyncio.wait_for(log.append([]), 5)


async def test_append_after_close_is_refused(make_log: LogFactory, tmp_path: Path) -> None:
    """A closed log refuses records with LogFailed rather than dropping them silently."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        await log.append(numbered(1))
    with pytest.raises(LogFailed):
        await log.append(numbered(1, 1))
    assert list(read_records(path)) == numbered(1)


async def test_write_failure_fails_the_append_and_every_later_one(
    make_log: LogFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing disk (ENOSPC from /dev/full) fails the append and stops the log for good."""
    async with opened(make_log(Path("/dev/full"))) as log:
        with pytest.raises(LogFailed, match="/dev/full"):
            await log.append(numbered(1))
        with pytest.raises(LogFailed):
            await log.append(numbered(1, 1))
        with pytest.raises(LogFailed):
            await log.barrier()
    assert "write failed" in caplog.text


async def test_barrier_is_done_once_everything_queued_is_written(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """barrier() completes only after every append queued before it is written."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        await log.barrier()  # nothing queued: done at once
        appended = [log.append(numbered(1, n)) for n in range(10)]
        await log.barrier()
        assert all(future.done() for future in appended)
        assert list(read_records(path)) == numbered(10)


async def test_cancelled_barrier_leaves_the_append_alone(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """Cancelling a wait on barrier() does not cancel the append it waits for."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        appended = log.append(numbered(1))
        waiting = asyncio.ensure_future(log.barrier())
        waiting.cancel()
        await appended
    assert list(read_records(path)) == numbered(1)


async def test_compaction_saves_the_snapshot_and_empties_the_log(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """After compact(snapshot) the snapshot is kept beside the log, and the log replays
    as what was appended after it."""
    path = tmp_path / "events.log"
    snapshot = Snapshot(b"the state after ten records", 10)
    async with opened(make_log(path)) as log:
        await log.append(numbered(10))
        await log.compact(snapshot)
        assert list(read_records(path)) == []
        await log.append(numbered(2, 10))
    assert list(read_records(path)) == numbered(2, 10)
    assert not path.with_name(path.name + ".compacting").exists()
    async with opened(make_log(path)) as log:
        assert log.snapshots.read() == snapshot
        await log.append(numbered(1, 12))
    assert list(read_records(path)) == numbered(3, 10)


async def test_compaction_splits_appends_issued_around_it(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """Records appended before compact() was called are replaced; those after it are kept."""
    path = tmp_path / "events.log"
    async with opened(make_log(path)) as log:
        before = [log.append(numbered(1, n)) for n in range(5)]
        compacted = log.compact(Snapshot(b"0-4", 5))
        after = [log.append(numbered(1, n)) for n in range(5, 8)]
        await asyncio.gather(*before, compacted, *after)
    assert list(read_records(path)) == numbered(3, 5)


# -- group commit ---------------------------------------------------------------


class CountingLog(EventLog):
    """The real log, counting the groups it writes; ``gate`` can hold a write open."""

    def __init__(self, path: Path, fsync: FsyncPolicy) -> None:
        super().__init__(path, fsync)
        self.writes: list[tuple[int, bool]] = []  # (records, fsynced) per write
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def _write(self, data: bytes, sync: bool) -> None:
        self.writes.append((data.count(b"\n"), sync))
        self.entered.set()
        self.gate.wait(10)
        super()._write(data, sync)


@pytest.mark.parametrize("policy", list(FsyncPolicy), ids=str)
async def test_appends_of_one_loop_tick_are_one_write(policy: FsyncPolicy, tmp_path: Path) -> None:
    """Many appends issued in the same tick are written by one write (and one fsync if always)."""
    path = tmp_path / "events.log"
    async with opened(CountingLog(path, policy)) as log:
        await asyncio.gather(*(log.append(numbered(2, 2 * n)) for n in range(100)))
        assert log.writes == [(200, policy is FsyncPolicy.ALWAYS)]
    assert list(read_records(path)) == numbered(200)


async def test_appends_during_a_write_form_the_next_group(tmp_path: Path) -> None:
    """Records appended while a group is on its way to disk go together in the next one."""
    path = tmp_path / "events.log"
    async with opened(CountingLog(path, FsyncPolicy.ALWAYS)) as log:
        log.gate.clear()
        first = log.append(numbered(1))
        assert await asyncio.to_thread(log.entered.wait, 10)
        rest = [log.append(numbered(1, n)) for n in range(1, 51)]
        await asyncio.sleep(0.01)
        assert not first.done()  # not acknowledged before its fsync
        log.gate.set()
        await asyncio.gather(first, *rest)
        assert log.writes == [(1, True), (50, True)]
    assert list(read_records(path)) == numbered(51)


# -- recovery -------------------------------------------------------------------


async def write_log(path: Path, records: list[dict[str, Any]]) -> list[int]:
    """Write ``records`` with the real log; the byte offset where each line starts."""
    async with opened(EventLog(path)) as log:
        await log.append(records)
    return line_offsets(path)


def line_offsets(path: Path) -> list[int]:
    offsets = [0]
    for line in path.read_bytes().splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets[:-1]


def cut_mid_line(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def append_garbage(path: Path) -> None:
    with path.open("ab") as file:
        file.write(b'1234abcd {"type": "MessagePos')


def spoil_last_checksum(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    data[start : start + 8] = b"%08x" % ((int(data[start : start + 8], 16) + 1) % 2**32)
    path.write_bytes(bytes(data))


def append_garbage_lines(path: Path) -> None:
    with path.open("ab") as file:
        file.write(b"not a record\n\x00\x00\n" + b"1234abcd {}\n" * 3 + b"\xff" * 100)


def append_zeros(path: Path) -> None:
    with path.open("ab") as file:
        file.write(bytes(4096))


def cut_and_zero_fill(path: Path) -> None:
    cut_mid_line(path)
    with path.open("ab") as file:
        file.write(b"\n" + bytes(8192) + b"\n" + bytes(100))


@pytest.mark.parametrize(
    ("damage", "survivors"),
    [
        (cut_mid_line, 4),
        (append_garbage, 5),
        (spoil_last_checksum, 4),
        (append_garbage_lines, 5),
        (append_zeros, 5),
        (cut_and_zero_fill, 4),
    ],
    ids=[
        "cut-mid-line",
        "garbage-without-newline",
        "bad-last-checksum",
        "garbage-lines",
        "zeros",
        "torn-then-zeros",
    ],
)
async def test_torn_last_record_is_cut_off_with_a_warning(
    damage: Callable[[Path], None],
    survivors: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A torn last record is cut off the file with a warning; the records before it survive."""
    path = tmp_path / "events.log"
    offsets = await write_log(path, numbered(5))
    good_end = [*offsets, path.stat().st_size][survivors]
    damage(path)
    with caplog.at_level(logging.WARNING, logger="messenger.server.log"):
        assert list(read_records(path)) == numbered(survivors)
    assert f"cutting off a torn last record at byte offset {good_end}" in caplog.text
    assert path.stat().st_size == good_end
    # Appends after the cut follow the good records directly: no garbage in between.
    async with opened(EventLog(path)) as log:
        await log.append(numbered(2, 100))
    caplog.clear()
    assert list(read_records(path)) == numbered(survivors) + numbered(2, 100)
    assert "cutting off" not in caplog.text


@pytest.mark.parametrize("line", [0, 2], ids=["first-record", "middle-record"])
async def test_damaged_record_before_good_ones_raises_log_corrupted(
    line: int, tmp_path: Path
) -> None:
    """A damaged record followed by good ones stops replay, naming the file and byte offset."""
    path = tmp_path / "events.log"
    offsets = await write_log(path, numbered(5))
    data = bytearray(path.read_bytes())
    data[offsets[line] + 20] ^= 0x01  # one bit flipped inside the JSON
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorrupted) as caught:
        list(read_records(path))
    assert str(path) in str(caught.value)
    assert f"byte offset {offsets[line]}" in str(caught.value)
    assert f"followed by a valid one at byte offset {offsets[line + 1]}" in str(caught.value)
    assert path.read_bytes() == bytes(data)  # left as found, for the operator


def test_missing_file_replays_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A state dir without a log yet replays as empty, without a word."""
    (tmp_path / "LOCK").touch()
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "half-sent").write_bytes(b"a piece")
    assert list(read_records(tmp_path / "events.log")) == []
    (tmp_path / "events.log").touch()
    assert list(read_records(tmp_path / "events.log")) == []
    assert not caplog.records


@pytest.mark.parametrize("log_there", [False, True], ids=["missing", "empty"])
def test_a_log_gone_beside_stored_files_is_said(
    log_there: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty or missing log beside stored files replays as empty, with a warning."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "ab12").write_bytes(b"a stored file")
    if log_there:
        (tmp_path / "events.log").touch()
    with caplog.at_level(logging.WARNING, logger="messenger.server.log"):
        assert list(read_records(tmp_path / "events.log")) == []
    assert f"{tmp_path / 'events.log'} is {'empty' if log_there else 'missing'}" in caplog.text
    assert "files/ab12" in caplog.text


def test_record_line_format_is_checksum_space_json_newline() -> None:
    """A stored line is 8 hex digits of crc32, a space, the compact JSON, a newline."""
    body = b'{"type":"T","n":1}'
    assert encode_record({"type": "T", "n": 1}) == b"%08x %b\n" % (zlib.crc32(body), body)


# -- the snapshot file -------------------------------------------------------------


@pytest.mark.parametrize("damage", ["a bit flipped", "cut short", "no header"])
def test_a_damaged_snapshot_file_is_refused_naming_it(tmp_path: Path, damage: str) -> None:
    """A snapshot file whose data does not match its header (size, crc32) stops the
    start naming the file: the records it covers are gone from the log, so going on
    without it would lie."""
    snapshots = EventLog(tmp_path / "events.log").snapshots
    snapshots.write(Snapshot(b"the state " * 1000, 42))
    data = bytearray(snapshots.path.read_bytes())
    if damage == "a bit flipped":
        data[-100] ^= 0x01
    elif damage == "cut short":
        del data[-100:]
    else:
        data = data[data.index(b"\n") + 1 :]
    snapshots.path.write_bytes(data)
    with pytest.raises(LogCorrupted) as caught:
        snapshots.read()
    assert str(snapshots.path) in str(caught.value)
    assert "refusing to start" in str(caught.value)


async def test_an_unfinished_snapshot_is_removed_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot still being written when the process died (``.writing``) is never
    loaded: the previous snapshot is."""
    snapshots = EventLog(tmp_path / "events.log").snapshots
    snapshots.write(Snapshot(b"previous", 3))
    unfinished = snapshots.path.with_name(snapshots.path.name + ".writing")
    unfinished.write_bytes(b"messenger-snapshot 9 100 00000000\nnew but cut")
    with caplog.at_level(logging.WARNING):
        assert await snapshots.load() == Snapshot(b"previous", 3)
    assert not unfinished.exists()
    assert "unfinished snapshot" in caplog.text


@pytest.mark.parametrize(
    "header",
    [b"messenger-snapshut 42 %d %08x", b"messenger-snapshot 42 %d %08x extra"],
    ids=["another-magic", "a-fifth-field"],
)
def test_a_snapshot_file_with_another_header_is_refused_whatever_its_data(
    tmp_path: Path, header: bytes
) -> None:
    """A file whose header is not ``messenger-snapshot <cursor> <bytes> <crc32>`` (another
    program's, another format's) is refused even when its size and checksum match."""
    snapshots = EventLog(tmp_path / "events.log").snapshots
    data = b"the state " * 100
    snapshots.path.write_bytes(header % (len(data), zlib.crc32(data)) + b"\n" + data)
    with pytest.raises(LogCorrupted, match="Expected a snapshot header"):
        snapshots.read()


async def test_a_snapshots_size_is_its_files_once_saved_or_read(tmp_path: Path) -> None:
    """The snapshot store knows its file's size after a save and after a read (the log
    weighs a compaction against it)."""
    snapshots = EventLog(tmp_path / "events.log").snapshots
    await snapshots.save(Snapshot(b"the state " * 100, 7))
    assert snapshots.size == snapshots.path.stat().st_size
    again = EventLog(tmp_path / "events.log").snapshots
    assert again.size == 0
    assert await again.load() == Snapshot(b"the state " * 100, 7)
    assert again.size == snapshots.path.stat().st_size


async def test_the_snapshot_and_the_compacted_log_are_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    """What a compaction writes (the snapshot, the new log) is mode 0600, as the log."""
    path = tmp_path / "events.log"
    async with opened(EventLog(path)) as log:
        await log.append(numbered(3))
        await log.compact(Snapshot(b"the state", 3))
        await log.append(numbered(1, 3))
    assert stat.S_IMODE(log.snapshots.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_records_json_must_be_an_object() -> None:
    """``decode_dict`` takes a JSON object and refuses anything else as damage."""
    assert decode_dict(b'{"n":1}') == {"n": 1}
    with pytest.raises(ValueError, match="Expected a JSON object, but got list"):
        decode_dict(b"[1]")


@pytest.mark.parametrize("snapshot", [False, True], ids=["no-snapshot", "a-snapshot"])
async def test_an_empty_log_beside_stored_files_is_said_only_without_a_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, snapshot: bool
) -> None:
    """Beside stored files, an empty log is worth a warning only when no snapshot holds
    the state (after a compaction the log is empty by design)."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "ab12").write_bytes(b"a stored file")
    log = EventLog(tmp_path / "events.log")
    if snapshot:
        await log.snapshots.save(Snapshot(b"the state", 3))
    (tmp_path / "events.log").touch()
    with caplog.at_level(logging.WARNING, logger="messenger.server.log"):
        after = await log.snapshots.load()
        assert [chunk async for chunk in log.records(after)] == []
    assert ("is empty" in caplog.text) is not snapshot


def test_the_checksum_is_zlibs_crc32_whatever_the_length() -> None:
    """The log's lines carry zlib's CRC-32 (logs written before zlib-ng, and by any
    tool): the faster implementation gives the same sums, short records and long
    snapshots alike, chained or not."""
    rng = random.Random(12)
    for size in (0, 1, 7, 64, 255, 4096, 5 * 2**10 + 3, 2**20 + 1):
        data = rng.randbytes(size)
        assert server_crc32(data) == zlib.crc32(data)
        assert server_crc32(data, 0xDEADBEEF) == zlib.crc32(data, 0xDEADBEEF)
    line = encode_record({"type": "UserSeen", "user": "é", "at": 1})
    assert int(line[:8], 16) == zlib.crc32(line[9:-1])
