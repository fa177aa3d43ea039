"""Durability through a real server: restarts, crashes (SIGKILL), clean stops
(SIGTERM, SIGINT), a log that cannot be written, damaged logs, a busy state dir,
and a slow reader that must not hold the others up. (Compaction: test_compaction.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from server.app import LOG_FILE, StateDirBusy, run_server
from server.config import Config, FsyncPolicy
from tests.configs import LIMITS_OFF_ARGS, config_for_tests
from tests.wsclient import Peer, RpcError, connected, user_device

# Generous limits so that only the behaviour under test can refuse a send.
RATE_LIMIT = 100_000


def config_in(tmp_path: Path, **changes: Any) -> Config:
    return config_for_tests(tmp_path, **{"rate_limit": RATE_LIMIT, **changes})


async def whole_history(peer: Peer, chat: str) -> list[dict[str, Any]]:
    """Every live message of ``chat``, oldest first, page by page."""
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["seq"] if messages else 0
        page = await peer.call("history", chat=chat, after=after, limit=100)
        messages += page["messages"]
        if not page["has_more"]:
            return messages


def chat_of(status: dict[str, Any], chat_id: str) -> dict[str, Any]:
    return next(chat for chat in status["chats"] if chat["id"] == chat_id)


# -- a server as its own process --------------------------------------------------


@dataclasses.dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    url: str
    stderr: Path

    def errors(self) -> str:
        return self.stderr.read_text()


@contextlib.asynccontextmanager
async def server_process(
    state_dir: Path,
    *args: str,
    file_size_blocks: int | None = None,
    open_files: tuple[int, int] | None = None,
) -> AsyncIterator[ServerProcess]:
    """``messenger-server`` on port 0, as a child process; killed if still running at exit.

    With ``file_size_blocks`` the process may not grow a file past that many blocks
    (``ulimit -f``; SIGXFSZ ignored): its writes beyond fail with EFBIG, a real disk error.
    With ``open_files`` (soft, hard) it starts with those limits on open files.
    """
    stderr = state_dir.parent / f"server-{os.urandom(4).hex()}.err"
    command = [sys.executable, "-m", "server", "--port", "0", "--state-dir", str(state_dir)]
    command += ["--rate-limit", str(RATE_LIMIT), *LIMITS_OFF_ARGS, *args]
    limits = []
    if file_size_blocks is not None:
        limits.append(f"ulimit -f {file_size_blocks} && trap '' XFSZ")
    if open_files is not None:
        limits.append(f"ulimit -S -n {open_files[0]} && ulimit -H -n {open_files[1]}")
    if limits:
        script = " && ".join([*limits, 'exec "$@"'])
        command = ["sh", "-c", script, "sh", *command]
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=err
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line.startswith(b"messenger-server listening on ws://"), line + stderr.read_bytes()
        yield ServerProcess(process, line.decode().split()[-1], stderr)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


async def run_cli(state_dir: Path, *args: str) -> tuple[int, str]:
    """Run ``messenger-server`` expecting it to stop by itself: its exit code and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


# -- restarts ---------------------------------------------------------------------


