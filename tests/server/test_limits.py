"""Bounds a careful server keeps: replies that fit in a frame, upload slots that
cannot be raced past, files deleted once nothing carries them, resumes that leave
out what expired, and HTTP methods other than GET."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson

from server.app import run_server
from tests.server.extras_support import Clock, config_in, error_of, http_get, post
from tests.wsclient import connected, user_device

BIG = "\u00e9" * 4096  # 4096 characters, 8 KiB of UTF-8: a reply of 100 of them would not fit


async def test_unread_lists_a_chat_that_did_not_fit_with_has_more(tmp_path: Path) -> None:
    """When unread's byte budget runs out, the chats after it are listed empty with has_more."""
    config = config_in(tmp_path, message_ttl=0)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        direct = (await alice.call("send", user="bob", text="first"))["message"]["chat"]
        for _ in range(45):
            await post(alice, "general", BIG)
            await post(alice, direct, BIG)
        reply = await bob.call("unread")
        assert len(orjson.dumps(reply)) < 2**20
        by_chat = {chat["chat"]: chat for chat in reply["chats"]}
        assert set(by_chat) == {"general", direct}
        assert all(chat["has_more"] for chat in by_chat.values())
        assert sum(len(chat["messages"]) for chat in by_chat.values()) < 91


async def test_comments_and_scheduled_replies_fit_in_a_frame(tmp_path: Path) -> None:
    """comments and scheduled stop at the byte budget and say has_more."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        message = await post(alice, "general", "hi")
        for _ in range(100):
            await alice.call("comment", message=message["id"], text=BIG)
            await alice.call("send", chat="general", text=BIG, send_at=clock.now + 60_000)
        comments = await alice.call("comments", message=message["id"], limit=100)
        scheduled = await alice.call("scheduled")
        for reply, key in ((comments, "comments"), (scheduled, "scheduled")):
            assert len(orjson.dumps(reply)) < 2**20
            assert reply["has_more"] is True
            assert 0 < len(reply[key]) < 100


async def test_pipelined_upload_begins_cannot_pass_the_per_user_limit(tmp_path: Path) -> None:
    """Six upload.begin in one batch: four get a slot, two are refused with -32002."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        batch = [
            {
                "jsonrpc": "2.0",
                "method": "upload.begin",
                "params": {"name": "f", "size": 1},
                "id": n,
            }
            for n in range(6)
        ]
        replies = await alice.send_raw(orjson.dumps(batch).decode())
        assert sorted("result" in reply for reply in replies) == [False] * 2 + [True] * 4
        assert {reply["error"]["code"] for reply in replies if "error" in reply} == {-32002}


async def test_a_file_nothing_carries_is_deleted_after_a_lifetime(tmp_path: Path) -> None:
    """Once its message expired and a lifetime (at least an hour) passed, the file and its
    bytes are gone; a file still carried by a pending schedule stays."""
    clock = Clock()
    config = config_in(tmp_path, message_ttl=60, housekeeping_interval=0.02)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        stored = []
        for content in (b"posted", b"scheduled"):
            begun = await alice.call("upload.begin", name="a.txt", size=len(content))
            data = base64.b64encode(content).decode()
            await alice.call("upload.chunk", upload=begun["upload"], data=data)
            stored.append((await alice.call("upload.finish", upload=begun["upload"]))["file"])
        posted, carried = stored
        await alice.call("send", chat="general", text="", file=posted["id"])
        await alice.call(
            "send", chat="general", text="", file=carried["id"], send_at=clock.now + 7_200_000
        )
        blob = config.state_dir / "files" / posted["sha256"]
        assert blob.exists()
        clock.advance(3601)
        for _ in range(200):
            if not blob.exists():
                break
            await asyncio.sleep(0.01)
        assert not blob.exists()
        assert (await error_of(alice, "download", file=posted["id"])).code == -32003
        assert (await alice.call("download", file=carried["id"]))["eof"] is True
        assert (config.state_dir / "files" / carried["sha256"]).exists()


async def test_resume_leaves_out_comments_on_expired_messages(tmp_path: Path) -> None:
    """A device resuming after a message expired is sent neither it nor its comments."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path, message_ttl=60), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        since = bob.cursor
        token = bob.token
        await bob.close()
        message = await post(alice, "general", "short-lived")
        await alice.call("comment", message=message["id"], text="on it")
        clock.advance(61)
        async with connected(running.url) as again:
            result = await again.call("login", user="bob", token=token, since=since)
            assert result["resumed"] is True
            await again.no_event()


async def test_http_methods_other_than_get_are_refused(tmp_path: Path) -> None:
    """POST and HEAD are answered 405 with Allow: GET."""
    async with run_server(config_in(tmp_path), Clock()) as running:
        for method in ("POST", "HEAD"):
            reply = await http_get(running, "/healthz", method=method)
            assert reply.status == 405
            assert reply.headers["allow"] == "GET"


async def test_expired_messages_leave_the_disk_on_a_quiet_server(tmp_path: Path) -> None:
    """Without any growth of the log, an expired message's text is compacted away."""
    clock = Clock()
    config = config_in(
        tmp_path, message_ttl=60, housekeeping_interval=0.02, expired_compaction_delay=30
    )
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        await post(alice, "general", "ephemeral words")
        await post(alice, "general", "more words")
        log = config.state_dir / "events.log"
        clock.advance(61)
        for _ in range(200):
            if "ephemeral words" not in log.read_text():
                break
            await asyncio.sleep(0.01)
        assert "ephemeral words" not in log.read_text()
        assert (await alice.call("status"))["user"] == "alice"


