"""Edges that a mutation run found unpinned: each test fails when one comparison,
bound or check of the server is off by one or dropped (bench/mutation.py). All of
them go through a real server on the wire, so they outlive changes to its insides."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from server.app import LOG_FILE, run_server
from server.auth import LoginThrottle
from server.cli import parse_args
from server.log import LogCorrupted, encode_record
from tests.server.extras_support import Clock, chat_of, config_in, error_of, post
from tests.server.test_chats import login_collecting
from tests.server.test_files import files_config, shared_group, upload
from tests.server.test_protocol import exchange
from tests.wsclient import Peer, connected, user_device

DAY_MS = 86_400_000

# -- device tokens -------------------------------------------------------------------


def _altered(token: str) -> dict[str, str]:
    half = len(token) // 2
    return {
        "last character changed": token[:-1] + ("A" if token[-1] != "A" else "B"),
        "second half changed": token[:half] + "x" * (len(token) - half),
        "a prefix of it": token[:-1],
        "it and one more character": token + "A",
    }


async def test_a_token_that_only_begins_like_an_issued_one_is_refused(tmp_path: Path) -> None:
    """A token equal to an issued one in its first characters but not all of them is -32001."""
    async with run_server(config_in(tmp_path), Clock()) as running:
        async with user_device(running.url, "alice") as alice:
            token = alice.token
        assert token is not None
        async with connected(running.url) as device:
            for what, near in _altered(token).items():
                error = await error_of(device, "login", user="alice", token=near)
                assert error.code == -32001, what
            assert (await device.call("login", user="alice", token=token))["user"] == "alice"


# -- a damaged log -------------------------------------------------------------------


@pytest.mark.parametrize(("shift", "found"), [(1, 6), (-1, 4)], ids=["skipped", "repeated"])
async def test_a_cursor_out_of_sequence_stops_the_start_naming_file_and_offset(
    tmp_path: Path, shift: int, found: int
) -> None:
    """A log whose cursors skip or repeat (4 then 6, or 4 then 4) refuses to start with
    LogCorrupted naming the file, the record's byte offset and both cursors."""
    config = config_in(tmp_path)
    async with run_server(config, Clock()) as running, user_device(running.url, "alice") as alice:
        for n in range(4):
            await post(alice, "general", f"m{n}")
    path = config.state_dir / LOG_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    records = [orjson.loads(line[9:]) for line in lines]
    cursors = [record["c"] for record in records]  # and the UserSeen of alice leaving
    assert cursors == list(range(1, len(records) + 1))
    assert len(records) >= 6
    for record in records[4:]:
        record["c"] += shift
    path.write_bytes(b"".join(encode_record(record) for record in records))
    offset = sum(len(line) for line in lines[:4])
    with pytest.raises(LogCorrupted) as caught:
        async with run_server(config, Clock()):
            pass
    message = str(caught.value)
    assert str(path) in message
    assert f"byte offset {offset}" in message
    assert f"expected cursor 5, but got {found}" in message


# -- resume ----------------------------------------------------------------------------


