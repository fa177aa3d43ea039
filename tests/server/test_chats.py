"""Chats end to end on a real server: fan-out to every device, direct-chat privacy,
read markers, status, unread, history paging, resume, idempotent sends, expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from server.app import Running, run_server
from server.config import Config
from tests.configs import config_for_tests
from tests.wsclient import Peer, RpcError, connected, user_device


class FakeClock:
    """A clock the test moves by hand (milliseconds since the epoch)."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def config_in(tmp_path: Path, **changes: Any) -> Config:
    return config_for_tests(tmp_path, **changes)


async def error_of(peer: Peer, method: str, **params: Any) -> RpcError:
    """The error ``method`` fails with (the test fails if it succeeds)."""
    with pytest.raises(RpcError) as caught:
        await peer.call(method, **params)
    return caught.value


async def post(peer: Peer, text: str, chat: str = "general") -> dict[str, Any]:
    message: dict[str, Any] = (await peer.call("send", chat=chat, text=text))["message"]
    return message


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [message["text"] for message in messages]


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [message["seq"] for message in messages]


def chat_of(status: dict[str, Any], chat_id: str) -> dict[str, Any]:
    chat: dict[str, Any] = next(chat for chat in status["chats"] if chat["id"] == chat_id)
    return chat


async def login_collecting(
    connection: ClientConnection, **params: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Log in on a raw connection: the events pushed before the reply, and the reply."""
    await connection.send(
        orjson.dumps({"jsonrpc": "2.0", "method": "login", "params": params, "id": 1}).decode()
    )
    before: list[dict[str, Any]] = []
    while True:
        frame = orjson.loads(await asyncio.wait_for(connection.recv(), 5))
        if frame.get("id") == 1:
            assert "result" in frame, frame
            return before, frame["result"]
        before.append(frame)


async def next_frame(connection: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(connection.recv(), 5))
    return frame


async def until_offline(peer: Peer, device: str) -> dict[str, Any]:
    """``status`` once ``device`` shows offline (its close is seen by the server soon
    after the client's close returns); fails after a few seconds."""
    for _ in range(100):
        status: dict[str, Any] = await peer.call("status")
        if not next(d["online"] for d in status["devices"] if d["device"] == device):
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"device {device} still online: {status}")


# -- fan-out and privacy ---------------------------------------------------------


async def test_message_reaches_every_device_with_one_cursor(running_server: Running) -> None:
    """A message event reaches both devices of its author (the acting one included)
    and other users, with the same cursor and the same message as the reply."""
    url = running_server.url
    async with (
        user_device(url, "alice") as phone,
        user_device(url, "alice", register=False) as laptop,
        user_device(url, "bob") as bob,
    ):
        message = await post(phone, "hello")
        events = [await peer.next_event("message") for peer in (phone, laptop, bob)]
    assert events[0] == events[1] == events[2]
    assert events[0]["params"]["message"] == message
    assert isinstance(events[0]["params"]["cursor"], int)
    assert message["chat"] == "general"
    assert message["seq"] == 1
    assert message["author"] == "alice"
    assert message["file"] is None
    assert message["comments"] == 0


async def test_cursors_only_grow(running_server: Running) -> None:
    """Successive events carry strictly increasing cursors, above the login's cursor."""
    async with user_device(running_server.url, "alice") as alice:
        cursors = [(await alice.login("alice"))["cursor"]]
        for text in ("one", "two", "three"):
            await post(alice, text)
            cursors.append((await alice.next_event("message"))["params"]["cursor"])
    assert cursors == sorted(set(cursors))


async def test_direct_chat_is_invisible_to_a_third_user(running_server: Running) -> None:
    """A third user can neither send to, read, nor mark a direct chat (-32003, as if
    it did not exist), does not see it in status, and hears none of its events."""
    url = running_server.url
    async with (
        user_device(url, "alice") as alice,
        user_device(url, "bob") as bob,
        user_device(url, "carol") as carol,
    ):
        message = await alice.call("send", user="bob", text="just us")
        chat_id = message["message"]["chat"]
        assert (await bob.next_event("message"))["params"]["message"]["text"] == "just us"
        await bob.call("read", chat=chat_id, seq=1)

        for method, params in (
            ("send", {"chat": chat_id, "text": "let me in"}),
            ("history", {"chat": chat_id}),
            ("read", {"chat": chat_id, "seq": 1}),
            ("read", {"chat": chat_id, "seq": 0}),
        ):
            assert (await error_of(carol, method, **params)).code == -32003, method
        private = await error_of(carol, "history", chat=chat_id)
        unknown = await error_of(carol, "history", chat="no-such-chat")
        assert unknown.code == -32003
        assert str(private).replace(chat_id, "?") == str(unknown).replace("no-such-chat", "?")
        assert [chat["id"] for chat in (await carol.call("status"))["chats"]] == ["general"]
        assert (await carol.call("unread"))["chats"] == []
        assert (await carol.call("history", user="alice"))["messages"] == []
        await carol.no_event()
        assert (await bob.call("history", chat=chat_id))["messages"] == [message["message"]]


async def test_send_to_user_opens_the_direct_chat_once(running_server: Running) -> None:
    """send user= opens the 1-to-1 chat on first use; later sends, by either side and
    whatever the name's case, go to the same chat with contiguous seqs."""
    url = running_server.url
    async with user_device(url, "alice") as alice, user_device(url, "bob") as bob:
        first = (await alice.call("send", user="bob", text="one"))["message"]
        second = (await alice.call("send", user="BOB", text="two"))["message"]
        third = (await bob.call("send", user="alice", text="three"))["message"]
        by_chat = (await bob.call("send", chat=first["chat"], text="four"))["message"]
        assert first["chat"] == second["chat"] == third["chat"] == by_chat["chat"]
        assert first["chat"] != "general"
        assert [first["seq"], second["seq"], third["seq"], by_chat["seq"]] == [1, 2, 3, 4]
        received = [(await bob.next_event("message"))["params"]["message"] for _ in range(4)]
        assert received == [first, second, third, by_chat]
        history = await alice.call("history", user="bob")
        assert texts(history["messages"]) == ["one", "two", "three", "four"]
        direct = chat_of(await alice.call("status"), first["chat"])
        assert direct["kind"] == "direct"
        assert direct["title"] == "bob"
        assert direct["owner"] is None
        assert direct["last_seq"] == 4
        assert chat_of(await bob.call("status"), first["chat"])["title"] == "alice"
        assert (await error_of(alice, "send", user="alice", text="me")).code == -32602
        assert (await error_of(alice, "send", user="nobody", text="hi")).code == -32003
        assert (await error_of(alice, "history", user="nobody")).code == -32003


# -- read markers, status, unread ---------------------------------------------------


async def test_read_marker_syncs_and_never_moves_back(running_server: Running) -> None:
    """read on one device sends a read event to all of that user's devices (not to
    others); a lower seq keeps the marker; a seq beyond the last is -32602."""
    url = running_server.url
    async with (
        user_device(url, "alice") as phone,
        user_device(url, "alice", register=False) as laptop,
        user_device(url, "bob") as bob,
    ):
        for text in ("one", "two", "three"):
            await post(bob, text)
        for peer in (phone, laptop, bob):
            for _ in range(3):
                await peer.next_event("message")
        bobs_marker = chat_of(await bob.call("status"), "general")["read_seq"]
        assert await phone.call("read", chat="general", seq=2) == {"chat": "general", "read_seq": 2}
        events = [await peer.next_event() for peer in (phone, laptop)]
        assert events[0] == events[1]
        assert events[0]["method"] == "read"
        assert events[0]["params"]["chat"] == "general"
        assert events[0]["params"]["read_seq"] == 2

        assert await laptop.call("read", chat="general", seq=1) == {
            "chat": "general",
            "read_seq": 2,
        }
        assert await laptop.call("read", chat="general", seq=2) == {
            "chat": "general",
            "read_seq": 2,
        }
        assert (await error_of(laptop, "read", chat="general", seq=4)).code == -32602
        await phone.no_event()
        await laptop.no_event()
        await bob.no_event()
        assert chat_of(await laptop.call("status"), "general")["read_seq"] == 2
        assert chat_of(await bob.call("status"), "general")["read_seq"] == bobs_marker
    async with user_device(url, "alice", register=False) as again:
        assert chat_of(await again.call("status"), "general")["read_seq"] == 2


async def test_status_shows_unread_and_devices(running_server: Running) -> None:
    """status gives each chat's unread count and read/last seq, and every device of
    the user with its name and whether it is online."""
    url = running_server.url
    async with user_device(url, "bob") as bob, connected(url) as phone:
        await phone.call("register", user="alice", password="password1")
        phone_login = await phone.login("alice", device_name="phone")
        async with connected(url) as laptop:
            laptop_login = await laptop.login("alice", device_name="laptop")
            status = await phone.call("status")
            assert status["user"] == "alice"
            assert status["device"] == phone_login["device"]
            assert sorted(status["devices"], key=lambda d: d["name"]) == [
                {"device": laptop_login["device"], "name": "laptop", "online": True},
                {"device": phone_login["device"], "name": "phone", "online": True},
            ]
            assert status["server"]["version"]
        for text in ("one", "two", "three"):
            await post(bob, text)
        direct = (await bob.call("send", user="alice", text="psst"))["message"]["chat"]
        await phone.call("read", chat="general", seq=1)

        status = await until_offline(phone, laptop_login["device"])
        assert {d["name"]: d["online"] for d in status["devices"]} == {
            "phone": True,
            "laptop": False,
        }
        general = chat_of(status, "general")
        assert general == {
            "id": "general",
            "kind": "general",
            "title": "general",
            "owner": None,
            "unread": 2,
            "read_seq": 1,
            "last_seq": 3,
            "mentions": 0,
        }
        assert chat_of(status, direct)["unread"] == 1
        assert chat_of(status, direct)["last_seq"] == 1


async def test_unread_after_reconnect(running_server: Running) -> None:
    """A user offline while messages arrive gets them from unread after logging in
    again with the token; reading them empties unread."""
    url = running_server.url
    async with user_device(url, "alice") as alice:
        token = alice.token
    assert token is not None
    async with user_device(url, "bob") as bob:
        await post(bob, "while you were out")
        await post(bob, "still out")
        direct = (await bob.call("send", user="alice", text="call me"))["message"]["chat"]
    async with connected(url) as alice:
        await alice.call("login", user="alice", token=token)
        unread = {chat["chat"]: chat for chat in (await alice.call("unread"))["chats"]}
        assert set(unread) == {"general", direct}
        assert texts(unread["general"]["messages"]) == ["while you were out", "still out"]
        assert unread["general"]["read_seq"] == 0
        assert unread["general"]["has_more"] is False
        assert texts(unread[direct]["messages"]) == ["call me"]
        await alice.call("read", chat="general", seq=2)
        await alice.call("read", chat=direct, seq=1)
        assert (await alice.call("unread"))["chats"] == []


async def test_newcomer_unread_is_the_last_history_size_messages(tmp_path: Path) -> None:
    """A user registered after messages were posted has the last history_size of
    them unread in the general chat, and history defaults to that many."""
    async with run_server(config_in(tmp_path, history_size=3)) as running:
        async with user_device(running.url, "old") as old:
            for n in range(1, 6):
                await post(old, f"m{n}")
        async with user_device(running.url, "newcomer") as newcomer:
            (general,) = (await newcomer.call("unread"))["chats"]
            assert general["chat"] == "general"
            assert general["read_seq"] == 2
            assert texts(general["messages"]) == ["m3", "m4", "m5"]
            assert chat_of(await newcomer.call("status"), "general")["unread"] == 3
            history = await newcomer.call("history", chat="general")
            assert texts(history["messages"]) == ["m3", "m4", "m5"]
            assert history["has_more"] is True


async def test_own_messages_are_not_unread(running_server: Running) -> None:
    """A user's own messages never count as unread for that user (status and unread),
    while they do for the other members."""
    url = running_server.url
    async with user_device(url, "alice") as alice, user_device(url, "bob") as bob:
        await post(bob, "mine")
        direct = (await bob.call("send", user="alice", text="also mine"))["message"]["chat"]
        status = await bob.call("status")
        assert chat_of(status, "general")["unread"] == 0
        assert chat_of(status, direct)["unread"] == 0
        assert (await bob.call("unread"))["chats"] == []
        status = await alice.call("status")
        assert chat_of(status, "general")["unread"] == 1
        assert chat_of(status, direct)["unread"] == 1


# -- history ----------------------------------------------------------------------


async def test_history_pages_both_ways(tmp_path: Path) -> None:
    """history: the newest limit (default history_size), before and after a seq,
    both together, ascending, with has_more telling whether more lie that way."""
    async with (
        run_server(config_in(tmp_path, history_size=5)) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        chat = (await alice.call("send", user="bob", text="1"))["message"]["chat"]
        for n in range(2, 13):
            await alice.call("send", chat=chat, text=str(n))

        async def page(**params: Any) -> tuple[list[int], bool]:
            result = await bob.call("history", chat=chat, **params)
            assert seqs(result["messages"]) == [int(t) for t in texts(result["messages"])]
            return seqs(result["messages"]), result["has_more"]

        assert await page() == ([8, 9, 10, 11, 12], True)
        assert await page(limit=3) == ([10, 11, 12], True)
        assert await page(limit=12) == (list(range(1, 13)), False)
        assert await page(limit=100) == (list(range(1, 13)), False)
        assert await page(before=9, limit=3) == ([6, 7, 8], True)
        assert await page(before=4) == ([1, 2, 3], False)
        assert await page(before=1) == ([], False)
        assert await page(before=50, limit=2) == ([11, 12], True)
        assert await page(after=2, limit=3) == ([3, 4, 5], True)
        assert await page(after=9) == ([10, 11, 12], False)
        assert await page(after=0) == ([1, 2, 3, 4, 5], True)
        assert await page(after=12) == ([], False)
        assert await page(after=40) == ([], False)
        assert await page(after=2, before=6) == ([3, 4, 5], False)
        assert await page(after=2, before=6, limit=2) == ([3, 4], True)
        assert await page(after=2, before=3) == ([], False)
        assert (await alice.call("history", user="bob"))["messages"] == (
            await bob.call("history", user="alice")
        )["messages"]


# -- resume -------------------------------------------------------------------------


async def test_resume_pushes_exactly_the_missed_events_first(running_server: Running) -> None:
    """login with a token and since pushes, in order and before the reply, every event
    after since that the user would have heard (and none of others'), then live ones."""
    url = running_server.url
    async with (
        user_device(url, "alice") as alice,
        user_device(url, "alice", register=False) as other_device,
        user_device(url, "bob") as bob,
        user_device(url, "carol") as carol,
    ):
        await post(bob, "seen")
        since = (await alice.next_event("message"))["params"]["cursor"]
        await other_device.next_event("message")
        token = alice.token
        await alice.close()

        await post(bob, "missed 1")
        await bob.call("send", user="carol", text="not for alice")
        await bob.call("send", user="alice", text="missed 2")
        await other_device.call("read", chat="general", seq=2)
        await carol.call("send", user="bob", text="nor this")
        expected = [await other_device.next_event() for _ in range(3)]
        assert [e["method"] for e in expected] == ["message", "message", "read"]

        async with connect(url) as connection:
            pushed, result = await login_collecting(
                connection, user="alice", token=token, since=since
            )
            assert result["resumed"] is True
            assert pushed == expected
            assert [e["params"]["cursor"] for e in pushed] == sorted(
                e["params"]["cursor"] for e in pushed
            )
            assert all(e["params"]["cursor"] > since for e in pushed)
            assert result["cursor"] >= pushed[-1]["params"]["cursor"]

            live = await post(bob, "live")
            event = await next_frame(connection)
            assert event["method"] == "message"
            assert event["params"]["message"] == live
            assert event["params"]["cursor"] > result["cursor"]
        await other_device.next_event("message")
        await other_device.no_event()


async def test_resume_from_the_present_pushes_nothing(running_server: Running) -> None:
    """login with since equal to the current cursor resumes with nothing pushed."""
    url = running_server.url
    async with user_device(url, "alice") as alice:
        await post(alice, "hi")
        cursor = (await alice.next_event("message"))["params"]["cursor"]
        token = alice.token
    async with connect(url) as connection:
        pushed, result = await login_collecting(connection, user="alice", token=token, since=cursor)
    assert pushed == []
    assert result["resumed"] is True
    assert result["cursor"] == cursor


async def test_resume_beyond_the_window_is_refused(tmp_path: Path) -> None:
    """With more missed events than resume_window holds, login with since pushes
    nothing and says resumed: false; a since inside the window still resumes."""
    async with (
        run_server(config_in(tmp_path, resume_window=3)) as running,
        user_device(running.url, "bob") as bob,
    ):
        async with user_device(running.url, "alice") as alice:
            await post(bob, "seen")
            since = (await alice.next_event("message"))["params"]["cursor"]
            token = alice.token
        assert (await bob.next_event("message"))["params"]["cursor"] == since
        cursors = []
        for n in range(5):
            await post(bob, f"missed {n}")
            cursors.append((await bob.next_event("message"))["params"]["cursor"])

        async with connect(running.url) as connection:
            pushed, result = await login_collecting(
                connection, user="alice", token=token, since=since
            )
            assert pushed == []
            assert result["resumed"] is False
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(connection.recv(), 0.2)

        async with connect(running.url) as connection:
            pushed, result = await login_collecting(
                connection, user="alice", token=token, since=cursors[1]
            )
            assert result["resumed"] is True
            assert [e["params"]["message"]["text"] for e in pushed] == [
                "missed 2",
                "missed 3",
                "missed 4",
            ]

        async with connect(running.url) as connection:
            pushed, result = await login_collecting(
                connection, user="alice", token=token, since=cursors[-1] + 100
            )
            assert (pushed, result["resumed"]) == ([], False)


# -- idempotent send ---------------------------------------------------------------


async def test_client_id_makes_send_idempotent_across_restart(tmp_path: Path) -> None:
    """A repeated send with the same client_id from the same device returns the first
    message and stores nothing new, also after a restart; another device's same
    client_id is its own message."""
    config = config_in(tmp_path)
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "alice", register=False) as laptop,
    ):
        first = await alice.call("send", chat="general", text="once", client_id="k1")
        again = await alice.call("send", chat="general", text="once", client_id="k1")
        assert again == first
        await laptop.next_event("message")
        await laptop.no_event()
        assert chat_of(await alice.call("status"), "general")["last_seq"] == 1
        own = await laptop.call("send", chat="general", text="mine", client_id="k1")
        assert own["message"]["id"] != first["message"]["id"]
        assert own["message"]["seq"] == 2
        token = alice.token

    async with run_server(config) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        after_restart = await alice.call("send", chat="general", text="once", client_id="k1")
        assert after_restart == first
        status = await alice.call("status")
        assert chat_of(status, "general")["last_seq"] == 2
        history = await alice.call("history", chat="general")
        assert texts(history["messages"]) == ["once", "mine"]
        fresh = await alice.call("send", chat="general", text="new", client_id="k2")
        assert fresh["message"]["seq"] == 3


