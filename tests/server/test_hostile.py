"""Hostile clients over loopback, on a real server: what one connection may hold, the
login deadline and readers that take nothing, connection caps (also behind a trusted
proxy), streamed downloads, pipelined HTTP, deeply nested JSON, secrets kept out of the
log, /metrics, running out of file descriptors, the limit flags, and refusals to start
in one line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import resource
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.uri import parse_uri

from server.admission import FD_RESERVE
from server.app import LOG_FILE, Running, run_server
from server.cli import parse_args
from server.config import Config, FsyncPolicy
from server.log import EventLog, decode_record, encode_record
from tests.server.extras_support import Clock, config_in, http_get
from tests.server.test_durability import SlowDevice, run_cli, server_process, slow_device
from tests.wsclient import Peer, connected, user_device


def request(method: str, request_id: int, **params: Any) -> str:
    return orjson.dumps(
        {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
    ).decode()


async def metric(running: Running, series: str) -> float:
    """The value of one series (``name{labels}`` as exposed) from GET /metrics."""
    reply = await http_get(running, "/metrics")
    assert reply.status == 200
    for line in reply.body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


# -- what one connection may hold --------------------------------------------------


async def test_error_messages_quote_only_a_short_prefix(running_server: Running) -> None:
    """A method name, a user name or param names of 100k characters come back as a
    short prefix: an error reply is never larger than what provoked it."""
    huge = "m" * 100_000
    async with connected(running_server.url) as peer:
        frames = [
            request(huge, 1),
            request("login", 2, user=huge, password="password1"),
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "status",
                    "params": {f"{n}{huge}": 1 for n in range(10)},
                    "id": 3,
                }
            ).decode(),
        ]
        for frame in frames:
            reply = await peer.send_raw(frame)
            assert "error" in reply
            assert len(reply["error"]["message"]) < 400, reply["error"]["message"][:100]


async def test_deeply_nested_json_is_a_clean_error(
    running_server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """jsonrpc nested 1,000 deep is -32600, not an internal error with a traceback."""
    nested = "[" * 1000 + "]" * 1000
    async with connected(running_server.url) as peer:
        reply = await peer.send_raw(f'{{"jsonrpc":{nested},"method":"status","id":1}}')
        assert reply["error"]["code"] == -32600
        assert (await peer.call("rpc.discover"))["methods"]  # the connection goes on
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_frame_of_countless_empty_arrays_is_refused_unparsed(
    running_server: Running,
) -> None:
    """1 MiB of ``[[],[],...]`` (350k lists once parsed) is -32600 before it is parsed;
    a batch whose texts are all brackets is not."""
    flood = "[" + ",".join(["[]"] * (2**20 // 3 - 1)) + "]"
    async with user_device(running_server.url, "alice") as alice:
        reply = await alice.send_raw(flood)
        assert reply["error"]["code"] == -32600
        assert "arrays and objects" in reply["error"]["message"]
        text = "[{" * 2000
        batch = [request("send", n, chat="general", text=text) for n in range(3)]
        replies = await alice.send_raw("[" + ",".join(batch) + "]")
        assert all("result" in reply for reply in replies)
        history = await alice.call("history", chat="general")
        assert [m["text"] for m in history["messages"]] == [text] * 3


async def test_replies_count_towards_the_unsent_bound(tmp_path: Path) -> None:
    """A client that sends requests and never reads their replies is cut off once its
    unsent bytes pass the bound, as it would be for events."""
    config = config_in(tmp_path, send_buffer_limit=64 * 2**10)
    async with run_server(config) as running, slow_device(running.url, "mallory") as slow:
        for n in range(2, 2000):  # each reply is some 10 KB
            slow.protocol.send_text(request("rpc.discover", n).encode())
            try:
                await asyncio.wait_for(slow.flush(), 5)
            except (ConnectionError, TimeoutError):
                break
            if n % 20 == 0 and await metric(running, "messenger_slow_cutoffs_total") == 1:
                break
        assert await metric(running, "messenger_slow_cutoffs_total") == 1


async def test_pings_that_are_never_read_count_towards_the_unsent_bound(tmp_path: Path) -> None:
    """The pongs websockets writes by itself count too: a client that pings and never
    reads is cut off past the bound."""
    async with run_server(config_in(tmp_path, send_buffer_limit=64 * 2**10)) as running:
        slow = SlowDevice(running.url)
        try:
            await slow.handshake()
            for _ in range(400):  # up to 5 MB of pongs: past what the kernel buffers
                for _ in range(100):
                    slow.protocol.send_ping(b"p" * 125)
                try:
                    await asyncio.wait_for(slow.flush(), 5)
                except (ConnectionError, TimeoutError):
                    break
            assert await metric(running, "messenger_slow_cutoffs_total") == 1
        finally:
            slow.close()


async def test_a_slow_disk_holds_few_requests_of_one_connection(tmp_path: Path) -> None:
    """While the log cannot write, one connection's pipelined requests stop being read
    at a small number in flight; all are answered once the disk is back."""
    async with (
        run_server(config_in(tmp_path, fsync=FsyncPolicy.ALWAYS)) as running,
        user_device(running.url, "alice") as alice,
    ):
        disk_back = threading.Event()
        log = running.service.log
        assert isinstance(log, EventLog)
        # The log's own I/O thread is busy until the test says so: a disk that stalls.
        stuck = asyncio.get_running_loop().run_in_executor(log._io, disk_back.wait, 10)
        sends = [
            asyncio.create_task(alice.call("send", chat="general", text=f"m{n}")) for n in range(40)
        ]
        await asyncio.sleep(0.3)
        in_flight = await metric(running, "messenger_requests_in_flight")
        assert 1 <= in_flight <= 8
        disk_back.set()
        await stuck
        assert len(await asyncio.gather(*sends)) == 40


# -- the login deadline ------------------------------------------------------------


async def test_a_connection_not_logged_in_in_time_is_closed_1008(tmp_path: Path) -> None:
    """Past login_timeout, a WebSocket that has not logged in is closed with 1008 and a
    bare TCP connection is dropped; a logged-in one stays."""
    async with run_server(config_in(tmp_path, login_timeout=0.3)) as running:
        reader, writer = await asyncio.open_connection(running.host, running.port)
        async with (
            connect(running.url) as idle,
            user_device(running.url, "alice") as alice,
        ):
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(idle.recv(), 5)
            assert idle.close_code == 1008
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await asyncio.sleep(0.3)
            assert (await alice.call("status"))["user"] == "alice"


async def test_a_connection_that_neither_logs_in_nor_reads_goes_at_its_deadline(
    tmp_path: Path,
) -> None:
    """Past the deadline, a connection whose unread replies keep the close frame from
    being sent is dropped all the same."""
    async with run_server(config_in(tmp_path, login_timeout=0.3)) as running:
        slow = SlowDevice(running.url)
        try:
            await slow.handshake()
            for n in range(30):  # some 300 KB of replies: under the cut-off, over any buffer
                slow.protocol.send_text(request("rpc.discover", n).encode())
            await slow.flush()
            await asyncio.sleep(0.2)
            assert await metric(running, 'messenger_connections{state="anonymous"}') == 1
            await asyncio.sleep(1.0)
            assert await metric(running, 'messenger_connections{state="anonymous"}') == 0
        finally:
            slow.close()


async def test_a_logged_in_reader_that_takes_nothing_is_cut_off(tmp_path: Path) -> None:
    """A device whose unsent events stay under the bound but that reads nothing at all
    for stall_timeout is cut off (its keepalive ping could never get out)."""
    config = config_in(
        tmp_path, stall_timeout=0.3, fsync=FsyncPolicy.NEVER, send_buffer_limit=16 * 2**20
    )
    stalled = 'messenger_connections_closed_total{reason="stalled"}'
    async with (
        run_server(config) as running,
        user_device(running.url, "alice") as alice,
        slow_device(running.url, "carol"),
    ):
        # Past what the kernel's buffers take (a few MB on loopback), under the bound.
        for n in range(3000):
            await alice.call("send", chat="general", text=f"{n:05d} " + "x" * 4000)
            if n % 50 == 0 and await metric(running, stalled):
                break
        for _ in range(40):
            if await metric(running, stalled):
                break
            await asyncio.sleep(0.05)
        assert await metric(running, stalled) == 1
        assert await metric(running, "messenger_slow_cutoffs_total") == 0
        assert (await alice.call("status"))["user"] == "alice"


# -- connection caps ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def websockets_open(url: str, count: int, **headers: str) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(connect(url, additional_headers=headers))
        yield


async def refused_with(url: str, **headers: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    return refused.value.response.status_code


async def test_connections_over_the_total_cap_get_503(tmp_path: Path) -> None:
    """With max_connections 3, a fourth connection (WebSocket or plain HTTP) is refused
    with 503; once one closes, a newcomer gets in."""
    async with run_server(config_in(tmp_path, max_connections=3)) as running:
        async with websockets_open(running.url, 2), connect(running.url):
            assert await refused_with(running.url) == 503
            assert (await http_get(running, "/healthz")).status == 503
        async with websockets_open(running.url, 2):
            assert (await http_get(running, "/healthz")).status == 200
        assert (
            await metric(running, 'messenger_connections_refused_total{reason="server_full"}') == 2
        )


async def test_connections_over_the_per_address_cap_get_503(tmp_path: Path) -> None:
    """With max_connections_per_address 2, a third from the same address is refused."""
    async with run_server(config_in(tmp_path, max_connections_per_address=2)) as running:
        async with websockets_open(running.url, 2):
            assert await refused_with(running.url) == 503
        async with websockets_open(running.url, 2):
            pass


@contextlib.asynccontextmanager
async def forwarded_device(
    url: str, *forwarded_for: str, register: bool = False
) -> AsyncIterator[Peer]:
    """alice logged in over a connection that says it forwards for ``forwarded_for``
    (an X-Forwarded-For line each)."""
    headers = [("X-Forwarded-For", value) for value in forwarded_for]
    async with connect(url, additional_headers=headers) as ws:
        peer = Peer(ws)
        try:
            if register:
                await peer.call("register", user="alice", password="password1")
            await peer.login("alice")
            yield peer
        finally:
            peer.reader.cancel()


async def test_a_trusted_proxy_is_counted_and_logged_by_its_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """From a trusted proxy, X-Forwarded-For names the client for the per-address cap
    and the log; from any other address the header is ignored."""
    caplog.set_level(logging.INFO, "messenger.server")
    trusted = config_in(
        tmp_path, trusted_proxies=frozenset({"127.0.0.1"}), max_connections_per_address=1
    )
    async with (
        run_server(trusted) as running,
        websockets_open(running.url, 1, **{"X-Forwarded-For": "1.2.3.4, 10.0.0.1"}),
    ):
        assert await refused_with(running.url, **{"X-Forwarded-For": "10.0.0.1"}) == 503
        async with forwarded_device(running.url, "10.0.0.2", register=True):
            pass
    assert "logged in on device" in caplog.text
    assert "from 10.0.0.2" in caplog.text
    caplog.clear()
    untrusted = config_in(tmp_path, max_connections_per_address=1)
    async with (
        run_server(untrusted) as running,
        forwarded_device(running.url, "10.0.0.1"),
    ):
        assert await refused_with(running.url, **{"X-Forwarded-For": "10.0.0.2"}) == 503
    assert "from 127.0.0.1" in caplog.text
    assert "10.0.0.1" not in caplog.text


# -- HTTP --------------------------------------------------------------------------


async def test_pipelined_http_requests_get_one_answer_and_no_traceback(
    running_server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Two GETs in one write: the first is answered, the second dropped, nothing logged
    as an error."""
    reader, writer = await asyncio.open_connection(running_server.host, running_server.port)
    one = f"GET /healthz HTTP/1.1\r\nHost: {running_server.host}\r\n\r\n"
    writer.write((one + one).encode())
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.count(b"HTTP/1.1") == 1
    assert response.endswith(b"\r\n\r\nok")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_repeated_headers_are_answered_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two Authorization lines on GET /files are no authorization (404); two
    X-Forwarded-For lines from a trusted proxy are one list. Nothing is logged as an
    error."""
    caplog.set_level(logging.INFO, "messenger.server")
    config = config_in(tmp_path, trusted_proxies=frozenset({"127.0.0.1"}))
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        reader, writer = await asyncio.open_connection(running.host, running.port)
        writer.write(
            f"GET /files/f0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n"
            f"Authorization: Bearer {alice.token}\r\n\r\n".encode()
        )
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 404 ")
        writer.close()
        async with forwarded_device(running.url, "10.0.0.9", "10.0.0.7"):
            pass
    assert "from 10.0.0.7" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def stored_file(peer: Peer, size: int) -> dict[str, Any]:
    content = bytes(range(256)) * (size // 256)
    begun = await peer.call("upload.begin", name="big.bin", size=len(content))
    step = begun["chunk_size"]
    for start in range(0, len(content), step):
        data = base64.b64encode(content[start : start + step]).decode()
        await peer.call("upload.chunk", upload=begun["upload"], data=data)
    file: dict[str, Any] = (await peer.call("upload.finish", upload=begun["upload"]))["file"]
    return file


async def open_download(running: Running, peer: Peer, file_id: str) -> socket.socket:
    """A GET /files/{id} on a socket with a small receive buffer that reads nothing yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (running.host, running.port))
    await loop.sock_sendall(
        sock,
        f"GET /files/{file_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {peer.token}\r\n"
        "\r\n".encode(),
    )
    return sock


