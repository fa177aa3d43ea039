"""The event store: the narrow interface the service writes through, whatever keeps
the events (eventsourcing's recorder: ``append`` and read back, nothing else).

Two implementations: ``log.EventLog``, a file in the state directory (the default),
and ``jetstream.JetStreamStore``, one stream shared by a cluster of servers. One
contract suite (tests/cluster/test_store_contract.py) runs against both.

A record is an event's dict (``events.to_record``) with its cursor under ``"c"``.
Snapshots are kept apart from the records (eventsourcing's snapshot store): each
event store has a ``SnapshotStore`` (``log.FileSnapshots``, ``jetstream.ObjectSnapshots``)
whose newest snapshot says which cursor it covers; a replay loads it, then folds
the records after that cursor. Logs written before carry their snapshot as records
without a cursor at their head (the last of them a ``SnapshotTaken``); they are
still read as they were, until the next compaction moves them to a snapshot store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from server.errors import Unavailable

Record = dict[str, Any]

# Records handed to the fold at a time when a store is read back.
READ_CHUNK = 4096


class StoreFailed(Exception):
    """The store could not take records: whatever was given to it since the last
    durable point may or may not be stored."""


class NotStored(Unavailable):
    """What an append's future fails with when the store is certain it kept none of
    its records (a JetStream writer fenced off: another appended first). Any other
    failure leaves the outcome unknown. Only after ``NotStored`` may a decision be
    taken again, against the state re-read from the store (server/executor.py)."""


class Gap(StoreFailed):
    """The store no longer holds a record the reader needs (a snapshot replaced it):
    start again from the snapshot."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"expected position {expected}, but got {got}")
        self.expected, self.got = expected, got


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state after the event at ``cursor``, as ``domain.snapshot.dump`` writes it."""

    data: bytes
    cursor: int
    # Where the records after it start in the event store that took it (JetStream:
    # the stream sequence it covers); 0 for the file log, whose records say their cursor.
    position: int = 0


class SnapshotStore(Protocol):
    """Keeps the newest snapshot whole: a save that did not finish leaves the one before."""

    where: str  # what a refusal to start names: the file, or the cluster's bucket

    async def save(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` durably as the newest; raises ``StoreFailed`` (or
        ``OSError``) when it could not, and then the one before is still the newest."""
        ...

    async def load(self) -> Snapshot | None:
        """The newest snapshot saved whole, or None when there is none."""
        ...


class EventStore(Protocol):
    """Where events are kept. ``append`` is the only write; ``records`` reads back."""

    failed: asyncio.Event  # set when the store can no longer be trusted: stop serving
    appended: int  # records made durable since opened, for operators' logs

    @property
    def snapshots(self) -> SnapshotStore:
        """Where its snapshots are kept."""
        ...

    def append(self, records: list[Record]) -> asyncio.Future[None]:
        """Queue ``records`` (their cursors follow the last one appended); the future
        is done once they are durable, or fails: with ``NotStored`` when none of them
        was kept for certain, else with ``StoreFailed`` or ``Unavailable`` (they may
        or may not be kept)."""
        ...

    def barrier(self) -> asyncio.Future[None]:
        """Done once everything appended so far is durable."""
        ...

    def compact(self, snapshot: Snapshot) -> asyncio.Future[None]:
        """Save ``snapshot`` (of the state after every record appended before this
        call) in ``snapshots``, then drop the records it covers; later appends follow."""
        ...

    def wants_compaction(self, threshold: int) -> bool:
        """Whether what was appended since the last snapshot is worth a new one."""
        ...

    def records(self, after: Snapshot | None = None) -> AsyncIterator[list[bytes]]:
        """The records kept after ``after`` (the snapshot loaded from ``snapshots``;
        None: every record), oldest first, in chunks, each as its JSON: the reader
        decodes them (``events.decode_stored``: the cursor and the event, with no dict
        in between), one at a time as it folds them. Some it covers may come too
        (a crash between saving a snapshot and dropping them): the reader skips
        those by their cursor, and records without one (an older log's snapshot)."""
        ...

    async def close(self) -> None:
        """Make what was appended durable, then let go."""
        ...


async def in_chunks(records: Iterable[Record]) -> AsyncIterator[list[Record]]:
    """``records`` in lists of ``READ_CHUNK``, yielding to the loop between them."""
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == READ_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
