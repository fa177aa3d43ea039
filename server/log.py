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
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from server.config import FsyncPolicy
from server.store import Record, StoreFailed, in_chunks

logger = logging.getLogger("messenger.server.log")


COMPACTING_SUFFIX = ".compacting"
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
    return b"%08x %b\n" % (zlib.crc32(body), body)


def decode_record(line: bytes) -> dict[str, Any] | None:
    """The record in ``line``, or None when the line is damaged or incomplete."""
    if len(line) < 11 or line[8:9] != b" " or line[-1:] != b"\n":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = orjson.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of the log at ``path``, in order, cutting a torn tail off the file."""
    if not path.exists() or not path.stat().st_size:
        _say_if_anything_else_is_there(path)
        return
    offset = 0
    damaged_at: int | None = None
    key = str(path)
    with path.open("rb", buffering=2**20) as file:
        for line in file:
            record = decode_record(line)
            if record is None:
                if damaged_at is None:
                    damaged_at = offset
            elif damaged_at is not None:
                raise LogCorrupted(
                    f"{path}: damaged record at byte offset {damaged_at} "
                    f"is followed by a valid one at byte offset {offset}; refusing to start"
                )
            else:
                _last_yielded[key] = offset
                yield record
            offset += len(line)
    if damaged_at is not None:
        # Nothing valid follows: the tail was never acknowledged (a torn write, or
        # the garbage or zeros a file system may leave past the last fsync).
        logger.warning(
            "%s: cutting off a torn last record at byte offset %d (%d bytes of damage, "
            "nothing valid after it)",
            path,
            damaged_at,
            offset - damaged_at,
        )
        os.truncate(path, damaged_at)


_last_yielded: dict[str, int] = {}  # log path -> byte offset of the record last read


def last_record_offset(path: Path) -> int | None:
    """Where the record ``read_records(path)`` gave last starts: when its reader refuses
    that record (not an event, a cursor out of sequence), the offset to name."""
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


@dataclasses.dataclass(slots=True)
class _Compaction:
    """Replace the log by ``head`` (a snapshot) plus whatever is appended after it."""

    head: list[dict[str, Any]]


class EventLog:
    """Append records durably; the only writer of its file once opened.

    Appends and compactions form one queue, taken in order by one writer task:
    records appended before a compaction was asked for are in the old file (and
    in the snapshot), records appended after it go to the new file.
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
        self.compacted_size = 0  # bytes right after the last compaction
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
        self.compacted_size = self.size
        self._writer = asyncio.get_running_loop().create_task(
            self._write_queue(), name="messenger-log-writer"
        )
        if self.fsync is FsyncPolicy.BATCH:
            self._syncer = asyncio.get_running_loop().create_task(
                self._sync_periodically(), name="messenger-log-syncer"
            )

    def records(self) -> AsyncIterator[list[Record]]:
        """``store.EventStore.records``: read before ``open`` (a torn tail is cut)."""
        return in_chunks(read_records(self.path))

    def wants_compaction(self, threshold: int) -> bool:
        return self.size > max(threshold, 2 * self.compacted_size)

    def _open_file(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, records: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue ``records``; the future is done once they are durable by the policy."""
        if not records:  # nothing to write: the writer would never wake this waiter
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future
        return self._enqueue(b"".join(encode_record(record) for record in records))

    def compact(self, head: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue a compaction: the log becomes ``head`` (written aside, fsynced, renamed
        over the log) followed by the records appended after this call."""
        return self._enqueue(_Compaction(head))

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
                    if not await self._run([future], queue, self._compact, item.head):
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

    def _compact(self, head: list[dict[str, Any]]) -> None:
        # Crash-safe at every step: until the rename the old log is whole (a stale
        # aside file is removed at the next start); after it, the new one is.
        aside = self.path.with_name(self.path.name + COMPACTING_SUFFIX)
        with aside.open("wb") as file:
            for start in range(0, len(head), 4096):
                file.write(b"".join(encode_record(r) for r in head[start : start + 4096]))
            file.flush()
            self.disk.fsync(file.fileno())
            size = file.tell()
        os.replace(aside, self.path)
        fsync_directory(self.path.parent)
        os.close(self._fd)
        self._open_file()
        self.size = self.compacted_size = size
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
