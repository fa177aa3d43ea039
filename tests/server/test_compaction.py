"""Compaction on a real server: the log is rewritten as a snapshot while serving and
at start, and nothing anyone can read changes, across restarts and crashes (an
unfinished compaction file, a SIGKILL in the middle of one)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from server import service as service_module
from server.app import LOG_FILE, run_server
from server.config import Config
from server.domain.events import from_record, to_record
from server.domain.snapshot import dump
from server.domain.snapshot import load as load_snapshot
from server.domain.snapshot import snapshot as snapshot_events
from server.domain.state import State
from server.log import SNAPSHOT_SUFFIX, WRITING_SUFFIX, FileSnapshots, encode_record
from server.store import Snapshot
from tests.configs import LIMITS_OFF
from tests.server.extras_support import Clock, config_in, error_of, post, texts
from tests.wsclient import Peer, connected, user_device

COMPACTING = LOG_FILE + ".compacting"
SNAPSHOT_WRITING = Path(LOG_FILE).with_suffix(SNAPSHOT_SUFFIX + WRITING_SUFFIX).name


def log_records(config: Config) -> list[dict[str, Any]]:
    """The records of the log as it is now (a line still being written is left out)."""
    data = (config.state_dir / LOG_FILE).read_bytes()
    return [orjson.loads(line[9:]) for line in data.splitlines(keepends=True) if line[-1:] == b"\n"]


def stored_snapshot(config: Config) -> Snapshot | None:
    """The snapshot beside the log, if one was saved."""
    return FileSnapshots((config.state_dir / LOG_FILE).with_suffix(SNAPSHOT_SUFFIX)).read()


def last_cursor(config: Config) -> int:
    """The cursor of the newest event in the log (or the snapshot, for an empty log)."""
    records = log_records(config)
    if records:
        cursor: int = records[-1]["c"]
        return cursor
    snapshot = stored_snapshot(config)
    return 0 if snapshot is None else snapshot.cursor


def snapshot_cursor(config: Config) -> int | None:
    """The cursor the saved snapshot covers, if there is one."""
    snapshot = stored_snapshot(config)
    return None if snapshot is None else snapshot.cursor


async def whole_history(peer: Peer, chat: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["seq"] if messages else 0
        page = await peer.call("history", chat=chat, after=after, limit=100)
        messages += page["messages"]
        if not page["has_more"]:
            return messages


async def picture(url: str, tokens: dict[str, str]) -> dict[str, Any]:
    """Everything each user can read, through fresh connections logged in by token."""
    seen: dict[str, Any] = {}
    for name, token in tokens.items():
        async with connected(url) as peer:
            await peer.call("login", user=name, token=token)
            status = await peer.call("status")
            chats: dict[str, Any] = {}
            for chat in status["chats"]:
                history = await whole_history(peer, chat["id"])
                view: dict[str, Any] = {"history": history}
                view["comments"] = {
                    m["id"]: await peer.call("comments", message=m["id"], limit=100)
                    for m in history
                    if m["comments"]
                }
                if chat["kind"] == "group":
                    view["members"] = await peer.call("chat.members", chat=chat["id"])
                    if chat["owner"] == name:
                        view["requests"] = await peer.call("chat.requests", chat=chat["id"])
                chats[chat["id"]] = view
            seen[name] = {
                "status": status,
                "unread": await peer.call("unread"),
                "scheduled": await peer.call("scheduled"),
                "chats": chats,
            }
    return seen


async def next_message_in(peer: Peer, chat: str) -> dict[str, Any]:
    """The next message pushed to ``peer`` in ``chat`` (skipping other chats')."""
    while True:
        message: dict[str, Any] = (await peer.next_event("message"))["params"]["message"]
        if message["chat"] == chat:
            return message


@contextlib.asynccontextmanager
async def devices(url: str, *names: str) -> AsyncIterator[dict[str, Peer]]:
    """A registered, logged-in device for each name."""
    async with contextlib.AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(user_device(url, name)) for name in names}