async def test_restart_keeps_users_devices_chats_messages_and_read_markers(
    tmp_path: Path,
) -> None:
    """Everything acknowledged before a stop is there after a start on the same state dir."""
    config = config_in(tmp_path)
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        for n in range(5):
            await bob.call("send", chat="general", text=f"general {n}")
        direct = (await bob.call("send", user="alice", text="psst"))["message"]["chat"]
        await alice.call("read", chat="general", seq=3)
        async with connected(running.url) as laptop:
            await laptop.login("alice", device_name="laptop")
            laptop_token = laptop.token
            await laptop.call("logout")
        before = await alice.call("status")
        token, device, cursor = alice.token, before["device"], alice.cursor
    async with run_server(config) as running, connected(running.url) as alice:
        resumed = await alice.call("login", user="alice", token=token)
        assert resumed["device"] == device
        assert resumed["cursor"] >= cursor
        after = await alice.call("status")
        assert after["chats"] == before["chats"]
        assert chat_of(after, "general")["read_seq"] == 3
        assert chat_of(after, "general")["unread"] == 2
        assert chat_of(after, direct)["unread"] == 1
        assert [d["device"] for d in after["devices"]] == [device]  # laptop stays logged out
        history = await alice.call("history", chat="general")
        assert [m["text"] for m in history["messages"]] == [f"general {n}" for n in range(5)]
        assert [m["seq"] for m in history["messages"]] == [1, 2, 3, 4, 5]
        unread = await alice.call("unread")
        assert {c["chat"]: [m["text"] for m in c["messages"]] for c in unread["chats"]} == {
            "general": ["general 3", "general 4"],
            direct: ["psst"],
        }
        sent = await alice.call("send", chat="general", text="after restart")
        assert sent["message"]["seq"] == 6
    async with run_server(config) as running, connected(running.url) as bob:
        await bob.login("bob")  # the password survives too
        assert chat_of(await bob.call("status"), "general") == {
            "id": "general",
            "kind": "general",
            "title": "general",
            "owner": None,
            "unread": 1,
            "read_seq": 5,
            "last_seq": 6,
            "mentions": 0,
        }
        with pytest.raises(RpcError) as revoked:  # a logout stays a logout
            await bob.call("login", user="alice", token=laptop_token)
        assert revoked.value.code == -32001


@pytest.mark.parametrize("fsync", list(FsyncPolicy), ids=str)
async def test_sigkill_after_acknowledged_sends_loses_none_of_them(
    fsync: FsyncPolicy, tmp_path: Path
) -> None:
    """A server killed right after acknowledging 200 pipelined sends keeps all 200."""
    state_dir = tmp_path / "state"
    async with server_process(state_dir, "--fsync", str(fsync)) as server:
        async with (
            user_device(server.url, "alice") as phone,
            user_device(server.url, "alice", register=False) as laptop,
        ):
            replies = await asyncio.gather(
                *(
                    device.call("send", chat="general", text=f"{name} {n}")
                    for n in range(100)
                    for name, device in (("phone", phone), ("laptop", laptop))
                )
            )
            server.process.kill()  # SIGKILL, the moment the last reply is in
            token = phone.token
            for device in (phone, laptop):  # their connections break: expected here
                with contextlib.suppress(ConnectionClosed):
                    await device.reader
        assert await server.process.wait() == -signal.SIGKILL
    acknowledged = {reply["message"]["id"]: reply["message"] for reply in replies}
    assert len(acknowledged) == 200
    async with run_server(config_in(tmp_path)) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        kept = {message["id"]: message for message in await whole_history(alice, "general")}
        assert kept == acknowledged
        assert sorted(m["seq"] for m in kept.values()) == list(range(1, 201))


@pytest.mark.parametrize("fsync", list(FsyncPolicy), ids=str)
async def test_sigkill_during_sends_keeps_every_acknowledged_one(
    fsync: FsyncPolicy, tmp_path: Path
) -> None:
    """Killed with sends still in flight: every acknowledged one is kept, seqs stay whole."""
    async with (
        server_process(tmp_path / "state", "--fsync", str(fsync)) as server,
        user_device(server.url, "alice") as alice,
    ):
        calls = [
            asyncio.ensure_future(alice.call("send", chat="general", text=f"m{n}"))
            for n in range(400)
        ]
        pending: set[asyncio.Future[Any]] = set(calls)
        while len(pending) > 300:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        server.process.kill()
        with contextlib.suppress(ConnectionClosed):
            await alice.reader  # every reply that made it out is in
        for call in pending:
            call.cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        token = alice.token
    acknowledged = {r["message"]["id"] for r in results if isinstance(r, dict)}
    assert len(acknowledged) >= 100
    async with run_server(config_in(tmp_path)) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        kept = await whole_history(alice, "general")
    assert acknowledged <= {message["id"] for message in kept}
    # One connection's requests are decided in order: what is kept is a prefix.
    assert [m["text"] for m in kept] == [f"m{n}" for n in range(len(kept))]
    assert [m["seq"] for m in kept] == list(range(1, len(kept) + 1))