async def test_a_batchs_replies_fit_in_one_frame(tmp_path: Path) -> None:
    """Big results that would not fit together give way to -32006; the frame stays < 1 MiB."""
    config = config_in(tmp_path, message_ttl=0)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        for _ in range(40):
            await post(alice, "general", BIG)
        batch = [
            {
                "jsonrpc": "2.0",
                "method": "history",
                "params": {"chat": "general", "limit": 40},
                "id": n,
            }
            for n in range(5)
        ] + [{"jsonrpc": "2.0", "method": "status", "id": "small"}]
        frame = orjson.dumps(batch).decode()
        await alice.connection.send(frame)
        replies = await asyncio.wait_for(alice.raw.get(), 10)
        assert len(orjson.dumps(replies)) < 2**20
        by_id = {reply["id"]: reply for reply in replies}
        assert "result" in by_id["small"]
        histories = [by_id[n] for n in range(5)]  # ~300 KB each: three fit, five do not
        assert 1 <= sum("result" in reply for reply in histories) < 5
        assert {r["error"]["code"] for r in histories if "error" in r} == {-32006}
        too_many = [{"jsonrpc": "2.0", "method": "status", "id": n} for n in range(101)]
        refused = await alice.send_raw(orjson.dumps(too_many).decode())
        assert refused["error"]["code"] == -32600


async def test_a_chunk_queued_behind_an_abort_finds_the_upload_gone(tmp_path: Path) -> None:
    """chunk, abort, chunk in one batch: the second chunk is -32003 and leaves no temp file."""
    config = config_in(tmp_path)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        upload_id = (await alice.call("upload.begin", name="f", size=100))["upload"]
        data = base64.b64encode(b"x" * 10).decode()
        batch = [
            {"jsonrpc": "2.0", "method": method, "params": params, "id": n}
            for n, (method, params) in enumerate(
                [
                    ("upload.chunk", {"upload": upload_id, "data": data}),
                    ("upload.abort", {"upload": upload_id}),
                    ("upload.chunk", {"upload": upload_id, "data": data}),
                    ("upload.finish", {"upload": upload_id}),
                ]
            )
        ]
        replies = {r["id"]: r for r in await alice.send_raw(orjson.dumps(batch).decode())}
        assert replies[0]["result"] == {"received": 10}
        assert replies[1]["result"] == {}
        assert replies[2]["error"]["code"] == replies[3]["error"]["code"] == -32003
        await asyncio.sleep(0.05)
        assert list((config.state_dir / "uploads").iterdir()) == []


async def test_a_private_comment_id_tells_a_non_member_nothing(tmp_path: Path) -> None:
    """Commenting on the id of a comment in someone else's chat is -32003, like any unknown id."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "eve") as eve,
    ):
        direct = (await alice.call("send", user="bob", text="private"))["message"]
        comment = (await bob.call("comment", message=direct["id"], text="ok"))["comment"]
        error = await error_of(eve, "comment", message=comment["id"], text="?")
        unknown = await error_of(eve, "comment", message="f" * 16, text="?")
        assert error.code == unknown.code == -32003
        assert (await error_of(bob, "comment", message=comment["id"], text="?")).code == -32602


async def test_a_dropped_file_stays_dropped_after_a_restart(tmp_path: Path) -> None:
    """Dropping an unused file is an event: a restart does not bring the file back."""
    clock = Clock()
    config = config_in(tmp_path, housekeeping_interval=0.02)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        begun = await alice.call("upload.begin", name="a.txt", size=3)
        await alice.call("upload.chunk", upload=begun["upload"], data="YWJj")
        stored = (await alice.call("upload.finish", upload=begun["upload"]))["file"]
        clock.advance(3601)
        for _ in range(200):
            if stored["id"] not in running.service.state.files:
                break
            await asyncio.sleep(0.01)
        assert stored["id"] not in running.service.state.files
        token = alice.token
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        error = await error_of(alice, "send", chat="general", text="", file=stored["id"])
        assert error.code == -32003
