"""The extras that live in existing chats, end to end on a real server with a clock
the test moves: message lifetime, the general chat's rate limit, comments,
scheduled messages, reports and bans."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from server.app import run_server
from tests.server.extras_support import (
    Clock,
    chat_of,
    config_in,
    error_of,
    events_until_quiet,
    log_text,
    post,
    texts,
)
from tests.wsclient import Peer, connected, user_device

# -- lifetime ---------------------------------------------------------------------


async def test_expired_message_and_its_comments_are_gone_from_every_read(tmp_path: Path) -> None:
    """Past message_ttl a message and its comments leave history, unread, comments and status."""
    clock = Clock()
    config = config_in(tmp_path, message_ttl=60)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        doomed = await post(alice, "general", "doomed text")
        await bob.call("comment", message=doomed["id"], text="doomed comment")
        assert doomed["expires_at"] == clock.now + 60_000
        clock.advance(30)
        await post(alice, "general", "younger text")
        unread = await bob.call("unread")
        assert texts(unread["chats"][0]["messages"]) == ["doomed text", "younger text"]

        clock.advance(31)  # the first is 61 s old, the second 31 s
        history = await bob.call("history", chat="general")
        assert texts(history["messages"]) == ["younger text"]
        unread = await bob.call("unread")
        assert texts(unread["chats"][0]["messages"]) == ["younger text"]
        assert (await error_of(bob, "comments", message=doomed["id"])).code == -32003
        assert (await error_of(bob, "comment", message=doomed["id"], text="late")).code == -32003
        assert chat_of(await bob.call("status"), "general")["unread"] == 1

        clock.advance(30)
        assert (await bob.call("history", chat="general"))["messages"] == []
        assert (await bob.call("unread"))["chats"] == []
        assert chat_of(await bob.call("status"), "general")["unread"] == 0


async def test_expired_message_is_dropped_from_the_log_at_the_next_start(tmp_path: Path) -> None:
    """After a restart an expired message and its comments are no longer in events.log."""
    clock = Clock()
    config = config_in(tmp_path, message_ttl=60)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        doomed = await post(alice, "general", "doomed text")
        await bob.call("comment", message=doomed["id"], text="doomed comment")
        clock.advance(40)
        alive = await post(alice, "general", "alive text")
        await bob.call("comment", message=alive["id"], text="alive comment")
    assert "doomed text" in log_text(config)
    clock.advance(30)  # only the first has expired
    async with run_server(config, clock) as running, connected(running.url) as bob:
        await bob.login("bob")
        history = await bob.call("history", chat="general")
        assert texts(history["messages"]) == ["alive text"]
        assert history["messages"][0]["comments"] == 1
        assert (await error_of(bob, "comments", message=doomed["id"])).code == -32003
    text = log_text(config)
    assert "doomed text" not in text
    assert "doomed comment" not in text
    assert "alive text" in text
    assert "alive comment" in text


# -- rate limit -------------------------------------------------------------------


async def test_send_over_the_rate_limit_says_the_seconds_left_in_the_window(
    tmp_path: Path,
) -> None:
    """The 4th general send of a 60 s window is -32004 with retry_after = seconds to its end."""
    clock = Clock()
    clock.advance(15)
    config = config_in(tmp_path, rate_limit=3, rate_period=60)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        for n in range(3):
            await post(alice, "general", f"m{n}")
        error = await error_of(alice, "send", chat="general", text="one too many")
        assert error.code == -32004
        assert error.data == {"retry_after": 45.0}
        clock.advance(10.5)
        error = await error_of(alice, "send", chat="general", text="still too many")
        assert error.data == {"retry_after": 34.5}
        history = await alice.call("history", chat="general")
        assert texts(history["messages"]) == ["m0", "m1", "m2"]


async def test_devices_of_one_user_share_the_allowance(tmp_path: Path) -> None:
    """Sends from two devices of one user count against one allowance; others keep theirs."""
    config = config_in(tmp_path, rate_limit=3, rate_period=60)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "bob") as bob,
    ):
        await post(phone, "general", "p1")
        await post(laptop, "general", "l1")
        await post(phone, "general", "p2")
        assert (await error_of(laptop, "send", chat="general", text="l2")).code == -32004
        assert (await error_of(phone, "send", chat="general", text="p3")).code == -32004
        for n in range(3):
            await post(bob, "general", f"b{n}")


async def test_direct_chats_are_not_rate_limited(tmp_path: Path) -> None:
    """A user out of general-chat allowance still sends to a direct chat, without limit."""
    config = config_in(tmp_path, rate_limit=3, rate_period=60)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob"),
    ):
        for n in range(3):
            await post(alice, "general", f"g{n}")
        assert (await error_of(alice, "send", chat="general", text="g3")).code == -32004
        for n in range(6):
            await alice.call("send", user="bob", text=f"d{n}")
        history = await alice.call("history", user="bob")
        assert texts(history["messages"]) == [f"d{n}" for n in range(6)]


async def test_rate_windows_are_fixed_and_reset_at_the_period_boundary(tmp_path: Path) -> None:
    """Three sends at 59 s fill the window; at 60 s a new window allows three more at once."""
    clock = Clock()
    clock.advance(59)
    config = config_in(tmp_path, rate_limit=3, rate_period=60)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        for n in range(3):
            await post(alice, "general", f"a{n}")
        error = await error_of(alice, "send", chat="general", text="a3")
        assert error.data == {"retry_after": 1.0}
        clock.advance(1)  # a sliding window would still hold the three sends of 1 s ago
        for n in range(3):
            await post(alice, "general", f"b{n}")
        error = await error_of(alice, "send", chat="general", text="b3")
        assert error.data == {"retry_after": 60.0}


async def test_rate_limit_count_survives_a_restart(tmp_path: Path) -> None:
    """A window's sends still count after a restart; the next window starts afresh."""
    clock = Clock()
    config = config_in(tmp_path, rate_limit=3, rate_period=60)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        for n in range(3):
            await post(alice, "general", f"m{n}")
    clock.advance(20)
    for _ in range(2):  # the first start compacts the log, the second replays the snapshot
        async with run_server(config, clock) as running, connected(running.url) as alice:
            await alice.login("alice")
            error = await error_of(alice, "send", chat="general", text="after restart")
            assert error.code == -32004
            assert error.data == {"retry_after": 40.0}
    clock.advance(40)
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.login("alice")
        await post(alice, "general", "next window")


