"""Records a start must refuse: well-formed (a valid checksum, a JSON object) but not
what any writer wrote. The start stops with ``LogCorrupted`` naming the file and the
record's byte offset, rather than with a bare exception or, worse, going on."""

from __future__ import annotations

import gc
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.app import LOG_FILE, run_server
from server.config import Config
from server.domain.snapshot import FORMAT
from server.log import SNAPSHOT_SUFFIX, FileSnapshots, LogCorrupted, encode_record
from server.store import Snapshot
from tests.server.extras_support import Clock, config_in, post
from tests.wsclient import user_device


async def served(config: Config, messages: int, register: bool = True) -> None:
    """A run of the server in which alice posts ``messages`` messages."""
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice", register) as alice,
    ):
        for n in range(messages):
            await post(alice, "general", f"m{n}")


def log_lines(config: Config) -> list[bytes]:
    return (config.state_dir / LOG_FILE).read_bytes().splitlines(keepends=True)


async def refusal(config: Config) -> str:
    with pytest.raises(LogCorrupted) as caught:
        async with run_server(config, Clock()):
            pass
    return str(caught.value)


async def refused_with_a_ban_at_the_head(config: Config, cursor: object) -> None:
    """A ban with ``cursor`` put before the log's first record: the start refuses it,
    naming the log, byte offset 0 and the cursor."""
    lines = log_lines(config)
    stray = encode_record(
        {"type": "UserBanned", "user": "alice", "until": 2**60, "at": 1, "c": cursor}
    )
    (config.state_dir / LOG_FILE).write_bytes(b"".join([stray, *lines]))
    message = await refusal(config)
    assert str(config.state_dir / LOG_FILE) in message
    assert "byte offset 0" in message
    assert "cursor" in message


@pytest.mark.parametrize(
    "unfit",
    [
        {"type": "UserSeen", "user": 5, "at": 1},
        {"type": "ReadMarkerMoved", "user": "alice", "chat": "nope", "seq": 1, "at": 1},
        {
            "type": "MessagePosted",
            "message": "m",
            "chat": "general",
            "seq": "9",
            "author": "alice",
            "text": "x",
            "at": 1,
        },
    ],
    ids=["a-name-not-a-string", "a-chat-that-is-not-there", "a-seq-not-a-number"],
)
async def test_an_event_the_state_cannot_take_stops_the_start_naming_file_and_offset(
    tmp_path: Path, unfit: dict[str, Any]
) -> None:
    """An event of a known type whose field has the wrong type, or names a chat the state
    does not hold: LogCorrupted naming the file, the record's offset and its type, not a
    bare TypeError, KeyError or AttributeError with neither."""
    config = config_in(tmp_path)
    await served(config, 2)
    path = config.state_dir / LOG_FILE
    offset = path.stat().st_size
    last = orjson.loads(log_lines(config)[-1][9:])
    with path.open("ab") as file:
        file.write(encode_record({**unfit, "c": last["c"] + 1}))
    message = await refusal(config)
    assert str(path) in message
    assert f"byte offset {offset}" in message
    assert unfit["type"] in message


@pytest.mark.parametrize("where", ["middle", "end"])
@pytest.mark.parametrize("body", [b"[1,2]", b"{not json"], ids=["an-array", "not-json"])
async def test_a_record_whose_checksum_holds_but_is_no_json_object_stops_the_start(
    tmp_path: Path, where: str, body: bytes
) -> None:
    """Its checksum says it was written whole, so it is no torn tail to cut off, at the
    end of the log or anywhere else: the start stops, naming the file and its offset."""
    config = config_in(tmp_path)
    await served(config, 2)
    lines = log_lines(config)
    stray = b"%08x %b\n" % (zlib.crc32(body), body)
    at = 2 if where == "middle" else len(lines)
    (config.state_dir / LOG_FILE).write_bytes(b"".join([*lines[:at], stray, *lines[at:]]))
    message = await refusal(config)
    assert str(config.state_dir / LOG_FILE) in message
    assert f"byte offset {sum(map(len, lines[:at]))}" in message
    assert "is not a JSON object" in message
    assert (
        (config.state_dir / LOG_FILE).read_bytes().endswith(stray if where == "end" else lines[-1])
    )  # nothing cut off


@pytest.mark.parametrize("compacted", [False, True], ids=["no-snapshot", "after-a-snapshot"])
async def test_a_record_without_a_cursor_after_ones_with_is_refused(
    tmp_path: Path, compacted: bool
) -> None:
    """Only the head of a log written before snapshots were kept apart has records
    without a cursor: one among the records with cursors is refused naming its offset,
    neither folded in (a ban nobody decided) nor skipped silently after a snapshot."""
    config = config_in(tmp_path)
    await served(config, 2)
    if compacted:  # the second start compacts: a snapshot, then an empty log
        await served(config, 2, register=False)
        assert (config.state_dir / "events.snapshot").exists()
    lines = log_lines(config)
    assert len(lines) >= 3
    stray = encode_record({"type": "UserBanned", "user": "alice", "until": 2**60, "at": 1})
    (config.state_dir / LOG_FILE).write_bytes(b"".join([*lines[:2], stray, *lines[2:]]))
    message = await refusal(config)
    assert str(config.state_dir / LOG_FILE) in message
    assert f"byte offset {len(lines[0]) + len(lines[1])}" in message
    assert "without a cursor" in message