async def send_until_refused(peer: Peer, most: int) -> tuple[list[str], RpcError]:
    """Send numbered 1 KB messages to general until one fails: the acknowledged ids, the error."""
    acknowledged: list[str] = []
    for n in range(most):
        try:
            reply = await peer.call("send", chat="general", text=f"{n:04d} {'x' * 1000}")
        except RpcError as error:
            return acknowledged, error
        acknowledged.append(reply["message"]["id"])
    raise AssertionError(f"all {most} sends were acknowledged")


async def test_log_that_cannot_be_written_stops_the_server_losing_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """A failed log write fails its send and stops the server (exit 1); no ack is lost."""
    async with (
        server_process(tmp_path / "state", file_size_blocks=128) as server,
        user_device(server.url, "alice") as alice,
        user_device(server.url, "bob") as bob,
    ):
        acknowledged, refusal = await send_until_refused(alice, 2000)
        assert refusal.code == -32603
        await asyncio.wait_for(bob.connection.wait_closed(), 10)
        assert bob.connection.close_code == 1001
        assert await asyncio.wait_for(server.process.wait(), 10) == 1
        assert "the event log cannot be written" in server.errors()
        # One line naming the file and where it stopped, and no traceback.
        assert f"{tmp_path / 'state' / LOG_FILE}: write failed at byte offset" in server.errors()
        assert "Traceback" not in server.errors()
        token = alice.token
    assert len(acknowledged) >= 10
    async with run_server(config_in(tmp_path)) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        kept = await whole_history(alice, "general")
    assert set(acknowledged) <= {message["id"] for message in kept}
    assert [m["text"][:4] for m in kept] == [f"{n:04d}" for n in range(len(kept))]