def download_config(tmp_path: Path, **changes: Any) -> Config:
    return config_in(tmp_path, **{"max_file_size": 8 * 2**20, "stall_timeout": 0.3, **changes})


async def test_a_slow_reader_gets_the_whole_file_however_long_it_takes(tmp_path: Path) -> None:
    """A download read a little at a time, for many times stall_timeout, is complete."""
    async with (
        run_server(download_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        stored = await stored_file(alice, 256 * 2**10)
        sock = await open_download(running, alice, stored["id"])
        loop = asyncio.get_running_loop()
        received = b""
        try:
            while True:
                await asyncio.sleep(0.05)
                piece = await asyncio.wait_for(loop.sock_recv(sock, 8192), 5)
                if not piece:
                    break
                received += piece
        finally:
            sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert f"Content-Length: {stored['size']}".encode() in head
        assert len(body) == stored["size"]
        assert body == bytes(range(256)) * (stored["size"] // 256)


async def test_a_download_nobody_reads_is_cut_off_and_frees_its_slot(tmp_path: Path) -> None:
    """A reader that takes nothing for stall_timeout is cut off; while it held the only
    download slot, another download got 503."""
    config = download_config(tmp_path, max_downloads=1)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        stored = await stored_file(alice, 6 * 2**20)
        sock = await open_download(running, alice, stored["id"])
        try:
            await asyncio.sleep(0.1)
            assert await metric(running, "messenger_downloads_in_progress") == 1
            headers = {"Authorization": f"Bearer {alice.token}"}
            busy = await http_get(running, f"/files/{stored['id']}", headers)
            assert busy.status == 503
            for _ in range(100):
                if not await metric(running, "messenger_downloads_in_progress"):
                    break
                await asyncio.sleep(0.05)
            assert await metric(running, "messenger_downloads_in_progress") == 0
            stalled = 'messenger_connections_closed_total{reason="download_stalled"}'
            assert await metric(running, stalled) == 1
        finally:
            sock.close()


async def test_one_user_cannot_take_every_download_slot(tmp_path: Path) -> None:
    """A user with 4 downloads that read nothing gets 503 for a fifth; another user's
    download of the same file goes through."""
    async with (
        run_server(download_config(tmp_path, stall_timeout=30), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        stored = await stored_file(alice, 6 * 2**20)
        await alice.call("send", chat="general", text="", file=stored["id"])
        held = [await open_download(running, alice, stored["id"]) for _ in range(4)]
        try:
            for _ in range(100):
                if await metric(running, "messenger_downloads_in_progress") == 4:
                    break
                await asyncio.sleep(0.02)
            path = f"/files/{stored['id']}"
            refused = await http_get(running, path, {"Authorization": f"Bearer {alice.token}"})
            assert refused.status == 503
            served = await http_get(running, path, {"Authorization": f"Bearer {bob.token}"})
            assert served.status == 200
            assert len(served.body) == stored["size"]
        finally:
            for sock in held:
                sock.close()


# -- the operator's view -----------------------------------------------------------


async def test_no_secret_reaches_the_log_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Passwords, tokens and join links appear nowhere in the log at DEBUG: not in frame
    dumps, not in headers."""
    caplog.set_level(logging.DEBUG, "messenger.server")
    password = "sw0rdfish-secret"
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        connected(running.url) as alice,
        user_device(running.url, "bob") as bob,
    ):
        await alice.call("register", user="alice", password=password)
        await alice.login("alice", password)
        assert alice.token is not None
        async with connected(running.url) as again:
            await again.call("login", user="alice", token=alice.token)
        group = (await alice.call("chat.create", title="club"))["chat"]["id"]
        link = (await alice.call("chat.link", chat=group))["link"]
        await bob.call("chat.join", link=link)
        await http_get(running, "/files/f0", {"Authorization": f"Bearer {alice.token}"})
    assert "login" in caplog.text  # frames are still dumped
    for secret in (password, alice.token, bob.token, link):
        assert secret is not None
        assert secret not in caplog.text
        assert secret[-12:] not in caplog.text  # not even the tail of an elided dump


async def test_metrics_in_prometheus_text_format(tmp_path: Path) -> None:
    """GET /metrics counts logins by result, events, fsyncs, fan-out and connections."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        async with connected(running.url) as wrong:
            with contextlib.suppress(Exception):
                await wrong.call("login", user="alice", password="not the password")
        await alice.call("send", chat="general", text="hello")
        reply = await http_get(running, "/metrics")
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = reply.body.decode()
        assert "# TYPE messenger_fsync_seconds histogram" in text
        assert await metric(running, 'messenger_logins_total{result="ok"}') == 1
        assert await metric(running, 'messenger_logins_total{result="failed"}') == 1
        assert await metric(running, 'messenger_rpc_errors_total{code="-32001"}') == 1
        assert await metric(running, "messenger_events_appended_total") >= 3
        assert await metric(running, "messenger_fsync_seconds_count") >= 1
        assert await metric(running, "messenger_fanout_bytes_total") > 0
        assert await metric(running, 'messenger_connections{state="logged_in"}') == 1


async def test_metrics_are_for_this_machine_or_a_bearer_of_the_token(tmp_path: Path) -> None:
    """Without --metrics-token, /metrics answers clients on this machine only (a client
    behind a trusted proxy counts as where it is); with one, only `Bearer <token>`,
    from anywhere. Before, anyone who could reach the port read the figures."""
    remote = {"X-Forwarded-For": "203.0.113.9"}
    config = dataclasses.replace(config_in(tmp_path), trusted_proxies=frozenset({"127.0.0.1"}))
    async with run_server(config, Clock()) as running:
        assert (await http_get(running, "/metrics")).status == 200  # this machine
        refused = await http_get(running, "/metrics", remote)
        assert refused.status == 403
        assert b"--metrics-token" in refused.body
    config = dataclasses.replace(config, metrics_token="s3cret-token")
    async with run_server(config, Clock()) as running:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            reply = await http_get(running, "/metrics", headers)
            assert reply.status == 401, headers
            assert reply.headers["www-authenticate"].startswith("Bearer")
        right = {**remote, "Authorization": "Bearer s3cret-token"}
        reply = await http_get(running, "/metrics", right)
        assert reply.status == 200
        assert b"messenger_connections" in reply.body
    assert parse_args(["--metrics-token", "t0ken"]).metrics_token == "t0ken"


async def test_metrics_count_an_ipv4_mapped_loopback_client_as_this_machine(
    tmp_path: Path,
) -> None:
    """A dual-stack proxy names a client of this machine ``::ffff:127.0.0.1``: that is
    this machine, as ``127.0.0.1`` and ``::1`` are; ``::ffff:`` before another address
    is not. On main the first got 403 (Python 3.11's ``is_loopback`` says False)."""
    config = dataclasses.replace(config_in(tmp_path), trusted_proxies=frozenset({"127.0.0.1"}))
    async with run_server(config, Clock()) as running:
        for client, status in [
            ("::ffff:127.0.0.1", 200),
            ("::1", 200),
            ("::ffff:203.0.113.9", 403),
            ("::ffff:7f00:1", 200),
        ]:
            reply = await http_get(running, "/metrics", {"X-Forwarded-For": client})
            assert reply.status == status, client


# -- file descriptors ----------------------------------------------------------------


async def raw_get(url: str, path: str = "/healthz") -> bytes:
    """A GET on a new connection; the response, or b"" if none came within 2 s."""
    uri = parse_uri(url)
    reader, writer = await asyncio.open_connection(uri.host, uri.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 2)
    except (TimeoutError, ConnectionError):
        return b""
    finally:
        writer.close()


async def serves_again(url: str) -> bool:
    """Whether GET /healthz is answered ok within 5 s."""
    for _ in range(50):
        if (await raw_get(url)).endswith(b"\r\n\r\nok"):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_the_connection_cap_follows_the_fd_limit(tmp_path: Path) -> None:
    """The server raises its fd limit to the hard limit and caps connections below it,
    keeping fds in reserve: over the cap, a newcomer gets 503 before its request."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 4096)
    async with server_process(tmp_path / "state", open_files=(300, hard)) as server:
        assert f"up to {hard - FD_RESERVE} connections, 256 per address" in server.errors()
    async with server_process(tmp_path / "state", open_files=(300, 300)) as server:
        assert f"up to {300 - FD_RESERVE} connections" in server.errors()
        uri = parse_uri(server.url)
        held = [await asyncio.open_connection(uri.host, uri.port) for _ in range(300 - FD_RESERVE)]
        try:
            assert (await raw_get(server.url)).startswith(b"HTTP/1.1 503 Service Unavailable")
        finally:
            for _, writer in held:
                writer.close()
        assert await serves_again(server.url)


async def test_running_out_of_fds_is_logged_once_and_the_server_goes_on(tmp_path: Path) -> None:
    """With a cap above the fd limit, accepts fail for want of fds: one log line, no
    traceback, and the server serves again once connections go."""
    async with server_process(
        tmp_path / "state", "--max-connections", "1000", open_files=(100, 100)
    ) as server:
        uri = parse_uri(server.url)
        held = [await asyncio.open_connection(uri.host, uri.port) for _ in range(150)]
        await asyncio.sleep(2.5)  # the accept loop retries every second
        try:
            errors = server.errors()
            assert errors.count("cannot accept connections") == 1
            assert "Traceback" not in errors
        finally:
            for _, writer in held:
                writer.close()
        assert await serves_again(server.url)
        assert server.process.returncode is None


# -- the command line ----------------------------------------------------------------

LIMIT_FLAGS = (
    "--login-timeout",
    "--max-connections",
    "--max-connections-per-address",
    "--trusted-proxy",
)


def test_limit_flags_reach_the_config() -> None:
    """The abuse-limit flags set the config; --trusted-proxy repeats and normalizes."""
    config = parse_args(
        [
            "--login-timeout",
            "2.5",
            "--max-connections",
            "10",
            "--max-connections-per-address",
            "3",
            "--trusted-proxy",
            "10.0.0.1",
            "--trusted-proxy",
            "0:0::1",
        ]
    )
    assert config.login_timeout == 2.5
    assert config.max_connections == 10
    assert config.max_connections_per_address == 3
    assert config.trusted_proxies == {"10.0.0.1", "::1"}
    defaults = parse_args([])
    assert (defaults.login_timeout, defaults.max_connections) == (20.0, None)
    assert (defaults.max_connections_per_address, defaults.trusted_proxies) == (256, frozenset())


@pytest.mark.parametrize(
    "bad",
    [
        ["--trusted-proxy", "proxy.example"],
        ["--login-timeout", "0"],
        ["--login-timeout", "nan"],
        ["--max-connections", "0"],
        ["--max-connections-per-address", "-1"],
    ],
)
def test_bad_limit_flags_are_usage_errors(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value is one argparse line and exit status 2."""
    with pytest.raises(SystemExit) as exited:
        parse_args(bad)
    assert exited.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_limit_flags_are_documented(capsys: pytest.CaptureFixture[str]) -> None:
    """Each abuse-limit flag is in --help, the README and protocol.md."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    protocol = (root / "protocol.md").read_text()
    for flag in LIMIT_FLAGS:
        assert flag in help_text
        assert flag in readme
        assert f"| `{flag}` |" in protocol


# -- refusals to start ----------------------------------------------------------------


@pytest.mark.parametrize("skip", [None, 5], ids=["not-an-event", "cursor-out-of-sequence"])
async def test_an_invalid_record_is_refused_in_one_line_naming_its_offset(
    skip: int | None, tmp_path: Path
) -> None:
    """A well-formed record the replay cannot take (not an event, or a real event whose
    cursor skips ahead): exit 1, one line naming the file and the record's offset."""
    state = tmp_path / "state"
    async with run_server(config_in(tmp_path)) as running, user_device(running.url, "alice"):
        pass
    log_path = state / LOG_FILE
    offset = log_path.stat().st_size
    last = decode_record(log_path.read_bytes().splitlines(keepends=True)[-1])
    assert last is not None
    record = {"type": "NoSuchEvent", "c": last["c"] + 1}
    if skip is not None:
        record = {**last, "c": last["c"] + skip}
    with log_path.open("ab") as file:
        file.write(encode_record(record))
    code, stderr = await run_cli(state)
    assert code == 1
    assert "Traceback" not in stderr
    refusal = [line for line in stderr.splitlines() if "cannot run" in line]
    assert len(refusal) == 1
    assert str(log_path) in refusal[0]
    assert f"byte offset {offset}" in refusal[0]
