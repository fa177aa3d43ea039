"""The append-only event log: one orjson record per line, each with its checksum.

A line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. Records are appended by
one writer task that hands whole groups to a single I/O thread, so the event loop
never touches the disk and, under ``FsyncPolicy.ALWAYS``, every event appended
while the previous group was being written is made durable by one write and one
fsync (group commit).

Recovery rules, checked at replay:
- a damaged or incomplete *last* record is a torn write from a crash: it is cut
  off, with a warning;
- a damaged record followed by good ones means the file was damaged some other
  way: the start stops with ``LogCorrupted`` naming the file and the byte offset.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from server.config import FsyncPolicy

logger = logging.getLogger("messenger.server.log")


class LogCorrupted(Exception):
    """A record in the middle of the log is damaged; replaying past it would lie."""


class LogFailed(Exception):
    """A write or fsync failed: memory is ahead of the disk and must not be trusted."""


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
    if not path.exists():
        return
    offset = 0
    damaged_at: int | None = None
    with path.open("rb") as file:
        for line in file:
            record = decode_record(line)
            if damaged_at is not None:
                raise LogCorrupted(
                    f"{path}: damaged record at byte offset {damaged_at} "
                    f"is followed by more records; refusing to start"
                )
            if record is None:
                damaged_at = offset
            else:
                yield record
            offset += len(line)
    if damaged_at is not None:
        logger.warning(
            "%s: cutting off a torn last record at byte offset %d (%d bytes)",
            path,
            damaged_at,
            offset - damaged_at,
        )
        os.truncate(path, damaged_at)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EventLog:
    """Append records durably; the only writer of its file once opened."""

    def __init__(
        self, path: Path, fsync: FsyncPolicy = FsyncPolicy.ALWAYS, batch_interval: float = 1.0
    ) -> None:
        self.path = path
        self.fsync = fsync
        self.batch_interval = batch_interval
        self._fd = -1
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="messenger-log")
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._unsynced = False
        self._closing = False
        self.failure: BaseException | None = None
        self.appended = 0  # records handed to the OS since open, for operators' logs

    def open(self) -> None:
        """Open for appending; call after the records were read (and a torn tail cut)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if created:  # make the new file's name durable too (start-up: blocking is fine)
            fsync_directory(self.path.parent)
        self._writer = asyncio.get_running_loop().create_task(
            self._write_groups(), name="messenger-log-writer"
        )
        if self.fsync is FsyncPolicy.BATCH:
            self._syncer = asyncio.get_running_loop().create_task(
                self._sync_periodically(), name="messenger-log-syncer"
            )

    def append(self, records: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue ``records``; the future is done once they are durable by the policy."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failure is not None or self._closing:
            future.set_exception(LogFailed(f"{self.path}: the log no longer accepts records"))
            return future
        self._pending.extend(encode_record(record) for record in records)
        self._waiters.append(future)
        self._wakeup.set()
        return future

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
                await asyncio.get_running_loop().run_in_executor(self._io, os.fsync, self._fd)
            os.close(self._fd)
            self._fd = -1
        self._io.shutdown(wait=True)

    async def _write_groups(self) -> None:
        loop = asyncio.get_running_loop()
        sync = self.fsync is FsyncPolicy.ALWAYS
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._pending:
                data = b"".join(self._pending)
                waiters = self._waiters
                count = len(self._pending)
                self._pending, self._waiters = [], []
                try:
                    await loop.run_in_executor(self._io, self._write, data, sync)
                except Exception as exc:
                    logger.critical(
                        "%s: write failed; no more records accepted", self.path, exc_info=True
                    )
                    self.failure = exc
                    for waiter in waiters + self._waiters:
                        if not waiter.done():
                            waiter.set_exception(LogFailed(f"{self.path}: {exc}"))
                    return
                self.appended += count
                self._unsynced = not sync
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            if self._closing and not self._pending:
                return

    def _write(self, data: bytes, sync: bool) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if sync:
            os.fsync(self._fd)

    async def _sync_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.batch_interval)
            if self._unsynced and self.failure is None:
                self._unsynced = False
                try:
                    await loop.run_in_executor(self._io, os.fsync, self._fd)
                except OSError as exc:
                    logger.critical(
                        "%s: fsync failed; no more records accepted", self.path, exc_info=True
                    )
                    self.failure = exc
