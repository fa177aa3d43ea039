"""Putting the server together: replay the log into the state, open the log for
appending, serve, and on the way out close connections (1001) and flush the log."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import gc
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from server import __version__, presence
from server.config import Config
from server.domain import views
from server.domain.events import Event, Unfit, decode_next, decode_stored
from server.domain.snapshot import SnapshotDamaged
from server.domain.snapshot import load as load_snapshot
from server.domain.state import State
from server.extras import ExtraMethods
from server.files import FileMethods
from server.groups import GroupMethods
from server.hub import Hub, Recent
from server.log import COMPACTING_SUFFIX, OS_DISK, Disk, EventLog, LogCorrupted, record_offset
from server.messaging import MessagingMethods
from server.metrics import Metrics
from server.rpc import Dispatcher
from server.service import Clock, Service, encode_event, system_clock
from server.store import EventStore, Gap, StoreFailed
from server.transport import Transport

if TYPE_CHECKING:
    from server.cluster import ClusterNode

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
    node: ClusterNode | None = None  # in cluster mode

    @property
    def failed(self) -> asyncio.Event:
        """Set when the log failed: memory is ahead of the disk, stop at once."""
        return self.service.log.failed

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"


async def replay(
    store: EventStore,
    state: State,
    window: int,
    now: int | None = None,
    *,
    source: str = "the log",
    offset_of: Callable[[int], int] | None = None,
    freeze: bool = False,
) -> tuple[Recent, int]:
    """Load the store's newest snapshot into ``state``, then fold the records after
    it; the recent events for resume, and how many records after the snapshot were
    read. With ``now``, messages expired by then are dropped before the recent
    events are rebuilt. With ``freeze``, the state is the process's for good (a
    server's start): ``gc.freeze`` puts it out of the cyclic GC's reach before any
    collection walks it (each walk of a 1M-event state: 0.1 s for the young
    generation, 0.7 s for a full collection; the state holds no cycle to collect)."""
    # The last records folded, as their JSON, for the recent events: keeping the
    # events themselves that long costs a fifth of a replay (see read_chunks).
    tail: collections.deque[bytes] = collections.deque(maxlen=max(window, 0))
    count = 0
    skipped = 0  # records read but not folded: covered by the snapshot
    # The fold makes millions of objects that all stay (the state) and no garbage
    # cycles: the cyclic GC would only rescan them again and again. 1M events:
    # 15.8 s with it, 9.8 s without (bench/replay.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        loaded = await store.snapshots.load()
        if freeze:
            # The garbage made so far goes before the freeze, which would keep it for
            # good (a cluster's lookup that finds no snapshot leaves a task and its
            # exception's frames in cycles): cheap while the state is still empty.
            gc.collect()
        if loaded is not None:
            try:
                load_snapshot(loaded.data, state)
            except SnapshotDamaged as error:
                raise LogCorrupted(
                    f"{store.snapshots.where}: the snapshot is damaged: {error}"
                ) from None
            state.cursor = loaded.cursor
        covered = -1 if loaded is None else loaded.cursor
        fold, apply = state.fold, state.apply
        head = True  # no record with a cursor read yet

        def closer(body: bytes) -> Event | None:
            """The event of a record that is not plainly the next one, if it is to be
            folded; None for one to skip (the snapshot covers it, or it is an older
            log's snapshot at its head); else it stops the start."""
            nonlocal head, skipped
            try:
                cursor, event = decode_stored(body)
            except ValueError as error:  # its checksum held, yet it is no JSON object
                raise LogCorrupted(
                    f"{source}: record {skipped + count + 1}"
                    f"{_at(offset_of, skipped + count)} is not a JSON object: {error}"
                ) from None
            if cursor is not None and cursor <= covered and not count:
                head = False  # covered by the snapshot: skipped
                skipped += 1
                return None
            if isinstance(event, Unfit):
                raise LogCorrupted(
                    f"{source}: record {skipped + count + 1}"
                    f"{_at(offset_of, skipped + count)} is not an event: {event.error}"
                )
            if cursor is None:
                if not head or count:
                    raise LogCorrupted(
                        f"{source}: record {skipped + count + 1}"
                        f"{_at(offset_of, skipped + count)} is without a cursor, "
                        "but follows records with one: only the head of a log "
                        "written before snapshots were kept apart has none"
                    )
                if loaded is None:  # an older log's snapshot, at its head
                    fold(event)
                skipped += 1
                return None
            if cursor != state.cursor + 1:
                raise LogCorrupted(
                    f"{source}{_at(offset_of, skipped + count)}: "
                    f"expected cursor {state.cursor + 1}, but got {cursor}"
                )
            return event

        async for chunk in store.records(loaded):
            for body in chunk:
                event = decode_next(body, state.cursor + 1)
                if event is None:  # not plainly the next record: look closer
                    event = closer(body)
                    if event is None:
                        continue
                try:
                    apply(event)
                except _UNFIT as error:  # well-formed, but not what a writer wrote
                    raise LogCorrupted(
                        f"{source}: record {skipped + count + 1}"
                        f"{_at(offset_of, skipped + count)}, a {type(event).__name__}, "
                        f"does not fit the state before it: {error!r}"
                    ) from None
                tail.append(body)
                count += 1
        if freeze:
            gc.freeze()
    finally:
        if collecting:
            gc.enable()
    # Rebuilt from today's state, so what a resumed device gets after a restart is
    # what it would get now (a message that expired since is left out).
    if now is not None:
        state.expire(now)
    recent = Recent(window, state.cursor - len(tail))
    first = state.cursor - len(tail) + 1
    for cursor, body in enumerate(tail, start=first):
        folded = decode_stored(body)[1]
        assert not isinstance(folded, Unfit)  # it was folded
        for audience, method, params in views.notifications(state, folded):
            frame = encode_event(method, params, cursor)
            until = views.told_until(state, folded)
            recent.add(cursor, audience, frame, until, views.told_about(folded))
    return recent, count


@contextlib.asynccontextmanager
async def run_server(
    config: Config, clock: Clock = system_clock, disk: Disk = OS_DISK, *, freeze: bool = False
) -> AsyncIterator[Running]:
    """Serve ``config`` until the block exits; state is flushed when it does.
    (``disk`` is the log's write and fsync: tests inject one that loses unsynced writes.
    ``freeze``: the replayed state is put out of the cyclic GC's reach, see ``replay``;
    for a process that serves one server: freezing is process-wide, and tests start
    many servers in one.)

    Whatever was started is stopped in reverse order, also when a later step of the
    start fails (a port in use, say): connections, timers, the log, the lock.
    """
    state_dir = config.state_dir
    async with contextlib.AsyncExitStack() as started:
        state_dir.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        state = State(config.history_size, config.rate_period * 1000, config.quotas)
        state.search.defer()  # built after the start, in the background (server/messaging.py)
        node = None
        if config.cluster:
            # Imported here: nats-py is needed (and installed) only for a cluster.
            try:
                from server import cluster, jetstream  # noqa: PLC0415
            except ImportError as missing:
                raise StoreFailed(
                    f"--cluster needs nats-py ({missing}): pip install 'messenger[cluster]'"
                ) from None

            name = config.node_name or f"{socket.gethostname()}:{os.getpid()}"
            shared = await jetstream.connect(
                list(config.cluster), config.cluster_name, config.lease_ttl, name
            )
            started.push_async_callback(shared.close)
            cluster_store = jetstream.JetStreamStore(shared)
            store: EventStore = cluster_store
            source = f"stream {shared.names.stream}"
            offset_of = None
        else:
            _lock(state_dir, started)
            aside = (state_dir / LOG_FILE).with_name(LOG_FILE + COMPACTING_SUFFIX)
            if aside.exists():  # a compaction that did not finish: the log itself is whole
                logger.warning("removing %s left by an unfinished compaction", aside)
                aside.unlink()
            log = EventLog(state_dir / LOG_FILE, config.fsync, config.batch_interval, disk)
            store = log
            source = str(state_dir / LOG_FILE)
            offset_of = functools.partial(record_offset, state_dir / LOG_FILE)
        for _ in range(5):
            try:
                recent, count = await replay(
                    store,
                    state,
                    config.resume_window,
                    clock(),
                    source=source,
                    offset_of=offset_of,
                    freeze=freeze,
                )
                break
            except Gap:  # a newer snapshot purged what was to follow: read it instead
                state = State(config.history_size, config.rate_period * 1000, config.quotas)
        else:
            raise StoreFailed(f"{source}: snapshots replaced faster than one could be read")
        logger.info(
            "replayed %d events from %s in %.2f s: %d users, %d chats, %d messages",
            count,
            source,
            time.perf_counter() - began,
            len(state.users),
            len(state.chats),
            len(state.messages),
        )
        if not config.cluster:
            log.open()
        started.push_async_callback(_close_store, store)
        hub = Hub(config.send_buffer_limit, recent, state.cursor, clock)
        service = Service(config, state, store, hub, clock)
        # The service's from now on: a cluster node's re-read replaces both, and this
        # frame, alive as long as the server, must not keep the old ones.
        del state, recent
        files = FileMethods(service, state_dir)
        started.callback(files.close)
        messaging = MessagingMethods(service)
        for methods in (ExtraMethods(service), GroupMethods(service), files, messaging):
            service.registry.add(methods)
        dispatcher = Dispatcher(
            service.registry,
            lambda session: session.user is not None,
            store.barrier,
            config.frame_limit,
        )
        dispatcher.admit = service.pause.request
        health: Callable[[], tuple[bool, str]] = _healthy
        if config.cluster:
            files.blobs = jetstream.ObjectBlobs(
                shared, files.stored, files.in_use, config.blob_grace
            )
            node = cluster.ClusterNode(
                shared,
                cluster_store,
                service,
                dispatcher,
                node=name,
                lease_ttl=config.lease_ttl,
                forward_timeout=config.forward_timeout,
            )
            health = node.health
            messaging.watch(
                presence.NatsPresence(
                    config.presence_grace,
                    clock,
                    messaging.presence_changed,
                    nc=shared.nc,
                    cluster=config.cluster_name,
                    node=name,
                    heartbeat=config.presence_heartbeat,
                )
            )
        else:
            messaging.watch(messaging.presence)
        openrpc = orjson.dumps(service.registry.openrpc())
        metrics = Metrics()
        if not config.cluster:
            metrics.watch_log(log)

        def healthz() -> tuple[int, str, bytes]:
            healthy, said = health()
            return (200 if healthy else 503), "text/plain; charset=utf-8", said.encode()

        transport = Transport(
            config,
            hub,
            dispatcher,
            {
                "/healthz": healthz,
                "/openrpc.json": lambda: (200, "application/json", openrpc),
            },
            files,
            metrics=metrics,
        )
        # Start time tracks live state, not history. A log of records the snapshot
        # covers only (a crash between saving it and cutting the log) is cut too: they
        # may hold the text of messages deleted or expired since.
        if not config.cluster and (count or (log.size and log.snapshots.size)):
            await service.compact()
        service.start()
        started.push_async_callback(service.stop)
        await messaging.start()
        started.push_async_callback(messaging.stop)
        if node is not None:
            await node.start()
            started.push_async_callback(node.stop)
        server = await transport.start()
        started.push_async_callback(transport.stop)
        host, port = server.sockets[0].getsockname()[:2]
        logger.info("messenger %s serving on ws://%s:%d/", __version__, host, port)
        yield Running(host, port, service, node)


# What a record of the right shape but with fields of the wrong types (or naming what
# the state does not hold) raises in the mapper or the fold: a damaged log, not a bug.
_UNFIT: Final = (TypeError, ValueError, KeyError, AttributeError, IndexError)


def _at(offset_of: Callable[[int], int] | None, index: int) -> str:
    """ ", at byte offset N" of record ``index`` (from 0), where the store can say."""
    return "" if offset_of is None else f" at byte offset {offset_of(index)}"


def _healthy() -> tuple[bool, str]:
    return True, "ok"


def _lock(state_dir: Path, started: contextlib.AsyncExitStack) -> None:
    """Only one server may use a state directory (its log)."""
    lock_fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    started.callback(os.close, lock_fd)  # closing the file releases the lock
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StateDirBusy(f"{state_dir} is in use by another server") from None


async def _close_store(store: EventStore) -> None:
    await store.close()
    logger.info("stopped; %d events written this run", store.appended)