async def test_state_survives_restart(tmp_path: Path) -> None:
    """Users, tokens, direct chats, messages and read markers come back after a restart."""
    config = config_in(tmp_path)
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        chat = (await alice.call("send", user="bob", text="before"))["message"]["chat"]
        await bob.call("read", chat=chat, seq=1)
        token = bob.token
        before = await bob.call("status")
    async with run_server(config) as running, connected(running.url) as bob:
        await bob.call("login", user="bob", token=token)
        after = await bob.call("status")
        assert after["chats"] == before["chats"]
        assert texts((await bob.call("history", chat=chat))["messages"]) == ["before"]
        assert (await bob.call("send", user="alice", text="after"))["message"]["seq"] == 2


# -- expiry ------------------------------------------------------------------------


async def test_messages_expire_after_ttl(tmp_path: Path) -> None:
    """With message_ttl 60 s, a message is gone from history and unread once 60 s
    have passed on the server's clock, and unread counts drop with it."""
    clock = FakeClock()
    async with (
        run_server(config_in(tmp_path, message_ttl=60), clock=clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        first = await post(alice, "early")
        assert first["ts"] == clock.now
        assert first["expires_at"] == clock.now + 60_000
        direct = (await alice.call("send", user="bob", text="early direct"))["message"]["chat"]
        clock.advance(30)
        await post(alice, "late")

        status = await bob.call("status")
        assert chat_of(status, "general")["unread"] == 2
        assert chat_of(status, direct)["unread"] == 1

        clock.advance(31)  # "early" is 61 s old, "late" 31 s
        history = await bob.call("history", chat="general")
        assert texts(history["messages"]) == ["late"]
        assert history["has_more"] is False
        assert (await bob.call("history", chat=direct))["messages"] == []
        unread = (await bob.call("unread"))["chats"]
        assert [(c["chat"], texts(c["messages"])) for c in unread] == [("general", ["late"])]
        status = await bob.call("status")
        assert chat_of(status, "general")["unread"] == 1
        assert chat_of(status, "general")["last_seq"] == 2
        assert chat_of(status, direct)["unread"] == 0

        clock.advance(30)
        assert (await bob.call("history", chat="general"))["messages"] == []
        assert (await bob.call("unread"))["chats"] == []
        assert chat_of(await bob.call("status"), "general")["unread"] == 0
        assert (await post(alice, "fresh"))["seq"] == 3
        unread = (await bob.call("unread"))["chats"]
        assert [(c["chat"], texts(c["messages"])) for c in unread] == [("general", ["fresh"])]


async def test_reads_after_expiry_hide_the_message_and_change_nothing(tmp_path: Path) -> None:
    """Reads at a time past a message's expiry (before any reclaim) do not show it, nor
    count it, nor its comments or its file; and the state is left as it was: reads
    never expire anything (issue 7), only a command or housekeeping does."""
    clock = FakeClock()
    async with (
        run_server(config_in(tmp_path, message_ttl=60), clock=clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        begun = await alice.call("upload.begin", name="a.txt", size=2)
        await alice.call("upload.chunk", upload=begun["upload"], data="aGk=")
        file = (await alice.call("upload.finish", upload=begun["upload"]))["file"]["id"]
        sent = await alice.call("send", user="bob", text="see @bob", file=file)
        direct, message = sent["message"]["chat"], sent["message"]["id"]
        await bob.call("comment", message=message, text="seen")
        assert (await bob.call("download", file=file))["data"] == "aGk="
        state = running.service.state
        before = (len(state.messages), len(state.comments), len(state.expiries), state.cursor)
        clock.advance(60)  # expires_at == now: over
        assert (await bob.call("history", chat=direct))["messages"] == []
        assert (await bob.call("unread"))["chats"] == []
        assert chat_of(await bob.call("status"), direct)["unread"] == 0
        assert chat_of(await bob.call("status"), direct)["mentions"] == 0
        assert (await bob.call("search", query="see"))["messages"] == []
        for method, params in (
            ("comments", {"message": message}),
            ("download", {"file": file}),
            ("file.url", {"file": file}),
        ):
            with pytest.raises(RpcError) as gone:
                await bob.call(method, **params)
            assert gone.value.code == -32003
        after = (len(state.messages), len(state.comments), len(state.expiries), state.cursor)
        assert after == before
        assert state is running.service.state
        assert state.expired_since_snapshot == 0
        # A command reclaims first (the executor's one transition), then decides.
        with pytest.raises(RpcError):
            await bob.call("comment", message=message, text="late")
        assert (len(state.messages), len(state.comments)) == (0, 0)
        assert state.expired_since_snapshot == 1


async def away_with_missed_messages(url: str, clock: FakeClock) -> tuple[str, int]:
    """alice's token and last cursor; then, while she is away, bob posts a message
    that expires and, 61 s later, one that does not yet."""
    async with connected(url) as alice:
        await alice.call("register", user="alice", password="password1")
        since: int = (await alice.login("alice"))["cursor"]
        token = alice.token
    assert token is not None
    async with user_device(url, "bob") as bob:
        await post(bob, "gone")
        clock.advance(61)
        await post(bob, "kept")
    return token, since


async def test_resume_leaves_out_expired_messages(tmp_path: Path) -> None:
    """login with since does not push a message that expired while the device was away."""
    clock = FakeClock()
    async with run_server(config_in(tmp_path, message_ttl=60), clock=clock) as running:
        token, since = await away_with_missed_messages(running.url, clock)
        async with connect(running.url) as connection:
            pushed, result = await login_collecting(
                connection, user="alice", token=token, since=since
            )
    assert result["resumed"] is True
    assert [event["params"]["message"]["text"] for event in pushed] == ["kept"]


async def test_resume_after_restart_leaves_out_expired_messages(tmp_path: Path) -> None:
    """After a restart, login with since does not push a message expired by then."""
    clock = FakeClock()
    config = config_in(tmp_path, message_ttl=60)
    async with run_server(config, clock=clock) as running:
        token, since = await away_with_missed_messages(running.url, clock)
    async with run_server(config, clock=clock) as running, connect(running.url) as connection:
        pushed, result = await login_collecting(connection, user="alice", token=token, since=since)
    assert result["resumed"] is True
    assert [event["params"]["message"]["text"] for event in pushed] == ["kept"]


async def test_zero_ttl_never_expires(tmp_path: Path) -> None:
    """With message_ttl 0 a message has expires_at null and stays however late it gets."""
    clock = FakeClock()
    async with (
        run_server(config_in(tmp_path, message_ttl=0), clock=clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        assert (await post(alice, "forever"))["expires_at"] is None
        clock.advance(10 * 365 * 24 * 3600)
        assert texts((await alice.call("history", chat="general"))["messages"]) == ["forever"]
