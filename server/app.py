"""Putting the server together: replay the log into the state, open the log for
appending, serve, and on the way out close connections (1001) and flush the log."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from server import __version__
from server.config import Config
from server.domain import views
from server.domain.events import Event, from_record
from server.domain.state import State
from server.extras import ExtraMethods
from server.files import FileMethods
from server.groups import GroupMethods
from server.hub import Hub, Recent
from server.log import (
    COMPACTING_SUFFIX,
    OS_DISK,
    Disk,
    EventLog,
    LogCorrupted,
    read_records,
    record_offset,
)
from server.rpc import Dispatcher
from server.service import Clock, Service, encode_event, system_clock
from server.transport import Transport

logger = logging.getLogger("messenger.server")

LOG_FILE = "events.log"
LOCK_FILE = "LOCK"


class StateDirBusy(Exception):
    """Another server holds the state directory."""


@dataclass(frozen=True, slots=True)
class Running:
    host: str
    port: int
    service: Service

    @property
    def failed(self) -> asyncio.Event:
        """Set when the log failed: memory is ahead of the disk, stop at once."""
        return self.service.log.failed

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"


def replay(path: Path, state: State, window: int, now: int | None = None) -> tuple[Recent, int]:
    """Fold the log at ``path`` into ``state``; the recent events for resume, and
    how many records were read. With ``now``, messages expired by then are dropped
    before the recent events are rebuilt."""
    tail: collections.deque[Event] = collections.deque(maxlen=max(window, 0))
    count = 0
    head = 0  # the snapshot's records before the first with a cursor
    # The fold makes millions of objects that all stay (the state) and no garbage
    # cycles: the cyclic GC would only rescan them again and again. 1M events:
    # 15.8 s with it, 9.8 s without (bench/replay.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        fold = state.fold
        for record in read_records(path):
            cursor = record.pop("c", None)
            try:
                event = from_record(record)
            except (TypeError, ValueError, KeyError) as error:
                raise LogCorrupted(
                    f"{path}: record {count + 1} after the snapshot, at byte offset "
                    f"{record_offset(path, head + count)}, is not an event: {error}"
                ) from None
            if cursor is None:  # a snapshot's event, at the head of a compacted log
                fold(event)
                head += 1
                continue
            if cursor != state.cursor + 1:
                raise LogCorrupted(
                    f"{path}: at byte offset {record_offset(path, head + count)}: "
                    f"expected cursor {state.cursor + 1}, but got {cursor}"
                )
            fold(event)
            state.cursor = cursor
            tail.append(event)
            count += 1
    finally:
        if collecting:
            gc.enable()
    # Rebuilt from today's state, so what a resumed device gets after a restart is
    # what it would get now (a message that expired since is left out).
    if now is not None:
        state.expire(now)
    recent = Recent(window, state.cursor - len(tail))
    first = state.cursor - len(tail) + 1
    for cursor, event in enumerate(tail, start=first):
        told = views.notification(state, event)
        if told is not None:
            audience, method, params = told
            frame = encode_event(method, params, cursor)
            recent.add(cursor, audience, frame, views.told_until(state, event))
    return recent, count


@contextlib.asynccontextmanager
async def run_server(
    config: Config, clock: Clock = system_clock, disk: Disk = OS_DISK
) -> AsyncIterator[Running]:
    """Serve ``config`` until the block exits; state is flushed when it does.
    (``disk`` is the log's write and fsync: tests inject one that loses unsynced writes.)

    Whatever was started is stopped in reverse order, also when a later step of the
    start fails (a port in use, say): connections, timers, the log, the lock.
    """
    state_dir = config.state_dir
    async with contextlib.AsyncExitStack() as started:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        started.callback(os.close, lock_fd)  # closing the file releases the lock
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirBusy(f"{state_dir} is in use by another server") from None
        began = time.perf_counter()
        aside = (state_dir / LOG_FILE).with_name(LOG_FILE + COMPACTING_SUFFIX)
        if aside.exists():  # a compaction that did not finish: the log itself is whole
            logger.warning("removing %s left by an unfinished compaction", aside)
            aside.unlink()
        state = State(config.history_size, config.rate_period * 1000)
        recent, count = replay(state_dir / LOG_FILE, state, config.resume_window, clock())
        logger.info(
            "replayed %d events from %s in %.2f s: %d users, %d chats, %d messages",
            count,
            state_dir / LOG_FILE,
            time.perf_counter() - began,
            len(state.users),
            len(state.chats),
            len(state.messages),
        )
        log = EventLog(state_dir / LOG_FILE, config.fsync, config.batch_interval, disk)
        log.open()
        started.push_async_callback(_close_log, log)
        hub = Hub(config.send_buffer_limit, recent, state.cursor, clock)
        service = Service(config, state, log, hub, clock)
        files = FileMethods(service, state_dir)
        started.callback(files.close)
        for methods in (ExtraMethods(service), GroupMethods(service), files):
            service.registry.add(methods)
        dispatcher = Dispatcher(
            service.registry,
            lambda session: session.user is not None,
            log.barrier,
            config.frame_limit,
        )
        openrpc = orjson.dumps(service.registry.openrpc())
        transport = Transport(
            config,
            hub,
            dispatcher,
            {
                "/healthz": lambda: ("text/plain; charset=utf-8", b"ok"),
                "/openrpc.json": lambda: ("application/json", openrpc),
            },
            files,
        )
        if count:  # start time tracks live state, not history
            await service.compact()
        service.start()
        started.push_async_callback(service.stop)
        server = await transport.start()
        started.push_async_callback(transport.stop)
        host, port = server.sockets[0].getsockname()[:2]
        logger.info("messenger %s serving on ws://%s:%d/", __version__, host, port)
        yield Running(host, port, service)


async def _close_log(log: EventLog) -> None:
    await log.close()
    logger.info("stopped; %d events written this run", log.appended)