# -- comments ---------------------------------------------------------------------


async def test_comment_is_pushed_to_the_chats_members_only(tmp_path: Path) -> None:
    """A comment on a direct message reaches both users' devices, not a third user."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        message = (await phone.call("send", user="bob", text="hi bob"))["message"]
        for device in (phone, laptop, bob):
            await device.next_event("message")
        clock.advance(1)
        comment = (await bob.call("comment", message=message["id"], text="hi back"))["comment"]
        assert comment == {
            "id": comment["id"],
            "message": message["id"],
            "chat": message["chat"],
            "author": "bob",
            "text": "hi back",
            "ts": clock.now,
        }
        for device in (phone, laptop, bob):
            event = await device.next_event()
            assert event["method"] == "comment"
            assert event["params"]["comment"] == comment
        await carol.no_event()
        history = await phone.call("history", user="bob")
        assert history["messages"][0]["comments"] == 1


async def test_comments_page_backwards_with_limit_and_before(tmp_path: Path) -> None:
    """comments gives the newest `limit` oldest-first, `before` pages back, has_more says more."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        message = await post(alice, "general", "discuss")
        ids = [
            (await alice.call("comment", message=message["id"], text=f"c{n}"))["comment"]["id"]
            for n in range(5)
        ]

        async def page(**params: Any) -> tuple[list[str], bool]:
            result = await alice.call("comments", message=message["id"], **params)
            return [c["text"] for c in result["comments"]], result["has_more"]

        assert await page() == (["c0", "c1", "c2", "c3", "c4"], False)
        assert await page(limit=2) == (["c3", "c4"], True)
        assert await page(limit=2, before=ids[3]) == (["c1", "c2"], True)
        assert await page(limit=2, before=ids[1]) == (["c0"], False)
        assert await page(before=ids[0]) == ([], False)
        error = await error_of(alice, "comments", message=message["id"], before="nope")
        assert error.code == -32003