async def build_state(url: str, clock: Clock) -> dict[str, Any]:
    """A bit of everything: chats of each kind, comments, read markers, a group with a
    request and a link, a file, a pending schedule, a report, a revoked device."""
    async with devices(url, "alice", "bob", "carol", "mallory") as peers:
        alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
        for n in range(5):
            await post(alice if n % 2 else bob, "general", f"general {n}")
        first = (await alice.call("history", chat="general"))["messages"][0]
        await carol.call("comment", message=first["id"], text="a comment")
        await alice.call("read", chat="general", seq=5)
        await bob.call("read", chat="general", seq=3)
        direct = (await alice.call("send", user="bob", text="psst", client_id="c-1"))["message"]
        await bob.call("send", user="alice", text="yes?")
        group = (await alice.call("chat.create", title="Team"))["chat"]["id"]
        await alice.call("chat.invite", chat=group, user="bob")
        link = (await alice.call("chat.link", chat=group))["link"]
        await carol.call("chat.join", link=link)
        await post(bob, group, "in the group")
        content = b"file content " * 5
        begun = await alice.call("upload.begin", name="f.txt", size=len(content))
        await alice.call(
            "upload.chunk", upload=begun["upload"], data=base64.b64encode(content).decode()
        )
        file = (await alice.call("upload.finish", upload=begun["upload"]))["file"]
        await alice.call("send", chat=group, text="the file", file=file["id"])
        await alice.call("send", chat=group, text="later", send_at=clock.now + 60_000)
        await bob.call("report", user="mallory", reason="spam")
        async with connected(url) as gone:
            await gone.login("carol")
            revoked = gone.token
            await gone.call("logout")
        tokens = {name: peer.token for name, peer in peers.items()}
    return {
        "tokens": tokens,
        "revoked": revoked,
        "direct": direct,
        "group": group,
        "link": link,
        "file": file,
        "content": content,
    }


async def churn_until_compacted(url: str, config: Config) -> None:
    """Log in and out (events a snapshot leaves out) until the housekeeping has
    compacted the log after everything that came before, churn included (after the
    last logout: a snapshot taken while a churn device was logged in holds it)."""
    async with connected(url) as peer:
        for _ in range(20):
            await peer.login("alice")
            await peer.call("logout")
        for _ in range(200):
            for _ in range(5):
                await peer.login("alice")
                await peer.call("logout")
            target = last_cursor(config)
            await asyncio.sleep(config.housekeeping_interval * 1.5)
            cursor = snapshot_cursor(config)
            if cursor is not None and cursor >= target:
                return
    raise AssertionError("the log was not compacted")


async def test_compaction_while_serving_loses_nothing(tmp_path: Path) -> None:
    """Compacted while serving, the log is a snapshot; every read is the same, restart or not."""
    clock = Clock()
    config = config_in(tmp_path, compact_bytes=2048, housekeeping_interval=0.05, report_threshold=2)
    async with run_server(config, clock) as running:
        built = await build_state(running.url, clock)
        tokens = built["tokens"]
        before = await picture(running.url, tokens)
        await churn_until_compacted(running.url, config)
        assert await picture(running.url, tokens) == before
        snapshot = stored_snapshot(config)
        assert snapshot is not None
        tail = [r.get("c") for r in log_records(config)]  # the log: only what followed
        assert tail == list(range(snapshot.cursor + 1, snapshot.cursor + 1 + len(tail)))
        saved = State()
        load_snapshot(snapshot.data, saved)
        live = running.service.state
        assert saved.cursor == snapshot.cursor
        # the churn left no trace: only the devices still logged in are in it
        assert saved.devices_by_token.keys() <= live.devices_by_token.keys()
        assert not (config.state_dir / COMPACTING).exists()
        async with connected(running.url) as alice:
            seen = (await alice.call("login", user="alice", token=tokens["alice"]))["cursor"]
    async with run_server(config, clock) as running:
        assert await picture(running.url, tokens) == before
        async with connected(running.url) as alice, connected(running.url) as bob:
            login = await alice.call("login", user="alice", token=tokens["alice"])
            assert login["cursor"] >= seen
            await bob.call("login", user="bob", token=tokens["bob"])
            await post(bob, "general", "after the restart")
            assert (await alice.next_event("message"))["params"]["cursor"] > seen
            repeat = await alice.call("send", user="bob", text="psst", client_id="c-1")
            assert repeat == {"message": built["direct"]}
            piece = await bob.call("download", file=built["file"]["id"])
            assert base64.b64decode(piece["data"]) == built["content"]
            await alice.call("report", user="mallory")  # the second reporter: a ban
            error = await error_of(alice, "login", user="carol", token=built["revoked"])
            assert error.code == -32001
            clock.advance(60)
            message = await next_message_in(bob, built["group"])
            assert message["text"] == "later"
        async with connected(running.url) as mallory:
            await mallory.call("login", user="mallory", token=tokens["mallory"])
            assert (await error_of(mallory, "send", chat="general", text="x")).code == -32005


