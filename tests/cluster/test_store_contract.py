"""One contract for every event store (eventsourcing's recorder test case) and every
snapshot store: the file log and the JetStream stream, with their snapshot stores,
pass the same tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeout

from server import jetstream
from server.errors import Unavailable
from server.log import EventLog, decode_dict
from server.store import EventStore, NotStored, Record, Snapshot, StoreFailed
from tests.cluster.support import Nats

Opener = Callable[[], contextlib.AbstractAsyncContextManager[EventStore]]


@pytest.fixture(params=["file", "jetstream"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same store again each time it is called (a restart)."""
    if request.param == "file":

        @contextlib.asynccontextmanager
        async def file_store() -> AsyncIterator[EventStore]:
            log = EventLog(tmp_path / "events.log")
            async for _ in log.records(await log.snapshots.load()):  # read, then open
                pass
            log.open()
            try:
                yield log
            finally:
                await log.close()

        return file_store
    nats: Nats = request.getfixturevalue("nats")

    @contextlib.asynccontextmanager
    async def stream_store() -> AsyncIterator[EventStore]:
        shared = await jetstream.connect([nats.url], "contract", 1.0, "test")
        store = jetstream.JetStreamStore(shared)
        async for _ in store.records(await store.snapshots.load()):  # as a start reads it
            pass
        store.reset(store.position, store.cursor)
        store.start()
        try:
            yield store
        finally:
            await store.close()
            await shared.close()

    return stream_store


def records(first: int, count: int) -> list[Record]:
    return [{"type": "Note", "n": n, "c": n} for n in range(first, first + count)]


async def read_back(open_store: Opener) -> list[Record]:
    """The records after the newest snapshot, as a start reads them."""
    async with open_store() as store:
        after = await store.snapshots.load()
        return [decode_dict(record) async for chunk in store.records(after) for record in chunk]


async def test_an_empty_store_reads_back_nothing(open_store: Opener) -> None:
    """A new store holds no records."""
    assert await read_back(open_store) == []


async def test_appended_records_read_back_in_order_after_a_restart(open_store: Opener) -> None:
    """What was appended (and awaited) is there, in order, once the store is reopened."""
    async with open_store() as store:
        await store.append(records(1, 3))
        await asyncio.gather(store.append(records(4, 2)), store.append(records(6, 1)))
    assert [r["n"] for r in await read_back(open_store)] == list(range(1, 7))


async def test_an_empty_append_is_done_at_once_and_counts_nothing(open_store: Opener) -> None:
    """append([]) is done before anything is written; ``appended`` counts the records
    made durable since the store was opened, not the appends."""
    async with open_store() as store:
        assert store.append([]).done()
        assert store.appended == 0
        await store.append(records(1, 2))
        await store.append(records(3, 1))
        assert store.appended == 3


async def test_close_writes_what_is_still_queued(open_store: Opener) -> None:
    """Records appended but not awaited before close are written by the close."""
    async with open_store() as store:
        pending = store.append(records(1, 2))
    assert pending.done()
    assert [r["n"] for r in await read_back(open_store)] == [1, 2]


async def test_the_barrier_waits_for_everything_appended(open_store: Opener) -> None:
    """``barrier`` is done only once every append before it is durable."""
    async with open_store() as store:
        appends = [store.append(records(n, 1)) for n in range(1, 30)]
        await store.barrier()
        assert all(append.done() for append in appends)
    assert len(await read_back(open_store)) == 29


async def test_a_snapshot_replaces_what_it_covers(open_store: Opener) -> None:
    """After ``compact(snapshot)``, the snapshot is the newest, and the records read
    back after it are the later ones (none it covers)."""
    async with open_store() as store:
        await store.append(records(1, 5))
        await store.compact(Snapshot(b"state at 5", 5))
        await store.append(records(6, 2))
    async with open_store() as store:
        loaded = await store.snapshots.load()
        assert loaded is not None
        assert (loaded.data, loaded.cursor) == (b"state at 5", 5)
    assert await read_back(open_store) == records(6, 2)


async def test_an_empty_snapshot_store_loads_nothing(open_store: Opener) -> None:
    """No snapshot saved: ``load`` says so."""
    async with open_store() as store:
        assert await store.snapshots.load() is None


async def test_the_newest_snapshot_saved_is_loaded(open_store: Opener) -> None:
    """Of several snapshots saved, ``load`` gives the newest, whole, after a restart too."""
    big = bytes(range(256)) * 5000  # over an Object Store chunk, and not text
    async with open_store() as store:
        await store.snapshots.save(Snapshot(b"first", 3))
        await store.snapshots.save(Snapshot(big, 7))
        loaded = await store.snapshots.load()
        assert loaded is not None
        assert (loaded.data, loaded.cursor) == (big, 7)
    async with open_store() as store:
        again = await store.snapshots.load()
        assert again is not None
        assert (again.data, again.cursor) == (big, 7)


