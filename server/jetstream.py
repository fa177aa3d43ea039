"""The cluster's shared state in NATS JetStream: the event stream, the snapshot and
file buckets, the writer's lease (protocol-contract.md v2, "Cluster").

- One stream, ``<name>_events`` on subject ``<name>.events``: one message per batch
  of records (a JSON array), so group commit survives (issue 7: per-event publishes
  fell to ~740/s, batches of 100 gave 40-150k events/s). Every publish carries
  ``Nats-Expected-Last-Sequence``: a writer whose idea of the stream is stale is
  fenced off by JetStream itself (error 10071) instead of interleaving.
- The snapshots, in Object Store ``<name>_snapshots`` (``ObjectSnapshots``): each
  in an object ``snapshot-<seq>-<cursor>``, and the object ``snapshot`` pointing at
  the newest: ``{"name", "seq", "cursor"}`` (the stream sequence and cursor it
  covers). Once it is stored, the stream is purged below ``seq + 1``. Snapshots are
  not fenced by JetStream as appends are: a writer saves one only while its last
  append is the stream's last message, and the pointer never moves back.
- Files, in Object Store ``<name>_files`` keyed by SHA-256.
- The lease, key ``writer`` in KV ``<name>_lease`` whose entries live ``lease_ttl``.

nats-py is imported only here and in ``cluster``, which only ``--cluster`` loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import msgspec
import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from server.errors import Unavailable
from server.store import Gap, NotStored, Record, Snapshot, StoreFailed

logger = logging.getLogger("messenger.server.cluster")

# A stream message holds a batch as a JSON array: split into each record's JSON.
_SPLIT: Final = msgspec.json.Decoder(list[msgspec.Raw]).decode

WRONG_LAST_SEQUENCE: Final = 10071  # JetStream's error code for a failed expectation
REPLICAS_UNSUPPORTED: Final = 10074  # a JetStream that runs alone keeps one replica
SNAPSHOT: Final = "snapshot"
FETCH_TIMEOUT: Final = 60.0  # seconds a file may take to come from the Object Store
READY_WITHIN: Final = 60.0  # seconds a starting node waits for JetStream to answer
# Room left in a message for the headers and the JSON array around the records.
HEADROOM: Final = 4096


class Fenced(StoreFailed):
    """Another writer appended first: this node's state is not the stream's, and
    JetStream kept none of the refused records (their appends fail ``NotStored``)."""


@dataclass(frozen=True, slots=True)
class Names:
    stream: str
    subject: str
    snapshots: str
    files: str
    lease: str
    rpc: str  # requests forwarded to the writer
    logins: str  # failed logins the writer counted, mirrored by every node

    @classmethod
    def of(cls, cluster: str) -> Names:
        return cls(
            stream=f"{cluster}_events",
            subject=f"{cluster}.events",
            snapshots=f"{cluster}_snapshots",
            files=f"{cluster}_files",
            lease=f"{cluster}_lease",
            rpc=f"{cluster}.writer",
            logins=f"{cluster}.logins",
        )


@dataclass(slots=True)
class Shared:
    """One connection to NATS and the JetStream objects the cluster uses."""

    nc: NATS
    js: JetStreamContext
    names: Names
    lease: KeyValue
    snapshots: ObjectStore
    files: ObjectStore

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()


async def connect(
    servers: list[str], cluster: str, lease_ttl: float, node: str, wait: float = 5.0
) -> Shared:
    """Connect (retrying until ``timeout``), and create what is missing: replicated
    three times where JetStream runs as a cluster, once where it runs alone."""

    async def disconnected() -> None:
        logger.warning("node %s lost its connection to NATS", node)

    async def reconnected() -> None:
        logger.info("node %s reconnected to NATS", node)

    async def error(exc: Exception) -> None:
        logger.debug("NATS: %s", exc)

    try:
        nc = await _connect(servers, node, wait, (disconnected, reconnected, error))
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise StoreFailed(f"cannot reach NATS at {', '.join(servers)}: {exc!r}") from None
    try:
        return await _open(nc, cluster, lease_ttl, node, wait)
    except BaseException:
        await nc.close()
        raise


async def _connect(
    servers: list[str],
    node: str,
    wait: float,
    callbacks: tuple[
        Callable[[], Awaitable[None]],
        Callable[[], Awaitable[None]],
        Callable[[Exception], Awaitable[None]],
    ],
) -> NATS:
    disconnected, reconnected, error = callbacks
    return await nats.connect(
        servers=servers,
        name=f"messenger {node}",
        connect_timeout=wait,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        allow_reconnect=True,
    )


async def _open(nc: NATS, cluster: str, lease_ttl: float, node: str, wait: float) -> Shared:
    js = nc.jetstream(timeout=wait)
    names = Names.of(cluster)
    replicas = 3
    # A JetStream cluster starting beside this node answers once it has a leader.
    ready_by = time.monotonic() + READY_WITHIN
    while True:
        try:
            await js.add_stream(
                name=names.stream,
                subjects=[names.subject],
                storage=api.StorageType.FILE,
                num_replicas=replicas,
                allow_direct=True,
            )
            lease = await js.create_key_value(
                bucket=names.lease, ttl=lease_ttl, history=1, replicas=replicas
            )
            snapshots = await js.create_object_store(bucket=names.snapshots, replicas=replicas)
            files = await js.create_object_store(bucket=names.files, replicas=replicas)
            break
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
        ) as exc:
            if time.monotonic() > ready_by:
                raise StoreFailed(f"JetStream did not answer within {READY_WITHIN} s") from exc
            logger.info("node %s: waiting for JetStream to be ready (%r)", node, exc)
            await asyncio.sleep(0.5)
        except nats.js.errors.APIError as exc:
            # 10074: "replicas > 1 not supported in non-clustered mode"
            if replicas == 1 or exc.err_code != REPLICAS_UNSUPPORTED:
                raise
            logger.debug("JetStream refused %d replicas (%s); using 1", replicas, exc)
            replicas = 1
    logger.info(
        "node %s joined cluster %r on %s (stream replicas %d)",
        node,
        cluster,
        nc.connected_url,
        replicas,
    )
    return Shared(nc, js, names, lease, snapshots, files)


@dataclass(slots=True)
class _Compaction:
    snapshot: Snapshot


class ObjectSnapshots:
    """``store.SnapshotStore`` in the cluster's Object Store: each snapshot goes to an
    object of its own, then the small object ``snapshot`` is pointed at it, and the
    one before the previous is deleted. A node reading the previous snapshot
    meanwhile still finds it whole (nats-py waits for ever for the chunks of an
    object replaced under it); a put that failed half-way is never pointed at."""

    def __init__(self, shared: Shared, within: float) -> None:
        self.shared = shared
        self.within = within
        self.where = f"Object Store {shared.names.snapshots}"

    async def save(self, snapshot: Snapshot) -> None:
        objects = self.shared.snapshots
        name = f"{SNAPSHOT}-{snapshot.position}-{snapshot.cursor}"
        before = await self._pointer()
        if before is not None and (before["seq"], before["cursor"]) > (
            snapshot.position,
            snapshot.cursor,
        ):  # a writer that lost its place: the newer one's snapshot stays the newest
            raise StoreFailed(
                f"Expected a snapshot at least as new as {before['name']}, but got one at "
                f"stream sequence {snapshot.position} (cursor {snapshot.cursor})"
            )
        await objects.put(name, snapshot.data)
        pointer = {"name": name, "seq": snapshot.position, "cursor": snapshot.cursor}
        if before is not None and before["name"] != name:
            pointer["previous"] = before["name"]
        await objects.put(SNAPSHOT, orjson.dumps(pointer))
        old = None if before is None else before.get("previous")
        if old is not None and old != name:
            with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
                await objects.delete(old)

    async def load(self) -> Snapshot | None:
        """The newest snapshot; ``Gap`` when it was replaced while being read."""
        pointer = await self._pointer()
        if pointer is None:
            return None
        try:
            data = await read_object(self.shared.snapshots, pointer["name"], self.within)
        except (nats.js.errors.ObjectNotFoundError, TimeoutError):
            raise Gap(pointer["seq"] + 1, 0) from None  # replaced meanwhile
        return Snapshot(data, pointer["cursor"], pointer["seq"])

    async def _pointer(self) -> dict[str, Any] | None:
        try:
            data = await read_object(self.shared.snapshots, SNAPSHOT, self.within)
        except nats.js.errors.ObjectNotFoundError:
            return None
        pointer: dict[str, Any] = orjson.loads(data)
        return pointer


def _refusal(error: BaseException | None) -> Unavailable:
    """What an append fails with after ``error``: after a fence, nothing queued since
    the last stored publish was kept (the fenced publish was refused whole, and
    nothing is published after it until ``reset``)."""
    kind = NotStored if isinstance(error, Fenced) else Unavailable
    return kind(f"The shared log cannot be written now: {error}", 1.0)


class JetStreamStore:
    """``store.EventStore`` on one JetStream stream, written by the lease holder.

    ``position`` is the stream sequence of the last message read back or appended:
    the next publish expects it to be the stream's last. A failed publish leaves the
    store refusing appends (``StoreFailed``) until ``reset`` after the node has
    re-read the stream: whether that publish was stored is only known then.
    """

    def __init__(self, shared: Shared, publish_timeout: float = 5.0) -> None:
        self.shared = shared
        self.names = shared.names
        self.publish_timeout = publish_timeout
        self.failed = asyncio.Event()  # never set: a cluster node recovers instead
        self.broken: asyncio.Event = asyncio.Event()  # set on a failed publish
        self.appended = 0
        self.position = 0
        self.cursor = 0  # cursor of the last record at ``position``
        self.snapshots = ObjectSnapshots(shared, publish_timeout)
        self.snapshot_position = 0
        self.bytes_since_snapshot = 0
        limit = shared.nc.max_payload or 2**20
        self.message_bytes = max(64 * 2**10, limit - HEADROOM)
        self._queue: list[tuple[bytes | _Compaction, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._last: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    # -- writing -----------------------------------------------------------------

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queue(), name="messenger-jetstream-writer"
            )

    def reset(self, position: int, cursor: int) -> None:
        """The stream was read back to ``position``: appends may go on from there."""
        self.position, self.cursor = position, cursor
        self._error = None
        self.broken.clear()

    def append(self, records: list[Record]) -> asyncio.Future[None]:
        if not records:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self._enqueue(orjson.dumps(records)[1:-1])

    def compact(self, snapshot: Snapshot) -> asyncio.Future[None]:
        return self._enqueue(_Compaction(snapshot))

    def wants_compaction(self, threshold: int) -> bool:
        return self.bytes_since_snapshot > threshold

    def barrier(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        last = self._last
        if self._error is not None:
            future.set_exception(self._unavailable())
        elif last is None or last.done():
            future.set_result(None)
        else:
            return asyncio.shield(last)
        return future

    def _unavailable(self) -> Unavailable:
        return _refusal(self._error)

    def _enqueue(self, item: bytes | _Compaction) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._error is not None:
            future.set_exception(self._unavailable())
            return future
        self._queue.append((item, future))
        self._last = future
        self._wakeup.set()
        return future

    async def close(self) -> None:
        if self._writer is not None:
            # What is queued is written first, unless the stream is out of reach.
            with contextlib.suppress(TimeoutError, Unavailable):
                await asyncio.wait_for(self.barrier(), self.publish_timeout)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._fail_all(StoreFailed("the server is stopping"))

    async def _write_queue(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and self._error is None:
                item, future = self._queue.pop(0)
                if isinstance(item, _Compaction):
                    await self._snapshot(item.snapshot, future)
                    continue
                # Every append queued since, up to a message's size: one publish.
                parts, waiters, size = [item], [future], len(item)
                while self._queue and not isinstance(self._queue[0][0], _Compaction):
                    more, waiter = self._queue[0]
                    assert isinstance(more, bytes)
                    if size + len(more) + 1 > self.message_bytes:
                        break
                    self._queue.pop(0)
                    parts.append(more)
                    waiters.append(waiter)
                    size += len(more) + 1
                try:
                    await self._publish(b"[" + b",".join(parts) + b"]", waiters)
                except Exception as exc:  # a bug: fail what waits, and go on
                    logger.exception("appending to %s failed", self.names.stream)
                    self._broken(StoreFailed(f"the append failed: {exc!r}"), waiters)

    async def _publish(self, payload: bytes, waiters: list[asyncio.Future[None]]) -> None:
        headers = {"Nats-Expected-Last-Sequence": str(self.position)}
        try:
            ack = await self.shared.js.publish(
                self.names.subject,
                payload,
                timeout=self.publish_timeout,
                stream=self.names.stream,
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                self._broken(Fenced(f"another writer appended after {self.position}"), waiters)
            else:
                self._broken(StoreFailed(f"JetStream refused the append: {exc}"), waiters)
            return
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            self._broken(StoreFailed(f"no answer from JetStream: {exc!r}"), waiters)
            return
        self.position = ack.seq
        self.appended += payload.count(b'"c":')
        self.bytes_since_snapshot += len(payload)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _broken(self, error: StoreFailed, waiters: list[asyncio.Future[None]]) -> None:
        logger.warning("appending to %s failed: %s", self.names.stream, error)
        self._error = error
        self.broken.set()
        self._fail_all(error, waiters)

    def _fail_all(
        self, error: BaseException, waiters: list[asyncio.Future[None]] | None = None
    ) -> None:
        unavailable = _refusal(error)
        for waiter in (waiters or []) + [future for _, future in self._queue]:
            if not waiter.done():
                waiter.set_exception(unavailable)
        self._queue.clear()

    # -- snapshots ---------------------------------------------------------------

    async def _snapshot(self, snapshot: Snapshot, future: asyncio.Future[None]) -> None:
        """Save ``snapshot`` as covering everything published so far, then purge the
        stream below it. Failing here loses nothing: the stream is still whole."""
        position = self.position
        began = time.perf_counter()
        try:
            # Snapshots are not fenced as appends are: a writer that lost the lease
            # and does not know it yet must not save one, nor purge, behind the new
            # writer's back (its snapshot would point before what the new one purged).
            last = (await self.shared.js.stream_info(self.names.stream)).state.last_seq
            if last != position:
                raise StoreFailed(f"another writer appended after {position} (up to {last})")
            await self.snapshots.save(replace(snapshot, position=position))
            if position:
                await self.shared.js.purge_stream(self.names.stream, seq=position + 1)
        except (StoreFailed, nats.errors.Error, TimeoutError, OSError) as exc:
            logger.warning("snapshot at stream sequence %d not stored: %r", position, exc)
            if not future.done():
                future.set_result(None)
            return
        self.snapshot_position = position
        self.bytes_since_snapshot = 0
        logger.info(
            "snapshot of %d bytes covers stream sequence %d (cursor %d), stored in %.2f s",
            len(snapshot.data),
            position,
            snapshot.cursor,
            time.perf_counter() - began,
        )
        if not future.done():
            future.set_result(None)

    # -- reading back ------------------------------------------------------------

    async def records(self, after: Snapshot | None = None) -> AsyncIterator[list[bytes]]:
        """The stream's records after the snapshot ``after`` (``snapshots.load``), up
        to the stream's last message when this was called, each as its JSON;
        ``position`` and ``cursor`` follow what was read. Raises ``Gap`` when a
        newer snapshot purged what was to follow ``after``: load the newest again,
        into a fresh state."""
        start = 1
        if after is not None:
            start = after.position + 1
            self.snapshot_position = after.position
            self.position, self.cursor = after.position, after.cursor
        info = await self.shared.js.stream_info(self.names.stream)
        last = info.state.last_seq
        if last < start:
            self.position = max(self.position, last)
            return
        async for seq, batch in self.tail(start, until=last):
            self.position = seq
            if batch:
                self.cursor = orjson.loads(bytes(batch[-1])).get("c", self.cursor)
            yield [bytes(record) for record in batch]

    async def tail(
        self, start: int, until: int | None = None
    ) -> AsyncIterator[tuple[int, list[msgspec.Raw]]]:
        """(stream sequence, its records' JSON) of each message from ``start`` on, in
        order; up to ``until`` if given, else for ever. Checks that the first message
        is the one asked for: JetStream silently starts later when it was purged."""
        info = await self.shared.js.stream_info(self.names.stream)
        if start < info.state.first_seq:  # purged below what is asked: a quiet stream
            raise Gap(start, info.state.first_seq)  # would never say so by itself
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        )
        subscription = await self.shared.js.subscribe(
            self.names.subject,
            stream=self.names.stream,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=2.0,
            pending_msgs_limit=4096,
            pending_bytes_limit=64 * 2**20,
        )
        expected = start
        try:
            async for message in subscription.messages:
                seq = message.metadata.sequence.stream
                if seq != expected:
                    raise Gap(expected, seq)
                expected = seq + 1
                yield seq, _SPLIT(message.data)
                if until is not None and seq >= until:
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


# -- files -------------------------------------------------------------------------


class ObjectBlobs:
    """Files in the cluster's Object Store, with this node's copies in ``cache``.

    ``in_use()`` is the contents (SHA-256) of the state's files and of uploads being
    stored here. A removal waits ``grace`` seconds and asks again: another node may
    have just stored the same content, and tells the writer so only after putting it
    in the Object Store."""

    def __init__(
        self, shared: Shared, cache: Path, in_use: Callable[[], set[str]], grace: float = 60.0
    ) -> None:
        self.shared = shared
        self.cache = cache
        self.in_use = in_use
        self.grace = grace
        self._fetching: dict[str, asyncio.Future[None]] = {}

    async def publish(self, sha256: str) -> None:
        try:
            await self.shared.files.get_info(sha256)
            return  # the same content is there already: re-putting would replace it
        except nats.js.errors.ObjectNotFoundError:
            pass
        data = await asyncio.get_running_loop().run_in_executor(
            None, (self.cache / sha256).read_bytes
        )
        await self.shared.files.put(sha256, data)

    async def fetch(self, sha256: str) -> None:
        """Into the cache, once: concurrent fetches of one file wait for the first."""
        if (self.cache / sha256).exists():
            return
        fetching = self._fetching.get(sha256)
        if fetching is None:
            fetching = asyncio.ensure_future(self._fetch(sha256))
            self._fetching[sha256] = fetching
            fetching.add_done_callback(lambda _: self._fetching.pop(sha256, None))
        await asyncio.shield(fetching)

    async def _fetch(self, sha256: str) -> None:
        path = self.cache / sha256
        partial = path.with_name(f"{sha256}.{secrets.token_hex(4)}.part")
        loop = asyncio.get_running_loop()
        try:
            with partial.open("wb") as file:
                try:
                    await asyncio.wait_for(
                        self.shared.files.get(sha256, writeinto=file), FETCH_TIMEOUT
                    )
                except nats.js.errors.ObjectNotFoundError:
                    return
                except TimeoutError:
                    raise Unavailable("The file store did not answer; try again", 1.0) from None
            await loop.run_in_executor(None, partial.replace, path)
        finally:
            await loop.run_in_executor(None, functools.partial(partial.unlink, missing_ok=True))

    async def remove(self, sha256: str) -> None:
        await asyncio.sleep(self.grace)
        if sha256 in self.in_use():
            return
        with contextlib.suppress(nats.js.errors.ObjectNotFoundError, nats.errors.Error):
            await self.shared.files.delete(sha256)

    def prune_cache(self, keep: set[str]) -> None:
        """Delete this node's copies of files not in ``keep`` (blocking: run it off
        the event loop)."""
        for path in self.cache.iterdir():
            if not path.name.endswith(".part") and path.name not in keep:
                path.unlink(missing_ok=True)


async def read_object(store: ObjectStore, name: str, within: float) -> bytes:
    """An object's bytes, or TimeoutError: nats-py waits for ever for the chunks of an
    object replaced while it reads, and joins chunks with ``bytes +=`` (quadratic:
    64 MB took 11 s of the event loop) unless given a file to write into."""
    into = io.BytesIO()
    await asyncio.wait_for(store.get(name, writeinto=into), within)
    return into.getvalue()