async def test_resume_at_the_floor_and_above_resumes_and_one_below_it_does_not(
    tmp_path: Path,
) -> None:
    """Holding the last 3 events (floor = the newest one gone): since = floor and floor + 1
    resume with exactly the later events; floor - 1 is resumed: false and pushes nothing."""
    async with (
        run_server(config_in(tmp_path, resume_window=3), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        cursors = []
        for n in range(5):
            await post(alice, "general", f"m{n}")
            cursors.append((await alice.next_event("message"))["params"]["cursor"])
        floor = cursors[1]  # cursors[2:] are held
        assert cursors == list(range(floor - 1, floor + 4))

        async def resume(since: int) -> tuple[bool, list[int]]:
            async with connect(running.url) as connection:
                pushed, result = await login_collecting(
                    connection, user="alice", token=alice.token, since=since
                )
            return result["resumed"], [event["params"]["cursor"] for event in pushed]

        assert await resume(floor) == (True, cursors[2:])
        assert await resume(floor + 1) == (True, cursors[3:])
        assert await resume(floor - 1) == (False, [])
        assert await resume(cursors[-1]) == (True, [])
        assert await resume(cursors[-1] + 1) == (False, [])


async def test_a_resume_over_its_byte_bound_is_refused_and_one_at_it_is_pushed(
    tmp_path: Path,
) -> None:
    """Missed frames of exactly half the send buffer limit are resumed; one frame more is
    resumed: false with nothing pushed (the device refetches instead of being flooded)."""
    bound = 1500
    config = config_in(tmp_path, send_buffer_limit=2 * bound)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        frames: list[dict[str, Any]] = []
        for n in range(3):
            await post(alice, "general", f"short {n}")
            frames.append(await alice.next_event("message"))
        sizes = [len(orjson.dumps(frame)) for frame in frames]
        # The fourth frame is the third's with a longer text: the last three sum to ``bound``.
        fill = bound - sizes[1] - sizes[2] - (sizes[2] - len("short 2"))
        await post(alice, "general", "x" * fill)
        frames.append(await alice.next_event("message"))
        sizes.append(len(orjson.dumps(frames[-1])))
        assert sum(sizes[1:]) == bound

        cursors = [frame["params"]["cursor"] for frame in frames]
        for since, resumed, pushed in [(cursors[0], True, frames[1:]), (cursors[0] - 1, False, [])]:
            async with connect(running.url) as connection:
                got, result = await login_collecting(
                    connection, user="alice", token=alice.token, since=since
                )
            assert (result["resumed"], got) == (resumed, pushed)


# -- JSON-RPC ------------------------------------------------------------------------


async def test_a_request_with_a_null_id_is_answered_with_a_null_id(tmp_path: Path) -> None:
    """ "id": null is a request, not a notification: its result and its error both come
    back with "id": null."""
    async with run_server(config_in(tmp_path), Clock()) as running, connected(running.url) as peer:
        request = {"jsonrpc": "2.0", "method": "register", "id": None}
        registered = await exchange(
            peer, {**request, "params": {"user": "a", "password": "pw345678"}}
        )
        assert registered == {"jsonrpc": "2.0", "result": {"user": "a"}, "id": None}
        refused = await exchange(peer, {"jsonrpc": "2.0", "method": "status", "id": None})
        assert (refused["id"], refused["error"]["code"]) == (None, -32001)


# -- groups ------------------------------------------------------------------------


async def test_a_member_joining_a_group_with_messages_starts_with_none_unread(
    tmp_path: Path,
) -> None:
    """Invited or approved into a group that has messages, a member has 0 unread and the
    read marker at the last message; later messages count."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        group = (await alice.call("chat.create", title="team"))["chat"]["id"]
        for n in range(3):
            await post(alice, group, f"before {n}")
        await alice.call("chat.invite", chat=group, user="bob")
        link = (await alice.call("chat.link", chat=group))["link"]
        await carol.call("chat.join", link=link)
        await alice.call("chat.approve", chat=group, user="carol")
        for member in (bob, carol):
            joined = (await member.next_event("chat.joined"))["params"]["chat"]
            assert (joined["unread"], joined["read_seq"], joined["last_seq"]) == (0, 3, 3)
            assert chat_of(await member.call("status"), group)["unread"] == 0
            assert (await member.call("unread"))["chats"] == []
        await post(alice, group, "after")
        for member in (bob, carol):
            assert chat_of(await member.call("status"), group)["unread"] == 1


# -- expiry ------------------------------------------------------------------------


async def test_an_expired_messages_comments_are_forgotten(tmp_path: Path) -> None:
    """Once a message expires its comments are gone too: their ids are -32003 everywhere,
    not "a comment", and commenting on the message is -32003."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path, message_ttl=60), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        doomed = await post(alice, "general", "doomed")
        comment = (await alice.call("comment", message=doomed["id"], text="on it"))["comment"]
        assert (await error_of(alice, "comment", message=comment["id"], text="x")).code == -32602
        clock.advance(60)  # each read below must expire it by itself: none came before
        assert (await error_of(alice, "comments", message=doomed["id"])).code == -32003
        clock.advance(60)
        doomed = await post(alice, "general", "doomed again")
        comment = (await alice.call("comment", message=doomed["id"], text="on it"))["comment"]
        clock.advance(60)
        assert (await error_of(alice, "comment", message=comment["id"], text="x")).code == -32003
        assert (await error_of(alice, "comment", message=doomed["id"], text="x")).code == -32003
        assert (await error_of(alice, "comments", message=comment["id"])).code == -32003


# -- scheduled messages ---------------------------------------------------------------


async def schedule(peer: Peer, send_at: int, text: str = "later") -> dict[str, Any]:
    scheduled: dict[str, Any] = (
        await peer.call("send", chat="general", text=text, send_at=send_at)
    )["scheduled"]
    return scheduled


async def test_a_hundred_pending_schedules_are_accepted_and_the_next_refused(
    tmp_path: Path,
) -> None:
    """A user may have exactly 100 scheduled messages pending: the 101st is -32602; once
    one is cancelled there is room for one more."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        pending = [await schedule(alice, clock.now + 60_000 + n, f"s{n}") for n in range(100)]
        error = await error_of(
            alice, "send", chat="general", text="one more", send_at=clock.now + 1
        )
        assert error.code == -32602
        assert len((await alice.call("scheduled"))["scheduled"]) == 100
        await alice.call("cancel", id=pending[0]["id"])
        await schedule(alice, clock.now + 60_000, "room again")


async def test_send_at_up_to_366_days_ahead_is_accepted_and_beyond_it_refused(
    tmp_path: Path,
) -> None:
    """send_at exactly 366 days ahead is scheduled; 1 ms later is -32602."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        far = await schedule(alice, clock.now + 366 * DAY_MS)
        assert far["send_at"] == clock.now + 366 * DAY_MS
        error = await error_of(
            alice, "send", chat="general", text="too far", send_at=clock.now + 366 * DAY_MS + 1
        )
        assert error.code == -32602
        assert len((await alice.call("scheduled"))["scheduled"]) == 1


async def test_a_schedule_due_the_moment_a_ban_ends_is_posted(tmp_path: Path) -> None:
    """A ban is over at its until: a message scheduled for exactly then is posted, not
    cancelled (one due a millisecond earlier is cancelled)."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=1, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "mallory") as mallory,
    ):
        until = clock.now + 100_000  # the ban's end, once alice reports at this time
        early = await schedule(mallory, until - 1, "early")
        await schedule(mallory, until, "on time")
        await alice.call("report", user="mallory")
        assert (await mallory.next_event("banned"))["params"]["until"] == until
        clock.now = until - 1
        assert (await mallory.next_event("scheduled.cancelled"))["params"]["id"] == early["id"]
        clock.now = until
        posted = (await alice.next_event("message"))["params"]["message"]
        assert (posted["author"], posted["text"]) == ("mallory", "on time")


async def test_each_ban_is_logged_for_the_operator_with_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ban is said at INFO, naming the user and when it ends, once it is durable."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=1, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "mallory") as mallory,
    ):
        await post(mallory, "general", "spam")
        with caplog.at_level(logging.INFO, logger="messenger.server"):
            await alice.call("report", user="mallory")
    assert f"user mallory banned until {clock.now + 100_000}" in caplog.messages


# -- remembered client_ids, compaction of a quiet log ----------------------------------


async def test_a_device_remembers_exactly_its_last_1000_client_ids(tmp_path: Path) -> None:
    """After 1001 sends with client_ids, the first is forgotten (a repeat posts anew)
    and the second is still remembered (a repeat answers the first message)."""
    async with (
        run_server(config_in(tmp_path, message_ttl=0), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        sent = []
        for start in range(0, 1001, 100):  # batches of 100 requests, one frame each
            batch = [
                {
                    "jsonrpc": "2.0",
                    "method": "send",
                    "params": {"chat": "general", "text": f"m{n}", "client_id": f"k{n}"},
                    "id": n,
                }
                for n in range(start, min(start + 100, 1001))
            ]
            replies = await exchange(alice, batch)
            sent += [reply["result"]["message"] for reply in sorted(replies, key=lambda r: r["id"])]
        again = await alice.call("send", chat="general", text="m1", client_id="k1")
        assert again["message"] == sent[1]
        anew = await alice.call("send", chat="general", text="m0", client_id="k0")
        assert anew["message"]["seq"] == 1002


async def test_a_quiet_log_with_nothing_expired_is_not_rewritten(tmp_path: Path) -> None:
    """Housekeeping compacts a quiet log only once messages expired: with none, the log
    stays as appended (each record with its cursor, no snapshot at its head)."""
    config = config_in(tmp_path, housekeeping_interval=0.01, expired_compaction_delay=0)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        await post(alice, "general", "lasting")
        await asyncio.sleep(0.2)  # twenty housekeeping rounds
    lines = (config.state_dir / LOG_FILE).read_bytes().splitlines()
    cursors = [orjson.loads(line[9:]).get("c") for line in lines]
    assert cursors == list(range(1, len(lines) + 1))  # (the last: alice's UserSeen)
    assert len(lines) >= 3


# -- files -------------------------------------------------------------------------


async def test_a_file_stays_visible_while_any_message_carrying_it_lives(tmp_path: Path) -> None:
    """A file sent twice to a chat stays downloadable by its members when the first of the
    two messages expires, and no longer once the second has."""
    clock = Clock()
    async with (
        run_server(files_config(tmp_path, message_ttl=60), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        file = await upload(alice, b"twice", "a.txt", "text/plain")
        group = await shared_group(alice, "bob")
        await alice.call("send", chat=group, text="", file=file["id"])
        clock.advance(30)
        await alice.call("send", chat=group, text="", file=file["id"])
        clock.advance(31)  # the first has expired, the second has not
        assert (await bob.call("download", file=file["id"]))["size"] == len(b"twice")
        clock.advance(30)
        assert (await error_of(bob, "download", file=file["id"])).code == -32003


async def test_a_file_nothing_carries_is_dropped_exactly_a_lifetime_after_its_upload(
    tmp_path: Path,
) -> None:
    """A stored file no message carries is kept until an hour (the minimum lifetime) after
    its upload, 1 ms less is not enough, and is dropped at that hour."""
    clock = Clock()
    config = files_config(tmp_path, message_ttl=60, housekeeping_interval=0.01)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        file = await upload(alice, b"unsent", "a.txt", "text/plain")
        uploaded = clock.now
        clock.now = uploaded + 3_600_000 - 1
        await asyncio.sleep(0.1)  # ten housekeeping rounds
        assert (await alice.call("download", file=file["id"]))["eof"] is True
        clock.now = uploaded + 3_600_000
        blob = config.state_dir / "files" / file["sha256"]
        for _ in range(500):
            if not blob.exists():
                break
            await asyncio.sleep(0.01)
        assert not blob.exists()
        assert (await error_of(alice, "download", file=file["id"])).code == -32003


# -- rate limit ----------------------------------------------------------------------


async def test_a_scheduled_send_counts_when_made_and_not_again_when_posted(
    tmp_path: Path,
) -> None:
    """With a limit of 2, a scheduled send to the general chat uses one of them at once;
    when it is posted in a later window it does not count there."""
    clock = Clock()  # START is a multiple of the period: a window starts now
    async with (
        run_server(config_in(tmp_path, rate_limit=2, rate_period=60), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        await schedule(alice, clock.now + 61_000)
        await post(alice, "general", "now")
        assert (await error_of(alice, "send", chat="general", text="over")).code == -32004
        clock.advance(61)
        while (await alice.next_event("message"))["params"]["message"]["text"] != "later":
            pass  # until the scheduled one is posted, in the next window
        await post(alice, "general", "first of the new window")
        await post(alice, "general", "second of the new window")
        assert (await error_of(alice, "send", chat="general", text="over")).code == -32004


async def test_schedules_left_after_many_cancels_are_posted_in_send_at_order(
    tmp_path: Path,
) -> None:
    """100 messages scheduled latest first, the 83 latest cancelled (the pending index is
    purged of them on the way): the 17 left are posted in send_at order."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        pending = [
            await schedule(alice, clock.now + (1000 - n) * 1000, f"s{n}") for n in range(100)
        ]
        for cancelled in pending[:83]:
            await alice.call("cancel", id=cancelled["id"])
        clock.advance(1000)
        posted = [(await alice.next_event("message"))["params"]["message"] for _ in range(17)]
        assert [message["text"] for message in posted] == [f"s{n}" for n in range(99, 82, -1)]


# -- restarts ------------------------------------------------------------------------


async def test_a_direct_chat_is_the_same_chat_after_a_start_from_a_snapshot(
    tmp_path: Path,
) -> None:
    """After starts that replay the log and then its snapshot, writing to the same user
    goes on in the one direct chat between the two."""
    config = config_in(tmp_path)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob"),
    ):
        chat = (await alice.call("send", user="bob", text="before"))["message"]["chat"]
    for sender, peer in (("alice", "bob"), ("bob", "alice")):  # log, then snapshot
        async with run_server(config, Clock()) as running, connected(running.url) as device:
            await device.login(sender)
            sent = (await device.call("send", user=peer, text="after"))["message"]
            assert sent["chat"] == chat


