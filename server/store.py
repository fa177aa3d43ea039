"""The event store: the narrow interface the service writes through, whatever keeps
the events (eventsourcing's recorder: ``append`` and read back, nothing else).

Two implementations: ``log.EventLog``, a file in the state directory (the default),
and ``jetstream.JetStreamStore``, one stream shared by a cluster of servers. One
contract suite (tests/server/test_store_contract.py) runs against both.

A record is an event's dict (``events.to_record``) with its cursor under ``"c"``;
the records a snapshot consists of carry no cursor (the last of them, a
``SnapshotTaken``, says which cursor the snapshot covers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
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


class EventStore(Protocol):
    """Where events are kept. ``append`` is the only write; ``records`` reads back."""

    failed: asyncio.Event  # set when the store can no longer be trusted: stop serving
    appended: int  # records made durable since opened, for operators' logs

    def append(self, records: list[Record]) -> asyncio.Future[None]:
        """Queue ``records`` (their cursors follow the last one appended); the future
        is done once they are durable, or fails: with ``NotStored`` when none of them
        was kept for certain, else with ``StoreFailed`` or ``Unavailable`` (they may
        or may not be kept)."""
        ...

    def barrier(self) -> asyncio.Future[None]:
        """Done once everything appended so far is durable."""
        ...

    def compact(self, head: list[Record]) -> asyncio.Future[None]:
        """Keep ``head`` (a snapshot of the state after every record appended before
        this call) in place of those records; later appends follow it."""
        ...

    def wants_compaction(self, threshold: int) -> bool:
        """Whether what was appended since the last snapshot is worth a new one."""
        ...

    def records(self) -> AsyncIterator[list[Record]]:
        """Every record kept, oldest first (a snapshot's first), in chunks."""
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