async def test_no_comments_on_comments(tmp_path: Path) -> None:
    """Commenting on a comment is -32602 and adds nothing."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        message = await post(alice, "general", "discuss")
        comment = (await alice.call("comment", message=message["id"], text="first"))["comment"]
        error = await error_of(alice, "comment", message=comment["id"], text="nested")
        assert error.code == -32602
        assert (await error_of(alice, "comments", message=comment["id"])).code == -32003
        result = await alice.call("comments", message=message["id"])
        assert [c["text"] for c in result["comments"]] == ["first"]


async def test_non_member_cannot_comment_on_or_read_a_direct_chats_comments(
    tmp_path: Path,
) -> None:
    """A third user commenting on, or listing comments of, a direct message gets -32003."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        message = (await alice.call("send", user="bob", text="private"))["message"]
        await bob.call("comment", message=message["id"], text="private reply")
        error = await error_of(carol, "comment", message=message["id"], text="nosy")
        assert error.code == -32003
        assert (await error_of(carol, "comments", message=message["id"])).code == -32003
        result = await alice.call("comments", message=message["id"])
        assert [c["text"] for c in result["comments"]] == ["private reply"]


# -- scheduled messages -----------------------------------------------------------


async def test_scheduled_send_is_told_to_every_device_of_the_author_and_listed(
    tmp_path: Path,
) -> None:
    """send with a future send_at answers {scheduled}, tells all the author's devices, is listed."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "bob") as bob,
    ):
        send_at = clock.now + 10_000
        result = await phone.call("send", chat="general", text="later", send_at=send_at)
        scheduled = result["scheduled"]
        assert scheduled == {
            "id": scheduled["id"],
            "chat": "general",
            "text": "later",
            "file": None,
            "send_at": send_at,
        }
        for device in (phone, laptop):
            event = await device.next_event()
            assert event["method"] == "scheduled"
            assert event["params"]["scheduled"] == scheduled
        await bob.no_event()
        assert await laptop.call("scheduled") == {"scheduled": [scheduled], "has_more": False}
        assert await bob.call("scheduled") == {"scheduled": [], "has_more": False}
        assert (await bob.call("history", chat="general"))["messages"] == []


async def test_scheduled_messages_are_posted_when_the_clock_reaches_send_at(
    tmp_path: Path,
) -> None:
    """Due scheduled messages are posted in send_at order, stamped with the time they went out."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        await alice.call("send", chat="general", text="second", send_at=clock.now + 20_000)
        await alice.call("send", chat="general", text="first", send_at=clock.now + 10_000)
        clock.advance(9.9)
        await bob.no_event()
        clock.advance(10.1)
        posted = [(await bob.next_event("message"))["params"]["message"] for _ in range(2)]
        assert [(m["text"], m["seq"], m["author"]) for m in posted] == [
            ("first", 1, "alice"),
            ("second", 2, "alice"),
        ]
        assert all(m["ts"] == clock.now for m in posted)
        assert await alice.call("scheduled") == {"scheduled": [], "has_more": False}
        history = await bob.call("history", chat="general")
        assert texts(history["messages"]) == ["first", "second"]


async def test_cancelled_schedule_is_told_and_never_posted(tmp_path: Path) -> None:
    """cancel answers {id}, tells every device of the author, and the message never goes out."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "bob") as bob,
    ):
        result = await phone.call("send", chat="general", text="never", send_at=clock.now + 5000)
        scheduled_id = result["scheduled"]["id"]
        assert (await error_of(bob, "cancel", id=scheduled_id)).code == -32003
        assert await laptop.call("cancel", id=scheduled_id) == {"id": scheduled_id}
        for device in (phone, laptop):
            assert (await device.next_event("scheduled.cancelled"))["params"]["id"] == scheduled_id
        assert await phone.call("scheduled") == {"scheduled": [], "has_more": False}
        clock.advance(10)
        await bob.no_event()
        assert (await bob.call("history", chat="general"))["messages"] == []
        assert (await error_of(phone, "cancel", id=scheduled_id)).code == -32003


async def test_cancel_after_posting_is_not_found(tmp_path: Path) -> None:
    """Once a scheduled message is posted, cancel answers -32003 and the message stays."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        result = await alice.call("send", chat="general", text="sent", send_at=clock.now + 5000)
        clock.advance(5)
        await alice.next_event("message")
        assert (await error_of(alice, "cancel", id=result["scheduled"]["id"])).code == -32003
        assert texts((await alice.call("history", chat="general"))["messages"]) == ["sent"]