async def test_a_restart_after_a_schedule_was_cancelled_or_posted_resumes_it_as_gone(
    tmp_path: Path,
) -> None:
    """Restarted on a log whose recent events schedule messages since cancelled or posted,
    the server starts, and a device resuming from the beginning is told the cancellation
    and the posted message, not the schedules that are no longer pending."""
    clock = Clock()
    config = config_in(tmp_path)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        cancelled = await schedule(alice, clock.now + 5_000, "cancelled")
        await schedule(alice, clock.now + 10_000, "posted")
        await alice.call("cancel", id=cancelled["id"])
        clock.advance(10)
        await alice.next_event("message")
        token = alice.token
    async with run_server(config, clock) as running, connect(running.url) as connection:
        pushed, result = await login_collecting(connection, user="alice", token=token, since=0)
    assert result["resumed"] is True
    assert [event["method"] for event in pushed] == ["scheduled.cancelled", "message"]


# -- the login throttle -----------------------------------------------------------------


def test_password_checks_in_flight_are_counted_exactly_as_they_come_and_go() -> None:
    """With free = 2: after a check has finished, and after one of two has, two checks in
    flight for a name still make the next attempt wait."""
    throttle = LoginThrottle(free=2, backoff=1.0)
    with throttle.checking("alice"):
        pass
    with throttle.checking("alice"):
        with throttle.checking("alice"):
            assert throttle.retry_after("alice", now=0.0) == 1.0
        assert throttle.retry_after("alice", now=0.0) == 0
        with throttle.checking("alice"):
            assert throttle.retry_after("alice", now=0.0) == 1.0
    assert throttle.retry_after("alice", now=0.0) == 0


