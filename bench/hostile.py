"""Hostile clients against one server: what each pattern costs the server and a
legitimate user.

Starts the messenger (``python -m server``) as its own process with ``ulimit -n 1024``
(the limit the attacks of issue 8 were measured with), then replays, one after the
other, each for ``--seconds``:

- ``big-frames``: connections that never log in and never read, sending 1 MiB frames
  of ``[[],[],...]`` and of odd method names as fast as the server takes them;
- ``idle``: idle connections that never log in (bare TCP and WebSocket), more than
  the per-address cap;
- ``downloads``: ``GET /files/{id}`` of a 5 MiB file by readers that never read;
- ``nested``: JSON nested 1,000 deep inside ``jsonrpc``, and pipelined HTTP GETs;
- ``slow-download``: one honest reader of a 5 MiB file at 256 KiB/s (longer than the
  old 10 s deadline): does it get every byte?

Attackers connect from 127.0.0.2 and up, the legitimate user from 127.0.0.1 (each a
client address of its own on Linux's loopback). For each pattern it prints the
server's RSS (before, peak, after the attackers are gone), the legitimate user's
token login + send round trip (p50/p99, failures) while it runs, what the server
refused (from ``/metrics``), and whether the server is still running. Loopback only,
every count and every phase bounded; asserts nothing.

    .venv/bin/python bench/hostile.py                    # every pattern, 8 s each
    .venv/bin/python bench/hostile.py --only idle --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

PASSWORD = "password1"
LISTENING = re.compile(rb"listening on ws://([\d.]+):(\d+)/")
FILE_SIZE = 5 * 2**20
MiB = 2**20


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    stderr: Path

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def cpu(self) -> float:
        """CPU seconds the server process has used (user and system)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        """Resident set size of the server process, in bytes (0 once it is gone)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(found[1]) * 1024 if found else 0


@contextlib.contextmanager
def server_process(state: Path, nofile: int) -> Any:
    stderr = state.parent / "server.err"
    command = [sys.executable, "-m", "server", "--port", "0", "--state-dir", str(state)]
    script = f'ulimit -n {nofile} && exec "$@"'
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            ["sh", "-c", script, "sh", *command], stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = LISTENING.search(line)
        if found is None:
            raise SystemExit(f"the server did not start: {stderr.read_text()}")
        yield Server(process, found[1].decode(), int(found[2]), stderr)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- a client of our own ---------------------------------------------------------------


async def call(ws: ClientConnection, request_id: int, method: str, **params: Any) -> Any:
    await ws.send(
        orjson.dumps(
            {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
        ).decode()
    )
    while True:
        reply = orjson.loads(await ws.recv())
        if isinstance(reply, dict) and reply.get("id") == request_id:
            if "error" in reply:
                raise RuntimeError(reply["error"])
            return reply["result"]


async def account(url: str, user: str) -> str:
    """Register ``user``; a device token of it."""
    async with connect(url, max_size=MiB) as ws:
        await call(ws, 1, "register", user=user, password=PASSWORD)
        token: str = (await call(ws, 2, "login", user=user, password=PASSWORD))["token"]
        return token


async def upload(url: str, user: str, token: str, size: int) -> str:
    async with connect(url, max_size=MiB) as ws:
        await call(ws, 1, "login", user=user, token=token)
        begun = await call(ws, 2, "upload.begin", name="big.bin", size=size)
        step = begun["chunk_size"]
        content = os.urandom(size)
        for n, start in enumerate(range(0, size, step), start=3):
            data = base64.b64encode(content[start : start + step]).decode()
            await call(ws, n, "upload.chunk", upload=begun["upload"], data=data)
        file_id: str = (await call(ws, 0, "upload.finish", upload=begun["upload"]))["file"]["id"]
        return file_id


async def metrics(server: Server) -> dict[str, float]:
    response = await http(server, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    values = {}
    for line in response.partition(b"\r\n\r\n")[2].decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def http(server: Server, request: str, source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port, local_addr=(source, 0))
    try:
        writer.write(request.encode())
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@dataclass
class Legitimate:
    """A user who logs in with its token on a fresh connection and sends a direct
    message, again and again: the round trips while an attack runs."""

    url: str
    token: str
    times: list[float] = field(default_factory=list)
    failures: int = 0
    process: asyncio.subprocess.Process | None = None

    async def run(self, stop: asyncio.Future[None]) -> None:
        ids = itertools.count(1)
        while not stop.done():
            began = time.perf_counter()
            try:
                async with (
                    asyncio.timeout(5),
                    connect(self.url, max_size=MiB, local_addr=("127.0.0.1", 0)) as ws,
                ):
                    await call(ws, next(ids), "login", user="alice", token=self.token)
                    await call(ws, next(ids), "send", user="bob", text="still here?")
                self.times.append(time.perf_counter() - began)
            except Exception:
                self.failures += 1
            await asyncio.sleep(0.05)

    @classmethod
    async def elsewhere(cls, url: str, token: str) -> Legitimate:
        """The user as its own process (``--role legitimate``), so that the attackers'
        work in this process does not count in its round trips; it runs until its
        stdin closes, then prints its round trips."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role",
            "legitimate",
            url,
            token,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        user = cls(url, token)
        user.process = process
        return user

    async def finish(self) -> None:
        process = self.process
        assert process is not None
        assert process.stdin is not None
        process.stdin.close()
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        self.times, self.failures = orjson.loads(out)

    def summary(self) -> str:
        if not self.times:
            return f"no round trip succeeded ({self.failures} failed)"
        ordered = sorted(self.times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"login+send p50 {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms ({len(ordered)} ok, {self.failures} failed)"
        )