async def pipelined(peer: Peer, *calls: Awaitable[Any]) -> list[Any]:
    """The results of calls made at once, or their errors; None where the server went
    away before answering."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    everything = asyncio.gather(*tasks, return_exceptions=True)
    either: list[asyncio.Future[Any]] = [everything, peer.reader]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not everything.done():  # the connection is gone: no more replies will come
        for task in tasks:
            task.cancel()
    results = await everything
    return [None if isinstance(r, asyncio.CancelledError) else r for r in results]


async def test_no_reply_shows_a_message_that_never_reached_the_disk(tmp_path: Path) -> None:
    """A reply decided after a send (a repeat, a history) never shows it if its write fails."""
    async with (
        server_process(tmp_path / "state", file_size_blocks=128) as server,
        user_device(server.url, "alice") as alice,
    ):
        shown: set[str] = set()  # ids of messages some reply said exist
        for n in range(2000):
            text, client_id = f"{n:04d} {'x' * 1000}", f"c{n}"
            # Pipelined: the repeat and the history are decided while the send waits
            # for the disk, or just after its write failed.
            first, repeat, history = await pipelined(
                alice,
                alice.call("send", chat="general", text=text, client_id=client_id),
                alice.call("send", chat="general", text=text, client_id=client_id),
                alice.call("history", chat="general", limit=1),
            )
            shown |= {r["message"]["id"] for r in (first, repeat) if isinstance(r, dict)}
            if isinstance(history, dict):
                shown |= {message["id"] for message in history["messages"]}
            if not isinstance(first, dict):
                break
        assert await asyncio.wait_for(server.process.wait(), 10) == 1
        token = alice.token
    async with run_server(config_in(tmp_path)) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        kept = {message["id"] for message in await whole_history(alice, "general")}
    assert shown - kept == set(), "a reply showed a message that is not on disk"


async def test_resume_after_restart_pushes_what_the_device_missed(tmp_path: Path) -> None:
    """A device that saw cursor c before a restart gets, after it, every later event it missed."""
    config = config_in(tmp_path)
    async with run_server(config) as running, user_device(running.url, "alice") as alice:
        async with user_device(running.url, "bob") as bob:
            await alice.call("send", chat="general", text="seen")
            await bob.next_event("message")
            token, cursor = bob.token, bob.cursor
        await alice.call("send", chat="general", text="missed 1")
        await alice.call("send", user="bob", text="missed 2")
    async with run_server(config) as running, connected(running.url) as bob:
        result = await bob.call("login", user="bob", token=token, since=cursor)
        assert result["resumed"] is True
        pushed = [await bob.next_event() for _ in range(2)]
        await bob.no_event(0.05)
    assert [e["params"]["message"]["text"] for e in pushed] == ["missed 1", "missed 2"]
    assert cursor < pushed[0]["params"]["cursor"] < pushed[1]["params"]["cursor"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stop_signal_closes_connections_with_1001_and_exits_0(
    signum: signal.Signals, tmp_path: Path
) -> None:
    """SIGTERM/SIGINT: every connection is closed with 1001 (going away), the exit code is 0."""
    state_dir = tmp_path / "state"
    async with (
        server_process(state_dir, "--fsync", "never") as server,
        user_device(server.url, "alice") as alice,
        connected(server.url) as anonymous,
    ):
        await alice.call("send", chat="general", text="before the stop")
        token = alice.token
        server.process.send_signal(signum)
        for peer in (alice, anonymous):
            await asyncio.wait_for(peer.connection.wait_closed(), 10)
            assert peer.connection.close_code == 1001
        assert await asyncio.wait_for(server.process.wait(), 10) == 0
    assert "Traceback" not in server.errors()
    async with run_server(config_in(tmp_path)) as running, connected(running.url) as alice:
        await alice.call("login", user="alice", token=token)
        history = await alice.call("history", chat="general")
        assert [m["text"] for m in history["messages"]] == ["before the stop"]


# -- damaged logs -----------------------------------------------------------------


async def fill_log(config: Config, count: int) -> None:
    """Register alice and have her send ``count`` messages to the general chat."""
    async with run_server(config) as running, user_device(running.url, "alice") as alice:
        for n in range(count):
            await alice.call("send", chat="general", text=f"m{n}")


async def test_torn_tail_is_recovered_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-written last record is cut off at start; the older messages are all there."""
    config = config_in(tmp_path)
    await fill_log(config, 3)
    log_path = config.state_dir / LOG_FILE
    good_size = log_path.stat().st_size
    with log_path.open("ab") as log_file:
        log_file.write(b'0badc0de {"type":"MessagePosted","message":"torn","chat":"gen')
    with caplog.at_level(logging.WARNING):
        async with run_server(config) as running, connected(running.url) as alice:
            await alice.login("alice")
            history = await alice.call("history", chat="general")
            assert [m["text"] for m in history["messages"]] == ["m0", "m1", "m2"]
            sent = await alice.call("send", chat="general", text="m3")
            assert sent["message"]["seq"] == 4
    assert f"cutting off a torn last record at byte offset {good_size}" in caplog.text
    caplog.clear()
    async with run_server(config) as running, connected(running.url) as alice:
        await alice.login("alice")
        history = await alice.call("history", chat="general")
        assert [m["text"] for m in history["messages"]] == ["m0", "m1", "m2", "m3"]
    assert "cutting off" not in caplog.text


async def test_corrupted_middle_record_stops_the_cli_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    """A damaged record followed by good ones: exit code 1, stderr names the file and offset."""
    config = config_in(tmp_path)
    await fill_log(config, 3)
    log_path = config.state_dir / LOG_FILE
    data = bytearray(log_path.read_bytes())
    second_line = data.index(b"\n") + 1
    data[second_line + 30] ^= 0x20  # flips the case of a letter inside the JSON
    log_path.write_bytes(bytes(data))
    code, stderr = await run_cli(config.state_dir)
    assert code == 1
    assert str(log_path) in stderr
    assert f"byte offset {second_line}" in stderr
    assert "Traceback" not in stderr
    assert log_path.read_bytes() == bytes(data)  # nothing cut off: left for the operator


async def test_second_server_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """While a server runs, another on its state dir fails: StateDirBusy, or CLI exit 1."""
    config = config_in(tmp_path)
    async with run_server(config) as running:
        with pytest.raises(StateDirBusy):
            async with run_server(config):
                pass
        code, stderr = await run_cli(config.state_dir)
        assert code == 1
        assert "in use by another server" in stderr
        async with user_device(running.url, "alice") as alice:  # the first one goes on
            await alice.call("send", chat="general", text="still here")
    async with run_server(config):  # and once it stopped, the dir is free again
        pass