# -- params: errors and the OpenRPC document ----------------------------------------------


async def test_range_params_say_their_bounds_in_errors_and_in_the_openrpc_document(
    tmp_path: Path,
) -> None:
    """A bounded int says "from 1 to 100", one bounded below "at least 0"; rpc.discover's
    schemas carry the same minimum and maximum."""
    async with run_server(config_in(tmp_path), Clock()) as running:
        async with user_device(running.url, "alice") as alice:
            error = await error_of(alice, "history", chat="general", limit=0)
            assert str(error) == "-32602: Expected 'limit' from 1 to 100, but got 0"
            error = await error_of(alice, "history", chat="general", before=-1)
            assert str(error) == "-32602: Expected 'before' at least 0, but got -1"
            document = await alice.call("rpc.discover")
        history = next(method for method in document["methods"] if method["name"] == "history")
        schemas = {param["name"]: param["schema"] for param in history["params"]}
        assert schemas["limit"] == {"type": "integer", "minimum": 1, "maximum": 100}
        assert schemas["before"] == {"type": "integer", "minimum": 0}


# -- devices -------------------------------------------------------------------------


async def test_a_user_keeps_at_most_max_devices_the_oldest_idle_go_first(tmp_path: Path) -> None:
    """Each password login makes a device; past ``max_devices`` the oldest devices not
    connected are revoked (their tokens refused, their connections none), connected
    ones are kept, and with every device connected a new login is refused (-32004).
    Before, devices piled up without end in memory, on disk and in `status`."""
    async with (
        run_server(config_in(tmp_path, max_devices=3), Clock()) as running,
        user_device(running.url, "alice") as first,
    ):
        tokens = []
        for _ in range(2):  # two more, not kept connected
            async with user_device(running.url, "alice", register=False) as other:
                tokens.append(other.token)
        await _until_connected(first, 1)  # the server has seen the two go
        async with user_device(running.url, "alice", register=False) as fourth:
            status = await fourth.call("status")
            kept = [device["device"] for device in status["devices"]]
            assert len(kept) == 3
            assert first.token is not None
            # The oldest idle one went; the connected first one stayed.
            async with connected(running.url) as probe:
                error = await error_of(probe, "login", user="alice", token=tokens[0])
                assert error.code == -32001
                assert (await probe.call("login", user="alice", token=tokens[1]))["user"]
            await _until_connected(first, 2)
            async with user_device(running.url, "alice", register=False) as fifth:
                assert len((await fifth.call("status"))["devices"]) == 3
                async with connected(running.url) as sixth:
                    error = await error_of(sixth, "login", user="alice", password="password1")
                    assert error.code == -32004  # all three connected
            assert (await first.call("status"))["user"] == "alice"
    assert parse_args(["--max-devices", "7"]).max_devices == 7