# -- the patterns ------------------------------------------------------------------------


def attacker(n: int) -> str:
    """The n-th attacking client address: 127.0.0.2 and up."""
    return f"127.0.{n // 250}.{2 + n % 250}"


async def quiet(server: Server, seconds: float, context: dict[str, Any]) -> str:
    await asyncio.sleep(seconds)
    return "no attack: the legitimate user alone, for comparison"


async def big_frames(server: Server, seconds: float, context: dict[str, Any]) -> str:
    frames = [
        "[" + ",".join(["[]"] * (MiB // 3 - 1)) + "]",
        orjson.dumps({"jsonrpc": "2.0", "method": "m" * (MiB - 64), "id": 1}).decode(),
    ]
    sent = 0

    async def flood(n: int) -> None:
        nonlocal sent
        with contextlib.suppress(Exception):
            async with connect(
                server.url, max_size=None, max_queue=1, local_addr=(attacker(n), 0)
            ) as ws:
                while True:
                    await ws.send(frames[sent % 2])
                    sent += 1

    tasks = [asyncio.create_task(flood(n)) for n in range(context["connections"])]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return f"{context['connections']} connections sent {sent} frames of 1 MiB"


async def raw_socket(
    server: Server, source: str, receive_buffer: int | None = None, send: bytes = b""
) -> socket.socket | None:
    """A TCP connection from ``source`` that has sent ``send``; None if it failed."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    sock.bind((source, 0))
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (server.host, server.port)), 2)
        await loop.sock_sendall(sock, send)
    except (OSError, TimeoutError):
        sock.close()
        return None
    return sock


def file_request(context: dict[str, Any]) -> bytes:
    return (
        f"GET /files/{context['file']} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {context['mallory']}\r\n\r\n"
    ).encode()


async def hold(server: Server, seconds: float, count: int, **options: Any) -> int:
    """``count`` connections made by ``raw_socket(**options)``, held for ``seconds``;
    how many could be opened."""
    held = [await raw_socket(server, **options) for _ in range(count)]
    await asyncio.sleep(seconds)
    for sock in held:
        if sock is not None:
            sock.close()
    return sum(sock is not None for sock in held)


async def idle(server: Server, seconds: float, context: dict[str, Any]) -> str:
    count = context["connections"]
    opened = await hold(server, seconds, count, source="127.0.0.2")
    return f"{count} idle TCP connections from one address ({count - opened} not opened)"


async def downloads(server: Server, seconds: float, context: dict[str, Any]) -> str:
    count = context["connections"]
    opened = await hold(
        server, seconds, count, source="127.0.0.2", receive_buffer=4096, send=file_request(context)
    )
    return f"{opened} downloads of a 5 MiB file, from one address, that never read"


async def nested(server: Server, seconds: float, context: dict[str, Any]) -> str:
    deep = '{"jsonrpc":' + "[" * 1000 + "]" * 1000 + ',"method":"status","id":1}'
    answered = closed = 0
    deadline = time.monotonic() + seconds
    one = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            async with connect(server.url, local_addr=("127.0.0.2", 0)) as ws:
                for _ in range(20):
                    await ws.send(deep)
                    reply = orjson.loads(await ws.recv())
                    answered += reply["error"]["code"] == -32600
        response = await http(server, one + one, "127.0.0.3")
        closed += response.count(b"HTTP/1.1") == 1
    return f"{answered} nested frames answered -32600; {closed} pipelined pairs answered once"


async def slow_download(server: Server, seconds: float, context: dict[str, Any]) -> str:
    del seconds  # as long as 5 MiB takes at 256 KiB/s
    sock = await raw_socket(server, "127.0.0.4", 16384, file_request(context))
    if sock is None:
        return "could not connect"
    loop = asyncio.get_running_loop()
    received = bytearray()
    began = time.monotonic()
    try:
        while time.monotonic() - began < 60:
            await asyncio.sleep(1 / 16)
            piece = await asyncio.wait_for(loop.sock_recv(sock, 16384), 10)
            if not piece:
                break
            received += piece
    except (OSError, TimeoutError) as error:
        return f"failed after {time.monotonic() - began:.1f} s: {error!r}"
    finally:
        sock.close()
    body = bytes(received).partition(b"\r\n\r\n")[2]
    return (
        f"an honest reader at 256 KiB/s got {len(body)} of {FILE_SIZE} bytes "
        f"in {time.monotonic() - began:.1f} s"
    )


Pattern = Callable[[Server, float, dict[str, Any]], Coroutine[Any, Any, str]]
PATTERNS: dict[str, tuple[Pattern, dict[str, Any]]] = {
    "baseline": (quiet, {}),
    "big-frames": (big_frames, {"connections": 3}),
    "idle": (idle, {"connections": 1000}),
    "downloads": (downloads, {"connections": 200}),
    "nested": (nested, {}),
    "slow-download": (slow_download, {}),
}
REFUSALS = re.compile(r"messenger_(connections_refused|connections_closed|slow_cutoffs|fd_exh)")


async def replay(server: Server, names: list[str], seconds: float) -> None:
    alice = await account(server.url, "alice")
    await account(server.url, "bob")
    mallory = await account(server.url, "mallory")
    file_id = await upload(server.url, "mallory", mallory, FILE_SIZE)
    print(
        f"server pid {server.process.pid}, RSS at start {server.rss() / MiB:.1f} MiB, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name in names:
        pattern, context = PATTERNS[name]
        context = {**context, "file": file_id, "mallory": mallory}
        before_metrics = await metrics(server)
        before = server.rss()
        cpu_before, began = server.cpu(), time.monotonic()
        legitimate = await Legitimate.elsewhere(server.url, alice)
        peak = before
        attack = asyncio.create_task(pattern(server, seconds, context))
        while not attack.done():
            peak = max(peak, server.rss())
            await asyncio.sleep(0.1)
        what = await attack
        cpu = (server.cpu() - cpu_before) / (time.monotonic() - began)
        await legitimate.finish()
        await asyncio.sleep(2)  # connections gone, buffers freed
        after = server.rss()
        now = await metrics(server)
        refused = {
            key: now[key] - before_metrics.get(key, 0)
            for key in now
            if REFUSALS.match(key) and now[key] != before_metrics.get(key, 0)
        }
        alive = "running" if server.process.poll() is None else f"EXITED {server.process.poll()}"
        print(f"\n[{name}] {what}")
        print(
            f"  RSS {before / MiB:.1f} -> peak {peak / MiB:.1f} -> after {after / MiB:.1f} MiB "
            f"(+{(peak - before) / MiB:.1f} MiB at peak); server CPU {cpu:.0%} of a core"
        )
        print(f"  legitimate user: {legitimate.summary()}")
        shown = ", ".join(f"{key} +{value:.0f}" for key, value in refused.items()) or "nothing"
        print(f"  refused or cut: {shown}")
        print(f"  server: {alive}")
    errors = server.stderr.read_text()
    print(f"\nserver log: {len(errors)} bytes, {errors.count('Traceback')} tracebacks")


async def legitimate_user(url: str, token: str) -> None:
    """``--role legitimate``: round trips until stdin closes; then them, as JSON."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def wait_for_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set_result, None)

    loop.run_in_executor(None, wait_for_stdin)
    user = Legitimate(url, token)
    await user.run(stop)
    sys.stdout.write(orjson.dumps([user.times, user.failures]).decode())


def main() -> None:
    if sys.argv[1:2] == ["--role"]:
        _, _, role, url, token = sys.argv
        assert role == "legitimate"
        asyncio.run(legitimate_user(url, token))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per pattern")
    parser.add_argument(
        "--only", choices=list(PATTERNS), action="append", help="a pattern (repeatable)"
    )
    parser.add_argument("--nofile", type=int, default=1024, help="the server's fd limit")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="messenger-hostile-"))
    try:
        with server_process(workdir / "state", args.nofile) as server:
            asyncio.run(replay(server, args.only or list(PATTERNS), args.seconds))
    finally:
        if os.environ.get("KEEP"):
            print(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