async def test_schedule_due_while_the_server_was_down_is_posted_late_at_start(
    tmp_path: Path,
) -> None:
    """A pending message survives a restart and is posted, late, by the next start, once."""
    clock = Clock()
    config = config_in(tmp_path)
    async with run_server(config, clock) as running, user_device(running.url, "alice") as alice:
        result = await alice.call("send", chat="general", text="late", send_at=clock.now + 10_000)
        scheduled = result["scheduled"]
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.login("alice")
        assert await alice.call("scheduled") == {"scheduled": [scheduled], "has_more": False}
    clock.advance(3600)  # the server was down when it fell due
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.login("alice")
        history = await until_posted(alice)
        assert [(m["text"], m["seq"], m["ts"]) for m in history] == [("late", 1, clock.now)]
        assert await alice.call("scheduled") == {"scheduled": [], "has_more": False}
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.login("alice")
        await asyncio.sleep(0.1)  # a few timer rounds: nothing is posted twice
        assert texts((await alice.call("history", chat="general"))["messages"]) == ["late"]


async def until_posted(peer: Peer) -> list[dict[str, Any]]:
    """The general chat's history once it is not empty (the timer posts soon after start)."""
    for _ in range(100):
        messages: list[dict[str, Any]] = (await peer.call("history", chat="general"))["messages"]
        if messages:
            return messages
        await asyncio.sleep(0.02)
    raise AssertionError("the scheduled message was not posted")


async def test_cancel_racing_the_post_has_exactly_one_winner(tmp_path: Path) -> None:
    """A cancel sent as the clock reaches send_at either cancels or finds it posted, never both."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        for round_ in range(8):
            text = f"race {round_}"
            result = await alice.call("send", chat="general", text=text, send_at=clock.now + 1000)
            scheduled_id = result["scheduled"]["id"]
            await alice.next_event("scheduled")
            clock.advance(1)
            # From at once to past the timer's resolution: either side may win.
            await asyncio.sleep(0.005 * round_)
            cancel = {"jsonrpc": "2.0", "method": "cancel", "params": {"id": scheduled_id}, "id": 1}
            (reply,) = await alice.send_raw(orjson.dumps([cancel]).decode())
            if "result" in reply:
                assert reply["result"] == {"id": scheduled_id}
                winner = (await alice.next_event())["method"]
                assert winner == "scheduled.cancelled"
            else:
                assert reply["error"]["code"] == -32003
                # The post's event may still be on its way to the disk: wait for it.
                for peer in (alice, bob):
                    event = await peer.next_event()
                    assert event["method"] == "message"
                    assert event["params"]["message"]["text"] == text
            clock.advance(1)  # anything still pending would be due now
            assert await events_until_quiet(alice, 0.1) == []
            assert await events_until_quiet(bob, 0.01) == []
        history = await bob.call("history", chat="general")
        assert len(history["messages"]) == len(set(texts(history["messages"])))


# -- reports and bans -------------------------------------------------------------


async def test_self_report_is_invalid_and_unknown_user_not_found(tmp_path: Path) -> None:
    """Reporting yourself is -32602; reporting a user who does not exist is -32003."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        assert (await error_of(alice, "report", user="alice")).code == -32602
        assert (await error_of(alice, "report", user="ALICE", reason="me")).code == -32602
        assert (await error_of(alice, "report", user="nobody")).code == -32003


async def test_one_reporter_counts_once(tmp_path: Path) -> None:
    """The same user reporting twice does not reach a threshold of 2, and is told so."""
    config = config_in(tmp_path, report_threshold=2, ban_duration=100)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "mallory") as mallory,
    ):
        assert await alice.call("report", user="mallory", reason="spam") == {"counted": True}
        assert await alice.call("report", user="mallory", reason="more spam") == {"counted": False}
        await mallory.no_event()
        await post(mallory, "general", "still here")


