"""The JetStream store's edges the contract leaves open (each found by a mutant that
survived every test, bench/MUTATION.md): how queued appends share a message, what a
snapshot keeps, purges and deletes, how a reader notices missing messages, what a
refused append and ``close`` leave behind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import orjson
import pytest

from server import jetstream
from server.errors import Unavailable
from server.jetstream import JetStreamStore
from server.log import decode_dict
from server.store import Gap, NotStored, Snapshot
from tests.cluster.support import Nats
from tests.cluster.test_store_contract import read_back_stream, records, stream_writer


async def messages_of(store: JetStreamStore) -> list[list[int]]:
    """The cursors of the records in each message of the stream, in order."""
    info = await store.shared.js.stream_info(store.names.stream)
    if info.state.messages == 0:
        return []
    return [
        [decode_dict(bytes(record))["c"] for record in batch]
        async for _, batch in store.tail(info.state.first_seq, until=info.state.last_seq)
    ]


async def stream_state(store: JetStreamStore) -> tuple[int, int]:
    """(first sequence, number of messages) of the stream."""
    info = await store.shared.js.stream_info(store.names.stream)
    return info.state.first_seq, info.state.messages


@pytest.mark.parametrize(("message_bytes", "sizes"), [(39, [5, 4]), (38, [4, 4, 1])])
async def test_appends_queued_together_share_a_message_up_to_its_size(
    nats: Nats, message_bytes: int, sizes: list[int]
) -> None:
    """Appends queued while the writer is busy go out in one message, as many as fit
    in ``message_bytes`` counting the comma between two (5 records of 7 bytes: 39)."""
    async with stream_writer(nats, "batch", "a") as store:
        store.message_bytes = message_bytes
        assert len(orjson.dumps({"c": 1})) == 7
        await asyncio.gather(*[store.append([{"c": n}]) for n in range(1, 10)])
        assert [len(batch) for batch in await messages_of(store)] == sizes


async def test_a_message_holds_the_servers_max_payload_less_4_kib(nats: Nats) -> None:
    """By default a message is filled up to NATS's max_payload less 4 KiB of headroom
    for the headers and the brackets, and not past it."""
    async with stream_writer(nats, "full", "a") as store:
        fill = store.shared.nc.max_payload - 4096
        assert store.message_bytes == fill
        shell = len(orjson.dumps({"c": 1, "t": ""}))
        first = {"c": 1, "t": "x" * (fill // 2 - shell)}
        second = {"c": 2, "t": "y" * (fill - fill // 2 - shell - 1)}
        assert len(orjson.dumps(first)) + 1 + len(orjson.dumps(second)) == fill
        await asyncio.gather(
            store.append([first]), store.append([second]), store.append([{"c": 3}])
        )
        assert await messages_of(store) == [[1, 2], [3]]


async def test_a_compaction_queued_among_appends_covers_those_queued_before_it(
    nats: Nats,
) -> None:
    """Appends, a compaction and more appends queued together: the appends before the
    compaction are published apart from those after it, and the snapshot covers
    exactly the former."""
    async with stream_writer(nats, "between", "a") as store, asyncio.timeout(10):
        await asyncio.gather(
            store.append(records(1, 3)),
            store.compact(Snapshot(b"state at 3", 3)),
            store.append(records(4, 2)),
        )
        loaded = await store.snapshots.load()
        assert loaded is not None
        assert (loaded.data, loaded.cursor, loaded.position) == (b"state at 3", 3, 1)
        back = [decode_dict(r) async for batch in store.records(loaded) for r in batch]
        assert [record["c"] for record in back] == [4, 5]


async def test_the_snapshot_store_keeps_the_newest_snapshot_and_the_one_before(
    nats: Nats,
) -> None:
    """Each save points at the new snapshot and deletes the one before the previous (a
    node may still be reading the previous); one saved again where the newest is
    replaces it."""
    async with stream_writer(nats, "kept", "a") as store:
        objects = store.shared.snapshots
        for n in range(1, 5):
            await store.snapshots.save(Snapshot(f"at {n}".encode(), n, position=n))
        listed = await objects.list(ignore_deletes=True)
        assert {info.name for info in listed} == {"snapshot", "snapshot-3-3", "snapshot-4-4"}
        await store.snapshots.save(Snapshot(b"at 4 again", 4, position=4))
        loaded = await store.snapshots.load()
        assert loaded is not None
        assert (loaded.data, loaded.cursor, loaded.position) == (b"at 4 again", 4, 4)


async def test_a_writer_behind_the_stream_saves_no_snapshot_even_when_none_is_newer(
    nats: Nats,
) -> None:
    """A writer whose last append is no longer the stream's last (another writer
    appended since) neither saves its snapshot nor purges, though no snapshot is
    newer than its own."""
    async with stream_writer(nats, "behind", "a") as first:
        await first.append(records(1, 2))
        async with stream_writer(nats, "behind", "b") as second:
            await second.append(records(3, 1))
            await first.compact(Snapshot(b"state at 2", 2))
            assert await second.snapshots.load() is None
            assert await stream_state(second) == (1, 2)


async def test_a_snapshot_purges_exactly_the_messages_it_covers(nats: Nats) -> None:
    """After a snapshot at stream sequence 3 the stream starts at 4."""
    async with stream_writer(nats, "purge", "a") as store:
        for n in range(1, 4):
            await store.append(records(n, 1))
        await store.compact(Snapshot(b"state at 3", 3))
        await store.append(records(4, 1))
        assert await stream_state(store) == (4, 1)


async def test_compaction_is_wanted_once_more_bytes_than_the_threshold_are_published(
    nats: Nats,
) -> None:
    """``wants_compaction(t)`` holds once more than ``t`` bytes were published since
    the last snapshot (a message counted whole), and again not after a snapshot."""
    async with stream_writer(nats, "bytes", "a") as store:
        assert not store.wants_compaction(0)
        await store.append(records(1, 2))
        published = len(orjson.dumps(records(1, 2)))
        assert store.wants_compaction(published - 1)
        assert not store.wants_compaction(published)
        await store.compact(Snapshot(b"state at 2", 2))
        assert not store.wants_compaction(0)


async def test_a_fenced_writer_publishes_none_of_what_it_was_refused_after_a_reset(
    nats: Nats,
) -> None:
    """After a fence every append queued fails ``NotStored``, and so does the barrier;
    once the stream is re-read and the store reset it no longer says it is broken, and
    what it appends next is stored, none of what it was refused."""
    async with (
        stream_writer(nats, "refused", "a") as first,
        stream_writer(nats, "refused", "b") as second,
    ):
        await first.append(records(1, 1))
        second.message_bytes = 1  # a message per append: the later ones stay queued
        refused = [second.append(records(n, 1)) for n in (2, 3, 4)]
        for append in refused:
            with pytest.raises(NotStored):
                await append
        with pytest.raises(NotStored):
            await second.barrier()
        async for _ in second.records():
            pass
        second.reset(second.position, second.cursor)
        assert not second.broken.is_set()
        await second.append(records(5, 1))
    assert [record["n"] for record in await read_back_stream(nats, "refused")] == [1, 5]


async def test_an_append_refused_for_another_reason_fails_as_not_known_unstored(
    nats: Nats,
) -> None:
    """JetStream refusing a publish for a reason other than the fence (here: a message
    over the stream's size limit) fails the append -32008 at once, not ``NotStored``,
    and the store says it is broken."""
    async with stream_writer(nats, "limited", "a") as store:
        info = await store.shared.js.stream_info(store.names.stream)
        info.config.max_msg_size = 64
        await store.shared.js.update_stream(info.config)
        async with asyncio.timeout(10):
            with pytest.raises(Unavailable) as caught:
                await store.append([{"c": 1, "t": "x" * 100}])
        assert not isinstance(caught.value, NotStored)
        assert store.broken.is_set()


async def test_close_fails_what_it_could_not_write_and_leaves_no_writer_running(
    nats: Nats,
) -> None:
    """``close`` returns once its writer task has ended, and fails every append it
    could not write (here: a store that never started writing) instead of leaving it
    waiting for ever."""
    shared = await jetstream.connect([nats.url], "closing", 1.0, "a")
    try:
        idle = JetStreamStore(shared)
        never = idle.append(records(1, 1))
        await idle.close()
        assert never.done()
        assert isinstance(never.exception(), Unavailable)
        store = JetStreamStore(shared)
        store.start()
        await store.append(records(1, 1))
        await store.close()
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert "messenger-jetstream-writer" not in names
    finally:
        await shared.close()


async def read_into(seen: list[int], tail: AsyncIterator[tuple[int, list[msgspec.Raw]]]) -> None:
    """The stream sequences ``tail`` gives, into ``seen``, until it ends or raises."""
    async for seq, _ in tail:
        seen.append(seq)


@contextlib.asynccontextmanager
async def three_messages(nats: Nats, cluster: str) -> AsyncIterator[JetStreamStore]:
    async with stream_writer(nats, cluster, "a") as store:
        for n in range(1, 4):
            await store.append(records(n, 1))
        yield store


async def test_a_tail_from_below_a_purged_quiet_stream_is_a_gap_at_once(nats: Nats) -> None:
    """Asked to read from a sequence a snapshot purged, with nothing appended since,
    ``tail`` raises ``Gap`` at once instead of waiting for a message that never comes."""
    async with three_messages(nats, "quiet") as store:
        await store.compact(Snapshot(b"state at 3", 3))
        async with asyncio.timeout(5):
            with pytest.raises(Gap) as caught:
                await read_into([], store.tail(2))
        assert (caught.value.expected, caught.value.got) == (2, 4)


async def test_a_message_missing_from_the_middle_of_the_stream_is_a_gap(nats: Nats) -> None:
    """A message gone from between two others is a ``Gap`` for the reader, not skipped."""
    async with three_messages(nats, "hole") as store:
        await store.shared.js.delete_msg(store.names.stream, 2)
        seen: list[int] = []
        with pytest.raises(Gap) as caught:
            await read_into(seen, store.tail(1, until=3))
        assert seen == [1]
        assert (caught.value.expected, caught.value.got) == (2, 3)