async def test_a_record_missing_a_field_is_refused_saying_which(tmp_path: Path) -> None:
    """A record of a known type without one of its required fields: LogCorrupted naming
    the file, the offset, the type and the field that is missing (not a bare "'seq'")."""
    config = config_in(tmp_path)
    await served(config, 1)
    path = config.state_dir / LOG_FILE
    offset = path.stat().st_size
    last = orjson.loads(log_lines(config)[-1][9:])
    stray = {"type": "ReadMarkerMoved", "user": "alice", "chat": "general", "at": 1}
    with path.open("ab") as file:
        file.write(encode_record({**stray, "c": last["c"] + 1}))
    message = await refusal(config)
    assert str(path) in message
    assert f"byte offset {offset}" in message
    assert "a ReadMarkerMoved: Object missing required field `seq`" in message


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b'["state",[[3,0]]]\n["users",[["alice","hash",1]]]\n', "line 3"),
        (b'["state",[[3,0]]]\n["chats",[["d","direct",null,null,{"a":0},1,0,null,{}]]]\n', "d"),
        (b'["state",[[3,0]]]\n["nosuch",[]]\n', "nosuch"),
    ],
    ids=["a-row-too-short", "a-direct-chat-of-one", "an-unknown-section"],
)
async def test_a_snapshot_that_does_not_load_stops_the_start_naming_its_file(
    tmp_path: Path, data: bytes, said: str
) -> None:
    """A snapshot whose checksum holds but whose rows do not load (written by another
    version, or by a bug): LogCorrupted naming events.snapshot, not events.log (which
    is fine), and not a bare IndexError or ValueError."""
    config = config_in(tmp_path)
    snapshots = FileSnapshots((config.state_dir / LOG_FILE).with_suffix(SNAPSHOT_SUFFIX))
    config.state_dir.mkdir(parents=True)
    snapshots.write(Snapshot(FORMAT + data, 3))
    message = await refusal(config)
    assert message.startswith(f"{snapshots.path}: ")
    assert "damaged" in message
    assert said in message


async def test_a_snapshot_of_a_format_to_come_is_refused_as_such(tmp_path: Path) -> None:
    """A snapshot written by a newer server (``messenger-state 2``), met after a
    downgrade: refused saying its format, not as records with bad checksums."""
    config = config_in(tmp_path)
    snapshots = FileSnapshots((config.state_dir / LOG_FILE).with_suffix(SNAPSHOT_SUFFIX))
    config.state_dir.mkdir(parents=True)
    snapshots.write(Snapshot(b'messenger-state 2\n["state",[[3,0]]]\n', 3))
    message = await refusal(config)
    assert message.startswith(f"{snapshots.path}: ")
    assert "Expected a snapshot of format 1" in message
    assert "b'messenger-state 2'" in message


@pytest.mark.parametrize("cursor", ["9", True, 1e9], ids=["a-string", "a-bool", "a-float"])
async def test_a_record_whose_cursor_is_no_integer_is_refused_after_a_snapshot(
    tmp_path: Path, cursor: object
) -> None:
    """A record whose cursor is not an integer says nothing of what the snapshot
    covers: at the head of a compacted log it is refused naming its offset, not taken
    for a covered record and skipped silently (a ban nobody may drop unseen)."""
    config = config_in(tmp_path)
    await served(config, 2)
    await served(config, 2, register=False)  # this start compacts: a snapshot, then the log
    assert (config.state_dir / "events.snapshot").exists()
    await refused_with_a_ban_at_the_head(config, cursor)


@pytest.mark.parametrize("compacted", [False, True], ids=["no-snapshot", "after-a-snapshot"])
@pytest.mark.parametrize("cursor", [-1, 0])
async def test_a_record_whose_cursor_is_below_one_is_refused(
    tmp_path: Path, cursor: int, compacted: bool
) -> None:
    """Cursors start at 1: a record at the head of the log with a cursor below that
    was written by no server, and is refused naming its offset, not taken for one the
    snapshot (or, with none, the empty state) covers and skipped silently."""
    config = config_in(tmp_path)
    await served(config, 2)
    if compacted:
        await served(config, 2, register=False)
    await refused_with_a_ban_at_the_head(config, cursor)


async def test_a_start_with_freeze_puts_the_replayed_state_out_of_the_gcs_reach(
    tmp_path: Path,
) -> None:
    """``run_server(freeze=True)`` (messenger-server's start): the replayed state is in
    the permanent generation, which no collection walks; without it, it is not."""
    config = config_in(tmp_path)
    await served(config, 3)
    gc.unfreeze()
    try:
        for freeze in (False, True):
            async with run_server(config, Clock(), freeze=freeze) as running:
                state = running.service.state
                assert len(state.messages) == 3
                walked = any(thing is state.users for thing in gc.get_objects())
                assert walked is not freeze
                assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()