async def test_read_markers_survive_a_start_from_a_compacted_log(tmp_path: Path) -> None:
    """A read marker past the reader's own last message stays put when a snapshot is replayed."""
    config = config_in(tmp_path)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        await post(alice, "general", "from alice")
        await post(bob, "general", "from bob")
        await alice.call("read", chat="general", seq=2)
        token = alice.token
    for _ in range(2):  # the first start compacts the log, the second replays the snapshot
        async with run_server(config, Clock()) as running, connected(running.url) as alice:
            await alice.call("login", user="alice", token=token)
            general = (await alice.call("status"))["chats"][0]
            assert (general["read_seq"], general["unread"]) == (2, 0)
            assert await alice.call("unread") == {"chats": []}
    assert snapshot_cursor(config) is not None


async def test_client_id_of_a_scheduled_send_survives_compaction(tmp_path: Path) -> None:
    """A scheduled send's client_id, repeated after compaction and posting, gives the message."""
    clock = Clock()
    config = config_in(tmp_path)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        params: dict[str, Any] = {
            "chat": "general",
            "text": "later",
            "send_at": clock.now + 10_000,
            "client_id": "sched-1",
        }
        first = await alice.call("send", **params)
        assert await alice.call("send", **params) == first
        token = alice.token
    async with run_server(config, clock):  # compacts the log at start
        pass
    assert snapshot_cursor(config) is not None
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        assert await alice.call("send", **params) == first
        clock.advance(10)
        posted = (await alice.next_event("message"))["params"]["message"]
        assert await alice.call("send", **params) == {"message": posted}