# -- a slow reader ----------------------------------------------------------------


class SlowDevice:
    """A logged-in device on a raw socket that reads only when told to.

    The websockets client reads its socket in the background; this one does the
    handshake and the login with websockets' sans-I/O protocol over a plain
    non-blocking socket with a small receive buffer, then never reads again.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.cursor = 0  # the login's

    async def handshake(self) -> None:
        """Connect and open the WebSocket."""
        loop = asyncio.get_running_loop()
        uri = parse_uri(self.url)
        await loop.sock_connect(self.sock, (uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        await self.flush()
        while True:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 10)
            assert data, "the server closed the connection during the handshake"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                assert isinstance(event, Response), event
                assert event.status_code == 101, event
                return

    async def login(self, user: str, token: str) -> dict[str, Any]:
        await self.handshake()
        request = {
            "jsonrpc": "2.0",
            "method": "login",
            "params": {"user": user, "token": token},
            "id": 1,
        }
        self.protocol.send_text(orjson.dumps(request))
        await self.flush()
        loop = asyncio.get_running_loop()
        while True:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 10)
            assert data, "the server closed the connection during login"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    reply: dict[str, Any] = orjson.loads(event.data)
                    if reply.get("id") == 1:
                        self.cursor = reply.get("result", {}).get("cursor", 0)
                        return reply

    async def flush(self) -> None:
        for data in self.protocol.data_to_send():
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def drain_until_closed(self) -> list[dict[str, Any]]:
        """Read until the server's end is gone: the events that came (a torn last frame,
        cut off mid-way, is left out)."""
        loop = asyncio.get_running_loop()
        events: list[dict[str, Any]] = []
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 10)
            except ConnectionResetError:
                return events
            if not data:
                return events
            self.protocol.receive_data(data)
            events.extend(
                orjson.loads(event.data)
                for event in self.protocol.events_received()
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT
            )

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def slow_device(url: str, user: str) -> AsyncIterator[SlowDevice]:
    """``user``, registered, logged in on a ``SlowDevice`` (closed at the end)."""
    async with user_device(url, user) as setup:
        token = setup.token
    assert token is not None
    slow = SlowDevice(url)
    try:
        assert "result" in await slow.login(user, token)
        yield slow
    finally:
        slow.close()


async def test_slow_reader_is_cut_off_while_others_keep_receiving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that stops reading is aborted past send_buffer_limit; the others get everything."""
    config = config_in(tmp_path, send_buffer_limit=64 * 2**10, fsync=FsyncPolicy.NEVER)
    filler = "x" * (4096 - 6)  # with "NNNNN " in front: the longest text there is
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        async with slow_device(running.url, "carol") as slow:
            sent = 0
            # Sends in small pipelined bursts, so that the fast devices' buffers stay
            # far below the limit, until the slow one is cut off (then a few more).
            after_cut = 0
            while after_cut < 20:
                assert sent < 20_000, "the slow reader was never cut off"
                await asyncio.gather(
                    *(
                        alice.call("send", chat="general", text=f"{sent + i:05d} {filler}")
                        for i in range(4)
                    )
                )
                sent += 4
                if "cutting off" in caplog.text:
                    after_cut += 4
            for n in range(sent):
                event = await bob.next_event("message")
                assert event["params"]["message"]["text"].startswith(f"{n:05d} ")
            await bob.no_event(0.05)
            # It got what was already in the kernel's buffers, in order, and then nothing.
            got = [e["params"]["message"]["text"][:5] for e in await slow.drain_until_closed()]
            assert got == [f"{n:05d}" for n in range(len(got))]
            assert len(got) < sent
        cut = [r.getMessage() for r in caplog.records if "cutting off" in r.getMessage()]
        assert len(cut) == 1, cut
        assert "user=carol" in cut[0]
        # Cut as soon as its unsent bytes passed the limit: one frame (~4.3 KB) beyond it.
        unsent = re.search(r"(\d+) bytes unsent", cut[0])
        assert unsent is not None
        assert config.send_buffer_limit < int(unsent[1]) <= config.send_buffer_limit + 8192
        assert (await bob.call("status"))["user"] == "bob"  # the fast ones are still connected