async def test_records_a_snapshot_covers_are_left_to_the_reader_to_skip(
    open_store: Opener,
) -> None:
    """A snapshot saved but its records not dropped (a crash between the two): what is
    read back after it is whatever the store still holds, each with its cursor, so
    that the reader can skip those the snapshot covers."""
    async with open_store() as store:
        await store.append(records(1, 4))
        await store.snapshots.save(Snapshot(b"state at 2", 2))
    back = await read_back(open_store)
    assert [r["c"] for r in back if r["c"] > 2] == [3, 4]


async def test_many_appends_read_back_whole(open_store: Opener) -> None:
    """Thousands of records in many batches (some over a message's size) come back whole."""
    text = "x" * 2000
    async with open_store() as store:
        pending = [store.append([{"type": "Note", "c": n, "t": text}]) for n in range(1, 1001)]
        await asyncio.gather(*pending)
    back = await read_back(open_store)
    assert [r["c"] for r in back] == list(range(1, 1001))


async def test_a_stale_writer_is_fenced_off(nats: Nats) -> None:
    """Two JetStream writers that both think they know the end: the second's append
    is refused (-32008) instead of interleaving, and the store says it is broken.
    The refusal is certain (``NotStored``: a decision may be taken again), for the
    fenced append and for every one after it until the stream is re-read."""
    opened: list[Any] = []
    try:
        for name in ("a", "b"):
            shared = await jetstream.connect([nats.url], "fence", 1.0, name)
            store = jetstream.JetStreamStore(shared)
            async for _ in store.records():
                pass
            store.reset(store.position, store.cursor)
            store.start()
            opened.append((shared, store))
        (_, first), (_, second) = opened
        await first.append(records(1, 1))
        with pytest.raises(NotStored):
            await second.append(records(1, 1))
        assert second.broken.is_set()
        with pytest.raises(NotStored):  # and it stays refusing until re-read
            await second.append(records(2, 1))
        assert [r["n"] for r in await read_back_stream(nats, "fence")] == [1]
    finally:
        for shared, store in opened:
            await store.close()
            await shared.close()


async def read_back_stream(nats: Nats, cluster: str) -> list[Record]:
    shared = await jetstream.connect([nats.url], cluster, 1.0, "reader")
    try:
        store = jetstream.JetStreamStore(shared)
        return [decode_dict(record) async for chunk in store.records() for record in chunk]
    finally:
        await shared.close()


async def test_an_append_without_an_answer_is_not_known_unstored(nats: Nats) -> None:
    """A publish whose acknowledgement never came may be stored: the append fails
    -32008 but not ``NotStored`` (nothing may be decided again)."""
    shared = await jetstream.connect([nats.url], "lost", 1.0, "a")
    store = jetstream.JetStreamStore(shared)
    try:
        async for _ in store.records():
            pass
        store.reset(store.position, store.cursor)
        store.start()
        publish = shared.js.publish

        async def unanswered(subject: str, *args: Any, **kwargs: Any) -> Any:
            await publish(subject, *args, **kwargs)
            raise NatsTimeout

        shared.js.publish = unanswered  # type: ignore[method-assign]
        with pytest.raises(Unavailable) as caught:
            await store.append(records(1, 1))
        assert not isinstance(caught.value, NotStored)
        assert store.broken.is_set()
        assert [r["n"] for r in await read_back_stream(nats, "lost")] == [1]
    finally:
        await store.close()
        await shared.close()


@contextlib.asynccontextmanager
async def stream_writer(nats: Nats, cluster: str, name: str) -> AsyncIterator[Any]:
    """A JetStream store that has read the stream to its end and writes from there."""
    shared = await jetstream.connect([nats.url], cluster, 1.0, name)
    store = jetstream.JetStreamStore(shared)
    try:
        async for _ in store.records(await store.snapshots.load()):
            pass
        store.reset(store.position, store.cursor)
        store.start()
        yield store
    finally:
        await store.close()
        await shared.close()


async def test_a_stale_writers_snapshot_does_not_replace_a_newer_one(nats: Nats) -> None:
    """A writer that lost its place and does not know it yet (its state ends at 2)
    saves a snapshot after the new writer appended 3-4, took a snapshot at 4 and
    appended 5: the newer snapshot stays the newest, and a node starting reads it and
    the record after it, rather than a snapshot whose next records are purged (a Gap
    at every start and re-read, and the new writer's events in neither)."""
    async with stream_writer(nats, "stale", "a") as first:
        await first.append(records(1, 2))
        async with stream_writer(nats, "stale", "b") as second:
            await second.append(records(3, 2))
            await second.compact(Snapshot(b"state at 4", 4))
            await second.append(records(5, 1))
            await first.compact(Snapshot(b"state at 2", 2))
            with pytest.raises(StoreFailed):  # nor saved directly, past the stream's check
                await first.snapshots.save(Snapshot(b"state at 2", 2, position=1))
            async with stream_writer(nats, "stale", "c") as starting:
                loaded = await starting.snapshots.load()
                assert loaded is not None
                assert (loaded.data, loaded.cursor) == (b"state at 4", 4)
                back = [decode_dict(r) async for chunk in starting.records(loaded) for r in chunk]
                assert [r["c"] for r in back] == [5]