async def test_a_report_reaches_the_reporters_devices_and_a_ban_shows_in_status(
    tmp_path: Path,
) -> None:
    """Every device of the reporter gets `reported {user}`; the banned user's status
    says until when, and nobody else's does."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=1, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "mallory") as mallory,
    ):
        assert (await mallory.call("status"))["banned_until"] is None
        await phone.call("report", user="mallory")
        for device in (phone, laptop):
            assert (await device.next_event("reported"))["params"]["user"] == "mallory"
        assert (await mallory.call("status"))["banned_until"] == clock.now + 100_000
        assert (await phone.call("status"))["banned_until"] is None
        clock.advance(100)
        assert (await mallory.call("status"))["banned_until"] is None


async def test_threshold_of_distinct_reporters_bans_send_and_comment(tmp_path: Path) -> None:
    """At the threshold the user's devices get `banned`; send and comment are -32005 with until."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=2, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "mallory") as phone,
        user_device(running.url, "mallory", register=False) as laptop,
    ):
        message = await post(alice, "general", "hello")
        await alice.call("report", user="mallory")
        clock.advance(1)
        await bob.call("report", user="mallory", reason="abuse")
        until = clock.now + 100_000
        for device in (phone, laptop):
            assert (await device.next_event("banned"))["params"]["until"] == until
        for method, params in (
            ("send", {"chat": "general", "text": "x"}),
            ("send", {"user": "alice", "text": "x"}),
            ("send", {"chat": "general", "text": "x", "send_at": clock.now + 500_000}),
            ("comment", {"message": message["id"], "text": "x"}),
        ):
            error = await error_of(laptop, method, **params)
            assert (error.code, error.data) == (-32005, {"until": until}), method
        assert texts((await alice.call("history", chat="general"))["messages"]) == ["hello"]
        await post(bob, "general", "others may still send")


async def test_ban_ends_at_until_and_reports_count_afresh_after_it(tmp_path: Path) -> None:
    """A ban lifts at `until`; reports made before or during it do not count toward the next."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=2, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
        user_device(running.url, "mallory") as mallory,
    ):
        await alice.call("report", user="mallory")
        await bob.call("report", user="mallory")
        until = (await mallory.next_event("banned"))["params"]["until"]
        await carol.call("report", user="mallory")  # during the ban: not counted
        clock.now = until - 1
        assert (await error_of(mallory, "send", chat="general", text="x")).code == -32005
        clock.now = until
        await post(mallory, "general", "back")
        await alice.call("report", user="mallory")  # one of two, afresh
        await post(mallory, "general", "still back")
        told = [event["method"] for event in await events_until_quiet(mallory, 0.1)]
        assert told == ["message", "message"]
        clock.advance(1)
        await bob.call("report", user="mallory")
        second = (await mallory.next_event("banned"))["params"]["until"]
        assert second == clock.now + 100_000
        assert (await error_of(mallory, "send", chat="general", text="x")).data == {"until": second}


async def test_reports_and_bans_survive_a_restart(tmp_path: Path) -> None:
    """A report counts across a restart, and a ban holds across one until its time is up."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=2, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob"),
        user_device(running.url, "mallory"),
    ):
        await alice.call("report", user="mallory")
    async with run_server(config, clock):  # compacts the log: the report is in the snapshot
        pass
    async with run_server(config, clock) as running, connected(running.url) as bob:
        await bob.login("bob")
        await bob.call("report", user="mallory")
    until = clock.now + 100_000
    clock.advance(50)
    for _ in range(2):  # from the log, then from the snapshot
        async with run_server(config, clock) as running, connected(running.url) as mallory:
            await mallory.login("mallory")
            error = await error_of(mallory, "send", chat="general", text="x")
            assert (error.code, error.data) == (-32005, {"until": until})
    clock.now = until
    async with run_server(config, clock) as running, connected(running.url) as mallory:
        await mallory.login("mallory")
        await post(mallory, "general", "free again")


async def test_a_banned_authors_scheduled_message_is_cancelled_when_due(tmp_path: Path) -> None:
    """A message scheduled before a ban is cancelled, not posted, when it falls due in the ban."""
    clock = Clock()
    config = config_in(tmp_path, report_threshold=1, ban_duration=100)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "mallory") as mallory,
    ):
        scheduled = (
            await mallory.call("send", chat="general", text="later", send_at=clock.now + 10_000)
        )["scheduled"]
        await alice.call("report", user="mallory")
        await mallory.next_event("banned")
        clock.advance(11)
        cancelled = await mallory.next_event("scheduled.cancelled")
        assert cancelled["params"]["id"] == scheduled["id"]
        assert texts((await alice.call("history", chat="general"))["messages"]) == []
        assert (await mallory.call("scheduled"))["scheduled"] == []