async def stopped_with_state_built(
    tmp_path: Path,
) -> tuple[Config, Clock, dict[str, Any], dict[str, Any]]:
    """A stopped server's config and clock, with ``build_state`` in its state folder;
    what was built, and the ``picture`` of it."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=2)
    async with run_server(config, clock) as running:
        built = await build_state(running.url, clock)
        before = await picture(running.url, built["tokens"])
    return config, clock, built, before


async def test_unfinished_compaction_file_is_removed_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A partial events.log.compacting or events.snapshot.writing beside an intact log
    is removed at start, unread, with a warning."""
    config, clock, built, before = await stopped_with_state_built(tmp_path)
    whole = (config.state_dir / LOG_FILE).read_bytes()
    aside = config.state_dir / COMPACTING
    aside.write_bytes(whole[: len(whole) // 2])  # a log cut short by a crash
    unfinished = config.state_dir / SNAPSHOT_WRITING
    unfinished.write_bytes(b"messenger-snapshot 99999 1000000 00000000\n{")  # and a snapshot
    with caplog.at_level(logging.WARNING, logger="messenger.server"):
        async with run_server(config, clock) as running:
            assert not aside.exists()
            assert not unfinished.exists()
            assert await picture(running.url, built["tokens"]) == before
    assert "unfinished compaction" in caplog.text
    assert "unfinished snapshot" in caplog.text
    async with run_server(config, clock) as running:
        assert await picture(running.url, built["tokens"]) == before


async def test_a_crash_between_the_snapshot_and_the_cut_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    """The snapshot saved, the log not cut yet (a crash between the two): the records
    the snapshot covers are skipped, and every read is the same."""
    config, clock, built, before = await stopped_with_state_built(tmp_path)
    uncut = (config.state_dir / LOG_FILE).read_bytes()
    async with run_server(config, clock):  # compacts at start: a snapshot, an empty log
        pass
    snapshot = stored_snapshot(config)
    assert snapshot is not None
    assert snapshot.cursor == orjson.loads(uncut.splitlines()[-1][9:])["c"]
    (config.state_dir / LOG_FILE).write_bytes(uncut)  # as if the cut never happened
    async with run_server(config, clock) as running:
        assert await picture(running.url, built["tokens"]) == before
        async with connected(running.url) as bob:
            await bob.call("login", user="bob", token=built["tokens"]["bob"])
            sent = await post(bob, "general", "after")
            assert sent["seq"] == 6


async def test_after_a_crash_between_the_snapshot_and_the_cut_deleted_text_leaves_the_disk(
    tmp_path: Path,
) -> None:
    """The snapshot saved without a deleted message, the log not cut (a crash between
    the two): the next start cuts it, so the text leaves the disk at once on a restart
    (protocol.md), rather than staying in the records the snapshot covers until the
    log grows past the compaction threshold."""
    config = config_in(tmp_path)
    clock = Clock()
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        secret = await post(alice, "general", "a secret said by mistake")
        await post(alice, "general", "kept")
        await alice.call("delete", message=secret["id"])
    uncut = (config.state_dir / LOG_FILE).read_bytes()
    assert b"a secret said by mistake" in uncut
    async with run_server(config, clock):  # compacts at start: the secret is not in it
        pass
    (config.state_dir / LOG_FILE).write_bytes(uncut)  # as if the cut never happened
    async with run_server(config, clock) as running, user_device(running.url, "bob") as bob:
        for path in config.state_dir.rglob("events.*"):
            assert b"a secret said by mistake" not in path.read_bytes(), path
        history = await bob.call("history", chat="general")
        assert [m["text"] for m in history["messages"]] == ["kept"]


def legacy_log(config: Config) -> bytes:
    """The log as compaction wrote it before snapshots were kept apart: the snapshot's
    events, without cursors, at the head, then the events after it."""
    state = State(config.history_size, config.rate_period * 1000, config.quotas)
    for record in log_records(config):
        cursor = record.pop("c")
        state.apply(from_record(record))
        assert state.cursor == cursor
    head = [to_record(event) for event in snapshot_events(state)]
    return b"".join(encode_record(record) for record in head)


async def test_a_log_with_its_snapshot_at_the_head_still_starts(tmp_path: Path) -> None:
    """A state folder from before snapshots were kept apart (``*Restored`` records at the
    head of the log) starts with every read the same, and its next compaction moves
    the snapshot out of the log."""
    config, clock, built, before = await stopped_with_state_built(tmp_path)
    path = config.state_dir / LOG_FILE
    old = legacy_log(config)
    path.write_bytes(old)
    assert stored_snapshot(config) is None
    assert b"ChatRestored" in old
    assert b'"c":' not in old
    async with run_server(config, clock) as running:
        assert await picture(running.url, built["tokens"]) == before
        async with connected(running.url) as bob:
            await bob.call("login", user="bob", token=built["tokens"]["bob"])
            await post(bob, "general", "after")
    assert stored_snapshot(config) is None  # nothing compacted it yet: still the old head
    assert b"ChatRestored" in path.read_bytes()
    async with run_server(config, clock) as running:  # this start compacts
        assert stored_snapshot(config) is not None
        assert all("c" in record for record in log_records(config))
        async with connected(running.url) as bob:
            await bob.call("login", user="bob", token=built["tokens"]["bob"])
            assert texts(await whole_history(bob, "general"))[-1] == "after"


# -- a SIGKILL in the middle of a compaction --------------------------------------

SERVE = f"""
import asyncio, sys
from pathlib import Path
from server.cli import serve
from server import service as service_module
from server.config import Config
asyncio.run(serve(Config(
    port=0, state_dir=Path(sys.argv[1]), scrypt_n=16, rate_limit=10**9,
    compact_bytes=int(sys.argv[2]), housekeeping_interval=0.005, **{LIMITS_OFF!r},
)))
"""


class KillOnCompaction(threading.Thread):
    """SIGKILLs ``pid`` the moment the compaction file shows up (a thread, so that
    the test's event loop, busy with replies, cannot make it late)."""

    def __init__(self, pid: int, aside: Path) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.aside = aside
        self.stop = threading.Event()
        self.killed = False

    def run(self) -> None:
        while not self.stop.is_set():
            if self.aside.exists():
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                return
            self.stop.wait(0.0002)


async def test_sigkill_during_compaction_keeps_every_acknowledged_send(tmp_path: Path) -> None:
    """A server SIGKILLed while it writes a snapshot keeps every send it acknowledged."""
    state_dir = tmp_path / "state"
    compact_bytes = 2 * 2**20
    text = "x" * 4000
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        str(state_dir),
        str(compact_bytes),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    killer = KillOnCompaction(process.pid, state_dir / SNAPSHOT_WRITING)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        url = line.decode().split()[-1]
        killer.start()
        async with user_device(url, "alice") as alice:
            calls = [
                asyncio.ensure_future(alice.call("send", chat="general", text=f"m{n} {text}"))
                for n in range(1500)
            ]
            everything = asyncio.gather(*calls, return_exceptions=True)
            ends: list[asyncio.Future[Any]] = [alice.reader, everything]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(alice.reader, 10)  # the kill broke the connection
            for call in calls:
                call.cancel()
            results = await everything
            token = alice.token
    finally:
        killer.stop.set()
        killer.join()
        if process.returncode is None:
            process.kill()
        await process.communicate()
    assert killer.killed
    assert process.returncode == -signal.SIGKILL
    acknowledged = [r["message"] for r in results if isinstance(r, dict)]
    config = config_in(tmp_path)
    async with run_server(config) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        kept = await whole_history(alice, "general")
    assert not (state_dir / COMPACTING).exists()
    assert not (state_dir / SNAPSHOT_WRITING).exists()
    assert {m["id"] for m in acknowledged} <= {m["id"] for m in kept}
    # One connection's sends are decided in order: what is kept is a prefix of them.
    assert [t.split()[0] for t in texts(kept)] == [f"m{n}" for n in range(len(kept))]
    assert [m["seq"] for m in kept] == list(range(1, len(kept) + 1))


async def test_a_compaction_reads_in_slices_and_holds_requests_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the snapshot is read, the event loop turns between slices (other tasks
    run) and requests wait instead of changing the state under it; they are all
    answered after, and the compacted log replays to the same history."""
    config = config_in(tmp_path, rate_limit=100_000, message_ttl=0)
    async with run_server(config) as running, user_device(running.url, "alice") as alice:
        await asyncio.gather(*(post(alice, "general", f"m{i}") for i in range(2500)))
        ticks = 0
        ticks_when_written: list[int] = []
        store = running.service.log
        write = store.compact

        def counted(snapshot: Snapshot) -> asyncio.Future[None]:
            ticks_when_written.append(ticks)
            return write(snapshot)

        monkeypatch.setattr(store, "compact", counted)
        compacting = asyncio.create_task(running.service.compact())

        async def tick() -> None:
            nonlocal ticks
            while not compacting.done():
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(tick())
        sends = [asyncio.create_task(post(alice, "general", f"late{i}")) for i in range(20)]
        await compacting
        await ticking
        assert ticks_when_written[0] > 0  # the loop ran other work while the snapshot was read
        posted = await asyncio.gather(*sends)
        assert [m["seq"] for m in posted] == list(range(2501, 2521))
        before = await whole_history(alice, "general")
    async with run_server(config) as running, user_device(running.url, "alice", False) as again:
        assert await whole_history(again, "general") == before


async def test_a_compaction_whose_state_was_replaced_while_read_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is read in slices with the loop free between them; a cluster node
    may re-read the log meanwhile and replace its state. What was read is then not
    the state at any cursor: the compaction must give up, not save the old state's
    data under the new state's cursor (events lost, or phantoms kept)."""
    config = config_in(tmp_path)
    async with run_server(config, Clock()) as running, user_device(running.url, "alice") as alice:
        await post(alice, "general", "kept")
        service = running.service

        def dump_then_reread(state: State) -> Any:
            pieces = dump(state)
            yield next(pieces)
            service.state = service.new_state()  # a re-read, between two slices
            yield from pieces

        monkeypatch.setattr(service_module, "dump", dump_then_reread)
        await service.compact()
    snapshot = (config.state_dir / LOG_FILE).with_suffix(SNAPSHOT_SUFFIX)
    assert not snapshot.exists()  # before: a snapshot of alice's state at cursor 0
    assert "kept" in "".join(str(record) for record in log_records(config))
