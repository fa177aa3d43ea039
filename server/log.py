"""The append-only event log: one orjson record per line, each with its checksum.

A line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. Records are appended by
one writer task that hands whole groups to a single I/O thread, so the event loop
never touches the disk and, under ``FsyncPolicy.ALWAYS``, every event appended
while the previous group was being written is made durable by one write and one
fsync (group commit).

Recovery rules, checked at replay:
- damage after the last valid record (a torn write, or garbage or zeros a crash
  left past the last fsync) was never acknowledged: it is cut off, with a warning;
- a damaged record followed by a valid one means the file was damaged some other
  way: the start stops with ``LogCorrupted`` naming the file and the byte offsets;
- an empty or missing log is a fresh start, said loudly if other state is there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

# CRC-32 as zlib computes it (the log's format), 4 times as fast (SIMD): bench/replay.py
from zlib_ng.zlib_ng import crc32

from server.config import FsyncPolicy
from server.store import Snapshot, StoreFailed

logger = logging.getLogger("messenger.server.log")


COMPACTING_SUFFIX = ".compacting"
SNAPSHOT_SUFFIX = ".snapshot"  # events.log's snapshot: events.snapshot
WRITING_SUFFIX = ".writing"  # a snapshot being written, not yet renamed into place
SNAPSHOT_MAGIC: Final = b"messenger-snapshot"
# Beside the log, what says nothing of users, chats or messages: the lock, and
# unfinished uploads (dropped at every start).
_NOT_STATE = frozenset({"LOCK", "uploads"})


class LogCorrupted(Exception):
    """A record in the middle of the log is damaged; replaying past it would lie."""


class LogFailed(StoreFailed):
    """A write or fsync failed: memory is ahead of the disk and must not be trusted."""


class Disk(Protocol):
    """The two calls the log's durability rests on. Tests inject a layer that sees
    every fsync and can lose what was written after the last one (a power cut)."""

    def write(self, fd: int, data: memoryview) -> int: ...

    def fsync(self, fd: int) -> None: ...


class _OsDisk:
    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


OS_DISK: Final[Disk] = _OsDisk()


def encode_record(record: dict[str, Any]) -> bytes:
    body = orjson.dumps(record)
    return b"%08x %b\n" % (crc32(body), body)


def decode_record(line: bytes) -> dict[str, Any] | None:
    """The record in ``line``, or None when the line is damaged or incomplete."""
    if len(line) < 11 or line[8:9] != b" " or line[-1:] != b"\n":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != crc32(body):
            return None
        record = orjson.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def decode_dict(body: bytes) -> dict[str, Any]:
    """A record's JSON as a dict; raises ValueError when it is not a JSON object."""
    record = orjson.loads(body)
    if type(record) is not dict:
        raise ValueError(f"Expected a JSON object, but got {type(record).__name__}")
    return record


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of the log at ``path`` as a dict, in order, cutting a torn tail off
    the file."""
    for chunk in read_chunks(path):
        yield from map(decode_dict, chunk)


# Bytes read at a time: a chunk of about 4000 records of a chat's log.
READ_BLOCK: Final = 2**20


def read_chunks(path: Path, say_if_empty: bool = True) -> Iterator[list[bytes]]:
    """The records of the log at ``path`` in order, each as its JSON (its checksum
    checked), a block of the file at a time, cutting a torn tail off the file. The
    reader decodes them one at a time, as it folds them: decoding a block at once
    keeps thousands of objects alive that die together, cold in the cache (a fifth
    of a replay's time, bench/replay.py). Byte offsets are counted only when there is
    damage."""
    if not path.exists() or not path.stat().st_size:
        if say_if_empty:
            _say_if_anything_else_is_there(path)
        return
    damaged_at: int | None = None
    block_start = 0  # byte offset of ``lines[0]``
    key = str(path)
    rest = b""
    with path.open("rb", buffering=0) as file:
        while block := file.read(READ_BLOCK):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()  # no newline yet: it waits for the next block
            chunk: list[bytes] = []
            for index, line in enumerate(lines):
                body = line[9:]
                # The checksum as the writer spells it (encode_record), compared whole:
                # cheaper than parsing the line's.
                if b"%08x " % crc32(body) != line[:9]:
                    if damaged_at is None:
                        damaged_at = block_start + sum(map(len, lines[:index])) + index
                    continue
                if damaged_at is not None:
                    at = block_start + sum(map(len, lines[:index])) + index
                    raise LogCorrupted(
                        f"{path}: damaged record at byte offset {damaged_at} "
                        f"is followed by a valid one at byte offset {at}; refusing to start"
                    )
                chunk.append(body)
            if chunk:
                _last_yielded[key] = block_start
                yield chunk
            block_start += sum(map(len, lines)) + len(lines)
    if rest and damaged_at is None:  # a last record with no newline: torn
        damaged_at = block_start
    end = path.stat().st_size
    if damaged_at is not None:
        # Nothing valid follows: the tail was never acknowledged (a torn write, or
        # the garbage or zeros a file system may leave past the last fsync).
        logger.warning(
            "%s: cutting off a torn last record at byte offset %d (%d bytes of damage, "
            "nothing valid after it)",
            path,
            damaged_at,
            end - damaged_at,
        )
        os.truncate(path, damaged_at)


_last_yielded: dict[str, int] = {}  # log path -> byte offset of the chunk last read


def last_record_offset(path: Path) -> int | None:
    """Where the chunk ``read_chunks(path)`` gave last starts: when its reader refuses
    one of its records and cannot say which (the offset to name at least)."""
    return _last_yielded.get(str(path))


def _say_if_anything_else_is_there(path: Path) -> None:
    """An empty or missing log beside other state (stored files, say) is most likely
    a log lost or emptied by mistake: starting empty is allowed, but said loudly."""
    others = (
        other
        for other in path.parent.rglob("*")
        if other.is_file()
        and other != path
        and other.relative_to(path.parent).parts[0] not in _NOT_STATE
    )
    found = next(others, None)
    if found is not None:
        logger.warning(
            "%s is %s, but %s holds other state (%s): starting with no users, chats or messages",
            path,
            "empty" if path.exists() else "missing",
            path.parent,
            found.relative_to(path.parent),
        )


def record_offset(path: Path, index: int) -> int:
    """Where record number ``index`` (from 0) of the log at ``path`` starts, in bytes.
    For error messages only: it reads the file again rather than cost replay a counter."""
    offset = 0
    with path.open("rb") as file:
        for number, line in enumerate(file):
            if number == index:
                break
            offset += len(line)
    return offset


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSnapshots:
    """``store.SnapshotStore`` in one file beside the log: a header line
    ``messenger-snapshot <cursor> <bytes> <crc32>``, then the snapshot's data.

    Written aside (``.writing``), fsynced, renamed over the previous one, the
    directory fsynced: at any crash the file is the previous snapshot or the new
    one, whole, and a ``.writing`` file left behind is removed unread. A snapshot
    whose length or checksum does not match its header was damaged after it was
    written: the records it covers are gone from the log, so the start stops
    (``LogCorrupted``) rather than go on without them.
    """

    def __init__(self, path: Path, disk: Disk | None = None) -> None:
        self.path = path
        self.where = str(path)
        self.disk = OS_DISK if disk is None else disk
        self.size = 0  # bytes of the newest snapshot, once read or written

    async def save(self, snapshot: Snapshot) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.write, snapshot)

    async def load(self) -> Snapshot | None:
        """At start: a snapshot left unfinished is removed, the newest one read."""
        aside = self.path.with_name(self.path.name + WRITING_SUFFIX)
        if aside.exists():  # a snapshot whose writing did not finish: never used
            logger.warning("removing %s left by an unfinished snapshot", aside)
            aside.unlink()
        return await asyncio.get_running_loop().run_in_executor(None, self.read)

    def write(self, snapshot: Snapshot) -> None:
        """``save``, blocking: the log's I/O thread calls it in a compaction."""
        aside = self.path.with_name(self.path.name + WRITING_SUFFIX)
        data = snapshot.data
        header = b"%b %d %d %08x\n" % (
            SNAPSHOT_MAGIC,
            snapshot.cursor,
            len(data),
            crc32(data),
        )
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for part in (header, data):
                view = memoryview(part)
                while view:
                    view = view[self.disk.write(fd, view) :]
            self.disk.fsync(fd)
        finally:
            os.close(fd)
        os.replace(aside, self.path)
        fsync_directory(self.path.parent)
        self.size = len(header) + len(data)

    def read(self) -> Snapshot | None:
        """The snapshot in the file, if any (``load`` without the clean-up)."""
        try:
            file = self.path.open("rb", buffering=0)
        except FileNotFoundError:
            return None
        with file:  # the header, then the data into one buffer of its size (no copy)
            header = file.readline(200)
            data = file.read(os.fstat(file.fileno()).st_size - len(header))
            header = header.rstrip(b"\n")
        fields = header.split(b" ")
        try:
            magic, cursor, size, crc = fields[0], int(fields[1]), int(fields[2]), int(fields[3], 16)
        except (IndexError, ValueError):
            magic, cursor, size, crc = b"", 0, -1, -1
        if magic != SNAPSHOT_MAGIC or len(fields) != 4:
            raise LogCorrupted(
                f"{self.path}: Expected a snapshot header '{SNAPSHOT_MAGIC.decode()} <cursor> "
                f"<bytes> <crc32>', but got {header[:80]!r}; refusing to start"
            )
        if len(data) != size or crc32(data) != crc:
            raise LogCorrupted(
                f"{self.path}: the snapshot is damaged: expected {size} bytes with crc32 "
                f"{crc:08x}, but got {len(data)} bytes with crc32 {crc32(data):08x}; "
                "refusing to start"
            )
        self.size = len(header) + 1 + len(data)
        return Snapshot(data, cursor)


@dataclasses.dataclass(slots=True)
class _Compaction:
    """Save ``snapshot``, then cut the log to whatever is appended after it."""

    snapshot: Snapshot


class EventLog:
    """Append records durably; the only writer of its file once opened.

    Appends and compactions form one queue, taken in order by one writer task:
    records appended before a compaction was asked for are in the old file (and
    in the snapshot), records appended after it go to the new file.

    A compaction saves the snapshot first (``FileSnapshots``, ``events.snapshot``),
    then replaces the log by an empty one: a crash between the two leaves records
    the snapshot covers in the log, which the reader skips by their cursor and the
    next start cuts (they may hold the text of messages deleted since).
    """

    def __init__(
        self,
        path: Path,
        fsync: FsyncPolicy = FsyncPolicy.ALWAYS,
        batch_interval: float = 1.0,
        disk: Disk = OS_DISK,
    ) -> None:
        self.path = path
        self.disk = disk
        self.snapshots = FileSnapshots(path.with_suffix(SNAPSHOT_SUFFIX), disk)
        self.fsync = fsync
        self.batch_interval = batch_interval
        self._fd = -1
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="messenger-log")
        self._queue: list[tuple[bytes | _Compaction, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._unsynced = False
        self._closing = False
        self.failure: BaseException | None = None
        self.appended = 0  # records handed to the OS since open, for operators' logs
        self.size = 0  # bytes in the file
        self.failed = asyncio.Event()  # set once a write or fsync failed: stop serving
        self._last: asyncio.Future[None] | None = None  # the newest queued item's
        self.fsync_observer: Callable[[float], None] | None = None  # told each fsync's seconds

    def open(self) -> None:
        """Open for appending; call after the records were read (and a torn tail cut)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._open_file()
        if created:  # make the new file's name durable too (start-up: blocking is fine)
            fsync_directory(self.path.parent)
        self.size = os.fstat(self._fd).st_size
        self._writer = asyncio.get_running_loop().create_task(
            self._write_queue(), name="messenger-log-writer"
        )
        if self.fsync is FsyncPolicy.BATCH:
            self._syncer = asyncio.get_running_loop().create_task(
                self._sync_periodically(), name="messenger-log-syncer"
            )

    async def records(self, after: Snapshot | None = None) -> AsyncIterator[list[bytes]]:
        """``store.EventStore.records``: read before ``open`` (a torn tail is cut).
        Every record of the file: the reader skips what ``after`` covers."""
        for chunk in read_chunks(self.path, say_if_empty=after is None):
            yield chunk
            await asyncio.sleep(0)

    def wants_compaction(self, threshold: int) -> bool:
        """Once the log and the snapshot are over ``threshold``, and the log is larger
        than the snapshot: rewriting a snapshot costs its size, so each compaction
        costs at most as much as was appended since the one before."""
        snapshot = self.snapshots.size
        return self.size > max(threshold - snapshot, snapshot)

    def _open_file(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, records: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue ``records``; the future is done once they are durable by the policy."""
        if not records:  # nothing to write: the writer would never wake this waiter
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future
        return self._enqueue(b"".join(encode_record(record) for record in records))

    def compact(self, snapshot: Snapshot) -> asyncio.Future[None]:
        """Queue a compaction: ``snapshot`` is saved, and the log then holds only the
        records appended after this call."""
        return self._enqueue(_Compaction(snapshot))

    def _enqueue(self, item: bytes | _Compaction) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failure is not None or self._closing:
            future.set_exception(LogFailed(f"{self.path}: the log no longer accepts records"))
            return future
        self._queue.append((item, future))
        self._last = future
        self._wakeup.set()
        return future

    @property
    def queued(self) -> int:
        """Appends and compactions waiting for the writer."""
        return len(self._queue)

    def barrier(self) -> asyncio.Future[None]:
        """Done once everything queued so far is durable (items complete in order)."""
        last = self._last
        if self.failure is not None:  # what was queued may never reach the disk
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(LogFailed(f"{self.path}: {self.failure}"))
            return failed
        if last is None or last.done():
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return asyncio.shield(last)  # a cancelled waiter must not cancel the append

    def _fail(self, error: BaseException) -> None:
        self.failure = error
        self.failed.set()

    async def close(self) -> None:
        """Write what is queued, fsync whatever the policy, and close the file."""
        self._closing = True
        self._wakeup.set()
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        if self._writer is not None:
            await self._writer
        if self._fd >= 0:
            if self.failure is None:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, self.disk.fsync, self._fd
                )
            os.close(self._fd)
            self._fd = -1
        self._io.shutdown(wait=True)

    async def _write_queue(self) -> None:
        sync = self.fsync is FsyncPolicy.ALWAYS
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            queue, self._queue = self._queue, []
            while queue:
                item, future = queue.pop(0)
                if isinstance(item, _Compaction):
                    if not await self._run([future], queue, self._compact, item.snapshot):
                        return
                    continue
                # Every append queued before the next compaction: one write, one fsync.
                chunks, waiters = [item], [future]
                while queue and not isinstance(queue[0][0], _Compaction):
                    more, waiter = queue.pop(0)
                    assert isinstance(more, bytes)
                    chunks.append(more)
                    waiters.append(waiter)
                data = b"".join(chunks)
                if not await self._run(waiters, queue, self._write, data, sync):
                    return
                self.appended += data.count(b"\n")
                self._unsynced = not sync
            if self._closing and not self._queue:
                return

    async def _run(
        self,
        waiters: list[asyncio.Future[None]],
        queued: list[tuple[bytes | _Compaction, asyncio.Future[None]]],
        job: Callable[..., None],
        *args: Any,
    ) -> bool:
        """Run ``job`` on the I/O thread; on failure, fail everything and stop."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, job, *args)
        except Exception as exc:
            # One line, no traceback: a full disk is an operator's matter, not a bug.
            logger.critical(
                "%s: write failed at byte offset %d: %s; no more records accepted",
                self.path,
                self.size,
                exc,
            )
            self._fail(exc)
            for waiter in waiters + [f for _, f in queued + self._queue]:
                if not waiter.done():
                    waiter.set_exception(LogFailed(f"{self.path}: {exc}"))
            return False
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return True

    def _write(self, data: bytes, sync: bool) -> None:
        view = memoryview(data)
        while view:
            written = self.disk.write(self._fd, view)
            view = view[written:]
        self.size += len(data)
        if sync:
            started = time.perf_counter()
            self.disk.fsync(self._fd)
            if self.fsync_observer is not None:
                self.fsync_observer(time.perf_counter() - started)

    def _compact(self, snapshot: Snapshot) -> None:
        # Crash-safe at every step: until the snapshot's rename, the old snapshot
        # and the whole log; then the new snapshot and the log, whose records it
        # covers are skipped; after the log's rename, the new snapshot and an empty log.
        self.snapshots.write(snapshot)
        aside = self.path.with_name(self.path.name + COMPACTING_SUFFIX)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.disk.fsync(fd)
        finally:
            os.close(fd)
        os.replace(aside, self.path)
        fsync_directory(self.path.parent)
        os.close(self._fd)
        self._open_file()
        self.size = 0
        self._unsynced = False

    async def _sync_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.batch_interval)
            if self._unsynced and self.failure is None:
                self._unsynced = False
                try:
                    await loop.run_in_executor(self._io, self.disk.fsync, self._fd)
                except OSError as exc:
                    logger.critical(
                        "%s: fsync failed at byte offset %d: %s; no more records accepted",
                        self.path,
                        self.size,
                        exc,
                    )
                    self._fail(exc)
