"""server/store.py's shared pieces, driven directly: records are read back in chunks of
exactly READ_CHUNK, and a gap says which position it expected."""

from __future__ import annotations

from server.store import READ_CHUNK, Gap, StoreFailed, in_chunks


async def sizes_of(count: int) -> list[int]:
    return [len(chunk) async for chunk in in_chunks({"n": n} for n in range(count))]


async def test_records_come_in_chunks_of_4096_and_a_rest() -> None:
    """4096 records are one chunk, 4097 two (4096 and 1), none no chunk at all; the
    records keep their order."""
    assert READ_CHUNK == 4096
    assert await sizes_of(0) == []
    assert await sizes_of(1) == [1]
    assert await sizes_of(4096) == [4096]
    assert await sizes_of(4097) == [4096, 1]
    chunks = [chunk async for chunk in in_chunks({"n": n} for n in range(5000))]
    assert [record["n"] for chunk in chunks for record in chunk] == list(range(5000))


def test_a_gap_names_the_position_expected_and_the_one_found() -> None:
    """A Gap is a StoreFailed whose message says both positions."""
    gap = Gap(3, 5)
    assert isinstance(gap, StoreFailed)
    assert (gap.expected, gap.got, str(gap)) == (3, 5, "expected position 3, but got 5")