async def _until_connected(peer: Peer, count: int) -> None:
    """Until ``status`` shows ``count`` of the user's devices connected."""
    async with asyncio.timeout(10):
        while sum(d["online"] for d in (await peer.call("status"))["devices"]) != count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_ids_have_the_shapes_the_protocol_documents(tmp_path: Path) -> None:
    """Message, comment, scheduled and direct-chat ids are 16 hex digits, a group's `g`
    and 16 hex digits, a join link 22 URL-safe characters (protocol.md, Ids)."""
    hex16 = re.compile(r"[0-9a-f]{16}")
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        message = await post(alice, "general", "hello")
        comment = (await bob.call("comment", message=message["id"], text="hi"))["comment"]
        direct = await bob.call("send", user="alice", text="psst")
        scheduled = await schedule(alice, clock.now + 60_000)
        group = (await alice.call("chat.create", title="team"))["chat"]
        link = (await alice.call("chat.link", chat=group["id"]))["link"]
    for found in (message["id"], comment["id"], direct["message"]["chat"], scheduled["id"]):
        assert hex16.fullmatch(found), found
    assert re.fullmatch(r"g[0-9a-f]{16}", group["id"]), group["id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", link), link


async def test_a_lapsed_message_counts_as_gone_in_unread_and_mentions(tmp_path: Path) -> None:
    """A message whose lifetime is over, not reclaimed yet (no command since), is not
    unread and not an unread mention; one the reader had read already takes nothing
    off the messages after it."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path, message_ttl=60), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        first = await post(alice, "general", "first, for @bob")
        await bob.call("read", chat="general", seq=first["seq"])
        await post(alice, "general", "second, for @bob")
        clock.advance(30)
        await post(alice, "general", "third")
        clock.advance(31)  # the first two have lapsed (61 s), the third not (31 s)
        general = chat_of(await bob.call("status"), "general")
        assert (general["unread"], general["mentions"]) == (1, 0)


async def test_a_comment_event_says_whose_message_it_is_on(tmp_path: Path) -> None:
    """Every device of the chat is told the commented message's author with the comment
    (a client that never loaded the message can still tell its own)."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        message = await post(alice, "general", "hello")
        await bob.call("comment", message=message["id"], text="hi")
        told = (await alice.next_event("comment"))["params"]
        assert told["message_author"] == "alice"
        assert told["comment"]["text"] == "hi"


async def test_schedules_restored_from_a_snapshot_are_posted_earliest_first(
    tmp_path: Path,
) -> None:
    """Scheduled messages come back from a snapshot in the order they were made, not of
    their times: the one due first is still posted when it is due."""
    clock = Clock()
    config = config_in(tmp_path)
    start = clock.now
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        await schedule(alice, start + 120_000, "late")
        await schedule(alice, start + 60_000, "early")
    async with run_server(config, clock):  # this start compacts: the state is a snapshot
        pass
    assert (config.state_dir / "events.snapshot").exists()
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice", register=False) as alice,
    ):
        clock.now = start + 61_000
        posted = (await alice.next_event("message"))["params"]["message"]
        assert posted["text"] == "early"
