"""Fan-out benchmark: one sender, N devices in the general chat, every message to all.

Starts the messenger (``python -m server``) as its own process, then the load as
other processes: one sender device that keeps ``--window`` sends in flight, and
``--receiver-procs`` processes holding the other devices. Each message's text
starts with the sender's ``time.monotonic_ns()`` (one clock for every process on
a Linux machine), so each device measures send-to-delivery latency.

Then the same load runs against a bare websockets server (this script with
``--role bare-server``): on each request it calls ``websockets.broadcast`` to
every connection with a frame of the same JSON shape, and replies. The ratio of
the two delivery rates is what the messenger's work (validation, state, the
durable log, per-device bookkeeping) costs over the fan-out itself.

Only 127.0.0.1; every phase has a time limit; every process is stopped at the end.
Prints figures; asserts nothing.

    .venv/bin/python bench/fanout.py                   # 200 devices, 2000 messages, fsync always
    .venv/bin/python bench/fanout.py --fsync batch --devices 100 --messages 500
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.utils import accept_key, generate_key

PASSWORD = "password1"
LISTENING = re.compile(rb"listening on (ws://\S+)")
TARGET_RATIO = 0.70
Pipe = multiprocessing.connection.Connection


# -- the load's WebSocket client -----------------------------------------------
#
# websockets' own client spends more CPU per received frame than its server
# spends per sent one; with two cores, receivers built on it would measure
# themselves. This client does only what the bench needs of RFC 6455: the
# opening handshake (section 4.1), masked frames out (5.3, serialized by
# websockets.frames), unmasked unfragmented frames in, pong and close replies.


class ProtocolFailure(Exception):
    """The server said something this minimal client does not expect."""


# A message event as both servers encode it (orjson, keys in this order): its
# text starts with the send's monotonic_ns. Other frames take the JSON path.
MESSAGE_PREFIX = b'{"jsonrpc":"2.0","method":"message","params":{"message":{'
TEXT_KEY = b'"text":"'
READ_BUFFER = 2**16
TEXT, CLOSE, PING, PONG = int(Opcode.TEXT), int(Opcode.CLOSE), int(Opcode.PING), Opcode.PONG


class Device(asyncio.BufferedProtocol):
    """One device's connection. Each message event goes to ``on_message`` with the
    time its send started and the monotonic time its bytes arrived; other pushes go
    to ``_text``; replies resolve the futures of ``request``."""

    def __init__(self, on_message: Callable[[int, int], None]) -> None:
        self.on_message = on_message
        self.key = generate_key()
        self.transport: asyncio.Transport | None = None
        # Read into one buffer (no allocation per read): [start, end) is unparsed.
        self.buffer = bytearray(READ_BUFFER)
        self.view = memoryview(self.buffer)
        self.start = 0
        self.end = 0
        self.upgraded = False
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}

    @classmethod
    async def connect(cls, host: str, port: int, on_message: Callable[[int, int], None]) -> Device:
        loop = asyncio.get_running_loop()
        _, device = await loop.create_connection(lambda: cls(on_message), host, port)
        await device.opened
        return device

    # -- asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        transport.write(
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buffer) - self.end < 4096:
            unparsed = self.end - self.start
            if self.start >= 4096:  # same-size slice assignment: allowed while exported
                self.buffer[:unparsed] = self.buffer[self.start : self.end]
            else:  # a frame larger than the buffer: a bigger one
                self.buffer = self.buffer[self.start : self.end] + bytes(2 * len(self.buffer))
                self.view = memoryview(self.buffer)
            self.start, self.end = 0, unparsed
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        now = time.monotonic_ns()  # every frame of this read arrived by now
        self.end += nbytes
        try:
            if not self.upgraded and not self._read_handshake():
                return
            self._read_frames(now)
        except ProtocolFailure as failure:
            if not self.opened.done():
                self.opened.set_exception(failure)
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        for reply in self.replies.values():
            if not reply.done():
                reply.set_exception(ConnectionError("connection lost"))

    # -- frames

    def _read_handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n", self.start, self.end)
        if end < 0:
            return False
        head = bytes(self.buffer[self.start : end]).decode("latin-1").split("\r\n")
        self.start = end + 4
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if head[0].split(" ")[1:2] != ["101"]:
            raise ProtocolFailure(f"Expected 101 Switching Protocols, but got {head[0]!r}")
        if headers.get("sec-websocket-accept") != accept_key(self.key):
            raise ProtocolFailure("Expected a matching Sec-WebSocket-Accept, but got another")
        self.upgraded = True
        self.opened.set_result(None)
        return True

    def _read_frames(self, now: int) -> None:
        buffer = self.buffer
        size = self.end
        at = self.start
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            if second & 0x80 or not first & 0x80:
                raise ProtocolFailure("Expected an unmasked final frame from the server")
            length = second & 0x7F
            start = at + 2
            if length == 126:
                start = at + 4
                length = int.from_bytes(buffer[at + 2 : start], "big")
            elif length == 127:
                start = at + 10
                length = int.from_bytes(buffer[at + 2 : start], "big")
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == TEXT:
                if buffer.startswith(MESSAGE_PREFIX, start, end):
                    text = buffer.index(TEXT_KEY, start, end) + len(TEXT_KEY)
                    sent = int(buffer[text : buffer.index(b" ", text, end)])
                    self.on_message(sent, now)
                else:
                    self._text(orjson.loads(buffer[start:end]), now)
            elif opcode == PING:
                self._write(PONG, bytes(buffer[start:end]))
            elif opcode == CLOSE:
                self._write(Opcode.CLOSE, bytes(buffer[start : start + 2]))
                self._abort()
            at = end
        if at == size:
            self.start = self.end = 0
        else:
            self.start = at

    def _text(self, message: dict[str, Any], now: int) -> None:
        if message.get("method") == "message":
            text: str = message["params"]["message"]["text"]
            self.on_message(int(text[: text.index(" ")]), now)
            return
        reply = self.replies.pop(message.get("id", 0), None)
        if reply is not None and not reply.done():
            reply.set_result(message)

    def _write(self, opcode: Opcode, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(Frame(opcode, data).serialize(mask=True))

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- JSON-RPC

    def request(self, method: str, params: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a request; the future gets the whole reply (``result`` or ``error``)."""
        request_id = next(self.ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = reply
        frame = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
        self._write(Opcode.TEXT, orjson.dumps(frame))
        return reply

    async def call(self, method: str, **params: Any) -> Any:
        reply = await self.request(method, params)
        if "error" in reply:
            raise ProtocolFailure(f"{method} failed: {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        """Close handshake (RFC 6455 section 7.1.2), then the TCP connection."""
        self._write(Opcode.CLOSE, (1000).to_bytes(2, "big"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), 2)
        self._abort()


# -- the load: one process per group of devices ------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What one load process does; plain values, pickled to a spawned process."""

    host: str
    port: int
    login: bool  # register and log in (the messenger) or just connect (bare)
    users: tuple[tuple[str, int], ...]  # (user name, devices of that user)
    send: bool  # this process's single device is the sender
    messages: int
    window: int
    rate: float  # messages per second; 0 = as fast as the window allows
    text_bytes: int
    client_id: bool
    setup_concurrency: int
    timeout: float
    cpus: frozenset[int]  # where this process may run; empty: anywhere


class Deliveries:
    """The deliveries of one round to this process's devices: how many, when, and
    how long after their send."""

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0
        self.last = 0
        self.latencies = array.array("q")
        self.all_arrived = asyncio.Event()

    def on_message(self, sent: int, now: int) -> None:
        self.latencies.append(now - sent)
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.all_arrived.set()


def run_load(plan: Plan, pipe: Pipe) -> None:
    """A spawned process's body. Tells the controller ``ready``, then per ``go`` runs
    a round (``sent``, ``delivered``) until ``end``, and ``report``s; ``quit`` ends."""
    try:
        asyncio.run(_load(plan, pipe))
    except BaseException as error:
        pipe.send({"kind": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    finally:
        pipe.close()


async def _load(plan: Plan, pipe: Pipe) -> None:
    if plan.cpus:
        os.sched_setaffinity(0, plan.cpus)
    loop = asyncio.get_running_loop()
    deliveries = Deliveries()
    devices: list[Device] = []
    started = time.perf_counter()
    room = asyncio.Semaphore(plan.setup_concurrency)

    def delivered(sent: int, now: int) -> None:
        deliveries.on_message(sent, now)  # the round's, whichever it is now

    async def set_up(user: str, count: int) -> None:
        async with room:
            if plan.login:
                first = await Device.connect(plan.host, plan.port, delivered)
                devices.append(first)
                await first.call("register", user=user, password=PASSWORD)
                await first.call("login", user=user, password=PASSWORD)
        for index in range(count - 1 if plan.login else count):
            async with room:
                device = await Device.connect(plan.host, plan.port, delivered)
                devices.append(device)
                if plan.login:
                    await device.call(
                        "login", user=user, password=PASSWORD, device_name=f"d{index}"
                    )

    told: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: told.put_nowait(pipe.recv()))
    try:
        async with asyncio.timeout(plan.timeout):
            await asyncio.gather(*(set_up(user, count) for user, count in plan.users))
        setup_seconds = time.perf_counter() - started
        # Armed before the controller can say go: the sender's first messages may
        # arrive here before this process has read its go.
        deliveries = Deliveries(plan.messages * len(devices))
        pipe.send({"kind": "ready", "devices": len(devices), "setup_seconds": setup_seconds})
        for number in itertools.count():
            if await told.get() != "go":
                return
            cpu_before = _cpu_seconds()
            sent: dict[str, Any] = {}
            if plan.send:
                async with asyncio.timeout(plan.timeout):
                    sent = await _send(plan, devices[0], number)
                pipe.send({"kind": "sent"})
            # The controller says ``end`` once every process is done or time is up.
            arrived = loop.create_task(deliveries.all_arrived.wait())
            end = loop.create_task(told.get())
            await asyncio.wait((arrived, end), return_when=asyncio.FIRST_COMPLETED)
            if arrived.done():
                pipe.send({"kind": "delivered"})
            await end
            arrived.cancel()
            pipe.send(
                {
                    "kind": "report",
                    "devices": len(devices),
                    "deliveries": deliveries.count,
                    "first": deliveries.first,
                    "last": deliveries.last,
                    "latencies": deliveries.latencies.tobytes(),
                    "lost": sum(1 for device in devices if device.closed.done()),
                    "cpu": _cpu_seconds() - cpu_before,
                    "setup_seconds": setup_seconds,
                    **sent,
                }
            )
            deliveries = Deliveries(plan.messages * len(devices))  # the next round's
    finally:
        loop.remove_reader(pipe.fileno())
        await asyncio.gather(*(device.close() for device in devices), return_exceptions=True)


async def _send(plan: Plan, device: Device, round_number: int) -> dict[str, Any]:
    """Send ``plan.messages`` to the general chat, ``plan.window`` in flight at most."""
    room = asyncio.Semaphore(plan.window)
    acks = array.array("q")
    errors: list[str] = []
    pending: set[asyncio.Future[dict[str, Any]]] = set()
    padding = "x" * max(0, plan.text_bytes - 20)

    def answered(sent_at: int, reply: asyncio.Future[dict[str, Any]]) -> None:
        room.release()
        pending.discard(reply)
        if reply.cancelled() or reply.exception() is not None:
            errors.append("connection lost")
        elif "error" in reply.result():
            errors.append(str(reply.result()["error"]))
        else:
            acks.append(time.monotonic_ns() - sent_at)

    first = time.monotonic_ns()
    for index in range(plan.messages):
        await room.acquire()
        if plan.rate > 0:
            due = first + int(index * 1e9 / plan.rate)
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
        sent_at = time.monotonic_ns()
        params: dict[str, Any] = {"chat": "general", "text": f"{sent_at} {padding}"}
        if plan.client_id:
            params["client_id"] = f"r{round_number}m{index}"
        reply = device.request("send", params)
        pending.add(reply)
        reply.add_done_callback(functools.partial(answered, sent_at))
    if pending:  # ``answered`` was added first, so it has run for each when this returns
        await asyncio.wait(pending)
    return {
        "first_send": first,
        "last_ack": time.monotonic_ns(),
        "sent": plan.messages,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "acks": acks.tobytes(),
    }


def machine_busy_seconds() -> float:
    """CPU-seconds every process on the machine has used since boot (proc(5), /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the servers -----------------------------------------------------------------


@dataclass(slots=True)
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].strip("/"))

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (proc(5), fields 14-15)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_server(
    name: str, command: list[str], stderr_path: Path, timeout: float, cpus: set[int]
) -> ServerProcess:
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    if cpus:  # before the interpreter is up: every thread it starts inherits this
        os.sched_setaffinity(process.pid, cpus)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            break
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    found = LISTENING.search(line)
    if found is None:
        process.kill()
        process.wait(10)
        process.stdout.close()
        raise SystemExit(
            f"{name} did not say where it listens within {timeout:.0f} s; stdout {line!r}; "
            f"stderr:\n{stderr_path.read_text(errors='replace')[-2000:]}"
        )
    return ServerProcess(name, process, found.group(1).decode(), stderr_path)


def bare_server() -> None:
    """``--role bare-server``: broadcast each request to every connection, reply."""

    async def main() -> None:
        connections: set[ServerConnection] = set()
        cursors = itertools.count(1)

        async def handler(connection: ServerConnection) -> None:
            connections.add(connection)
            try:
                async for frame in connection:
                    request = orjson.loads(frame)
                    if request["method"] != "send":  # "hello": the connection is in the set
                        reply = {"jsonrpc": "2.0", "id": request["id"], "result": {}}
                        await connection.send(orjson.dumps(reply), text=True)
                        continue
                    cursor = next(cursors)
                    now = time.time_ns() // 1_000_000
                    message = {
                        "id": secrets.token_hex(8),
                        "chat": "general",
                        "seq": cursor,
                        "author": "sender",
                        "text": request["params"]["text"],
                        "ts": now,
                        "expires_at": now + 3_600_000,
                        "file": None,
                        "comments": 0,
                    }
                    event = {"message": message, "cursor": cursor}
                    broadcast(
                        connections,
                        orjson.dumps({"jsonrpc": "2.0", "method": "message", "params": event}),
                        text=True,
                    )
                    reply = {"jsonrpc": "2.0", "id": request["id"], "result": {"message": message}}
                    await connection.send(orjson.dumps(reply), text=True)
            except ConnectionClosed:
                pass
            finally:
                connections.discard(connection)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=2**20) as server:
            port = server.sockets[0].getsockname()[1]
            print(f"bare-server listening on ws://127.0.0.1:{port}/", flush=True)
            await stop.wait()

    asyncio.run(main())


# -- the controller --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """One round against one server."""

    target: str
    devices: int
    deliveries: int
    expected: int
    seconds: float
    latencies: array.array[int]
    acks: array.array[int]
    errors: int
    first_error: str | None
    lost: int
    server_cpu: float
    load_cpu: float
    other_cpu: float  # everything else on the machine meanwhile: noise when large
    frames_per_write: float | None  # the messenger's /metrics: frames per connection write
    events_per_batch: float | None  # ... and events per fsync (--fsync always)

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_per_delivery(self) -> float:
        return self.server_cpu / max(1, self.deliveries)


def server_cpus(args: argparse.Namespace) -> set[int]:
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[:1]) if args.pin and len(cpus) > 1 else set()


def load_cpus(args: argparse.Namespace) -> set[int]:
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[1:]) if args.pin and len(cpus) > 1 else set()


def plans(args: argparse.Namespace, host: str, port: int, login: bool) -> list[Plan]:
    """The sender's process first, then the receivers', users spread evenly."""
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "login": login,
        "messages": args.messages,
        "window": args.window,
        "rate": args.rate,
        "text_bytes": args.text_bytes,
        "client_id": args.client_id,
        "setup_concurrency": args.setup_concurrency,
        "timeout": args.timeout,
        "cpus": frozenset(load_cpus(args)),
    }
    receivers = args.devices - 1
    users = [
        (f"user{i:04d}", min(args.devices_per_user, receivers - i * args.devices_per_user))
        for i in range(-(-receivers // args.devices_per_user))
    ]
    groups = [users[i :: args.receiver_procs] for i in range(args.receiver_procs)]
    return [Plan(users=(("sender", 1),), send=True, **common)] + [
        Plan(users=tuple(group), send=False, **common) for group in groups if group
    ]


@dataclass(slots=True)
class Rig:
    """One server with its load processes set up and waiting for a round."""

    target: str
    server: ServerProcess
    pipes: list[Pipe]
    setup_seconds: float


@contextlib.contextmanager
def rig(args: argparse.Namespace, target: str, work_dir: Path) -> Iterator[Rig]:
    """Start ``target``'s server and load processes; stop them all on the way out."""
    if target == "messenger":
        command = [sys.executable, "-m", "server", "--port", "0"]
        command += ["--state-dir", str(work_dir / "state"), "--fsync", args.fsync]
        # One sender sends thousands: the rate limit is not what is measured.
        command += ["--rate-limit", str(10**9), "--log-level", "WARNING"]
        # Nor are the limits against abuse: one address registers every user.
        command += ["--register-limit", "0", "--flood-rate", "0", "--max-live-bytes", "0"]
        command += ["--max-devices", str(10**6)]
    else:
        command = [sys.executable, __file__, "--role", "bare-server"]
    server = start_server(target, command, work_dir / f"{target}.stderr", 60, server_cpus(args))
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[multiprocessing.context.SpawnProcess, Pipe]] = []
    try:
        for plan in plans(args, "127.0.0.1", server.port, target == "messenger"):
            ours, theirs = context.Pipe()
            process = context.Process(target=run_load, args=(plan, theirs), daemon=True)
            process.start()
            theirs.close()
            workers.append((process, ours))
        pipes = [pipe for _, pipe in workers]
        ready = _expect(pipes, "ready", args.timeout)
        yield Rig(target, server, pipes, max(r["setup_seconds"] for r in ready))
        for pipe in pipes:
            pipe.send("quit")
    finally:
        for process, pipe in workers:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
            pipe.close()
        code = server.stop()
        if code != 0:
            print(f"  {target} exited with {code}")


def server_metrics(server: ServerProcess) -> dict[str, float]:
    """The messenger's GET /metrics, series by name (labels included); {} for bare."""
    if server.name != "messenger":
        return {}
    url = server.url.replace("ws://", "http://") + "metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines if not line.startswith("#"))
    }


def ratio_of(
    before: dict[str, float], after: dict[str, float], top: str, bottom: str
) -> float | None:
    below = after.get(bottom, 0.0) - before.get(bottom, 0.0)
    return (after.get(top, 0.0) - before.get(top, 0.0)) / below if below else None


def run_round(args: argparse.Namespace, rig: Rig) -> Result:
    server, pipes = rig.server, rig.pipes
    metrics_before = server_metrics(server)
    server_before = server.cpu_seconds()
    machine_before = machine_busy_seconds()
    for pipe in pipes:
        pipe.send("go")
    # Done: the sender has all its replies and every process all its deliveries.
    waiting = set(range(len(pipes)))
    sender_done = False
    deadline = time.monotonic() + args.timeout
    while (waiting or not sender_done) and time.monotonic() < deadline:
        for ready in multiprocessing.connection.wait(pipes, max(0, deadline - time.monotonic())):
            assert isinstance(ready, multiprocessing.connection.Connection)
            message = ready.recv()
            if message["kind"] == "failed":
                raise SystemExit(f"a load process failed: {message['error']}")
            if message["kind"] == "sent":
                sender_done = True
                # The replies are in: what is not delivered soon is not coming.
                deadline = min(deadline, time.monotonic() + args.drain)
            elif message["kind"] == "delivered":
                waiting.discard(pipes.index(ready))
    if waiting or not sender_done:
        print("  time is up: ending the round with what arrived")
    server_cpu = server.cpu_seconds() - server_before
    machine_cpu = machine_busy_seconds() - machine_before
    metrics_after = server_metrics(server)
    for pipe in pipes:
        pipe.send("end")
    reports = _expect(pipes, "report", 60)
    sender = reports[0]
    latencies = array.array("q")
    for report in reports:
        latencies.frombytes(report["latencies"])
    acks = array.array("q")
    acks.frombytes(sender["acks"])
    devices = sum(report["devices"] for report in reports)
    load_cpu = sum(report["cpu"] for report in reports)
    return Result(
        target=rig.target,
        devices=devices,
        deliveries=sum(report["deliveries"] for report in reports),
        expected=devices * args.messages,
        seconds=(max(report["last"] for report in reports) - sender["first_send"]) / 1e9,
        latencies=latencies,
        acks=acks,
        errors=sender["errors"],
        first_error=sender["first_error"],
        lost=sum(report["lost"] for report in reports),
        server_cpu=server_cpu,
        load_cpu=load_cpu,
        other_cpu=max(0.0, machine_cpu - server_cpu - load_cpu),
        frames_per_write=ratio_of(
            metrics_before,
            metrics_after,
            "messenger_fanout_frames_total",
            "messenger_fanout_writes_total",
        ),
        events_per_batch=ratio_of(
            metrics_before,
            metrics_after,
            "messenger_events_appended_total",
            "messenger_fsync_seconds_count",
        ),
    )


def counted_round(args: argparse.Namespace, rig: Rig) -> tuple[Result, int]:
    """A round with ``strace -c`` attached to the server: its figures are strace's as
    much as the server's, only the count of socket sends is kept."""
    output = rig.server.stderr_path.with_suffix(".strace")
    command = ["strace", "-c", "-f", "-e", "trace=sendto,sendmsg", "-o", str(output)]
    tracer = subprocess.Popen(
        [*command, "-p", str(rig.server.process.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # attached to every thread
    try:
        result = run_round(args, rig)
    finally:
        tracer.send_signal(signal.SIGINT)  # strace writes its summary on detaching
        tracer.wait(30)
    sends = 0
    for line in output.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("sendto", "sendmsg"):
            sends += int(fields[3])  # % time, seconds, usecs/call, calls
    return result, sends


def _expect(pipes: list[Pipe], kind: str, timeout: float) -> list[dict[str, Any]]:
    """One message of ``kind`` from every pipe, in the pipes' order; others are skipped."""
    got: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(pipes):
        left = [pipe for index, pipe in enumerate(pipes) if index not in got]
        ready = multiprocessing.connection.wait(left, max(0.0, deadline - time.monotonic()))
        if not ready:
            raise SystemExit(f"load processes not {kind} within {timeout:.0f} s")
        for pipe in ready:
            assert isinstance(pipe, multiprocessing.connection.Connection)
            try:
                message = pipe.recv()
            except EOFError:
                raise SystemExit(f"a load process died before it was {kind}") from None
            if message["kind"] == "failed":
                raise SystemExit(f"a load process failed: {message['error']}")
            if message["kind"] == kind:
                got[pipes.index(pipe)] = message
    return [got[index] for index in range(len(pipes))]


@contextlib.contextmanager
def profiling(args: argparse.Namespace, rigs: list[Rig]) -> Iterator[None]:
    """With ``--py-spy DIR``: sample each server during the rounds (not the set-up)."""
    if args.py_spy is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.py_spy.mkdir(parents=True, exist_ok=True)
    samplers: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    for each in rigs:
        output = args.py_spy / f"{each.target}.txt"
        command = [py_spy, "record", "--pid", str(each.server.process.pid), "--rate", "200"]
        command += ["--format", "raw", "--output", str(output), "--nonblocking"]
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samplers.append((each.target, output, sampler))
    try:
        yield
    finally:
        for _, _, sampler in samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                sampler.wait(30)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait(5)
    for target, output, _ in samplers:
        if output.exists():
            print(f"py-spy: {target}'s stacks during the rounds are in {output}; running:")
            for share, frame in hottest(output, 12):
                print(f"  {share:6.1%}  {frame}")


def hottest(raw: Path, count: int) -> list[tuple[float, str]]:
    """From py-spy's raw (collapsed) stacks: the functions that were running (the
    innermost frame, lines merged), as shares of all samples, most first."""
    total = 0
    running: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        leaf = re.sub(r"\((?:/.*/)?(.*?):\d+\)$", r"(\1)", stack.rsplit(";", 1)[-1])
        total += int(samples)
        running[leaf] = running.get(leaf, 0) + int(samples)
    ranked = sorted(running.items(), key=lambda item: -item[1])
    return [(n / max(1, total), frame) for frame, n in ranked[:count]]


def report(rig: Rig, results: list[Result]) -> None:
    print(f"{rig.target}: {results[0].devices} devices set up in {rig.setup_seconds:.1f} s")
    for number, result in enumerate(results, start=1):
        show(number, result)
    if any(r.deliveries < r.expected or r.errors or r.lost for r in results):
        said = rig.server.stderr_path.read_text(errors="replace").splitlines()
        print(f"  {rig.target}'s last words on stderr ({len(said)} lines):")
        for line in said[-15:]:
            print(f"    {line}")


def percentile(values: list[int], share: float) -> float:
    """Nearest-rank percentile of sorted ``values``, in milliseconds."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(share * len(values)))] / 1e6


def show(number: int, result: Result) -> None:
    latencies = sorted(result.latencies)
    acks = sorted(result.acks)
    print(
        f"  round {number}: {result.deliveries:,} of {result.expected:,} deliveries "
        f"in {result.seconds:.2f} s = {result.rate:,.0f} deliveries/s "
        f"({result.rate / max(1, result.devices):,.0f} messages/s to each device)"
    )
    print(
        f"    send -> delivery ms: p50 {percentile(latencies, 0.50):.1f}, "
        f"p99 {percentile(latencies, 0.99):.1f}, max {percentile(latencies, 1.0):.1f}; "
        f"send -> reply ms: p50 {percentile(acks, 0.50):.1f}, p99 {percentile(acks, 0.99):.1f}"
    )
    seconds = max(result.seconds, 1e-9)
    print(
        f"    CPU: server {result.server_cpu:.2f} s ({result.server_cpu / seconds:.0%} of a "
        f"core, {result.server_cpu_per_delivery * 1e6:.1f} us a delivery), "
        f"load {result.load_cpu:.2f} s ({result.load_cpu / seconds:.0%}), "
        f"anything else on the machine {result.other_cpu:.2f} s"
        + ("  <- NOISY" if result.other_cpu > 0.1 * seconds else "")
    )
    if result.frames_per_write is not None:
        print(
            f"    batches: {result.frames_per_write:.1f} frames per write to a connection, "
            + (
                f"{result.events_per_batch:.1f} events per fsync"
                if result.events_per_batch is not None
                else "no fsync"
            )
        )
    if result.errors or result.lost:
        print(
            f"    PROBLEMS: {result.errors} failed sends (first: {result.first_error}), "
            f"{result.lost} connections lost during the round"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark: the messenger against a bare websockets broadcast.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=200, help="devices in the general chat")
    parser.add_argument(
        "--devices-per-user", type=int, default=1, help="devices logged in per receiving user"
    )
    parser.add_argument("--messages", type=int, default=2000, help="messages sent")
    parser.add_argument("--window", type=int, default=32, help="sends in flight at most")
    parser.add_argument(
        "--rate", type=float, default=0, help="messages per second; 0 = as fast as the window"
    )
    parser.add_argument("--text-bytes", type=int, default=100, help="length of each text")
    parser.add_argument("--client-id", action="store_true", help="send with a client_id")
    parser.add_argument(
        "--fsync", choices=["always", "batch", "never"], default="always", help="messenger policy"
    )
    parser.add_argument(
        "--target", choices=["both", "messenger", "bare"], default="both", help="what to measure"
    )
    parser.add_argument(
        "--receiver-procs", type=int, default=1, help="processes holding the receiving devices"
    )
    parser.add_argument(
        "--setup-concurrency", type=int, default=8, help="logins in flight per load process"
    )
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds allowed for each phase of a run"
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=15,
        help="seconds to wait for deliveries once every send has its reply",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="server on the first CPU, load on the others (else the kernel tends to "
        "put both ends of a loopback socket on one CPU)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per server; the best one is compared"
    )
    parser.add_argument(
        "--count-sends",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one more round per server under strace -c, counting its send syscalls",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample each server with py-spy during the rounds; raw stacks go to DIR",
    )
    parser.add_argument(
        "--role",
        choices=["controller", "bare-server"],
        default="controller",
        help="bare-server: how this script starts its baseline server",
    )
    args = parser.parse_args(argv)
    if min(args.messages, args.window, args.receiver_procs, args.rounds) < 1 or args.devices < 2:
        parser.error("need 2 devices, 1 message, a window of 1, 1 receiver process, 1 round")
    if args.devices_per_user < 1 or args.text_bytes < 21:
        parser.error("need at least 1 device per user and texts of at least 21 bytes")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "bare-server":
        bare_server()
        return
    print(
        f"config: {args.devices} devices ({args.devices - 1} receiving in "
        f"{args.receiver_procs} process(es), {args.devices_per_user} per user, + 1 sender "
        f"that also receives), {args.messages} messages of {args.text_bytes} chars, window "
        f"{args.window}, rate {'unpaced' if not args.rate else f'{args.rate:g}/s'}, "
        f"messenger --fsync {args.fsync}"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"
    )
    if server_cpus(args):
        print(
            f"pinned: server to CPU {sorted(server_cpus(args))}, sender and receivers to "
            f"CPUs {sorted(load_cpus(args))}: when the load's CPUs are near 100% busy, the "
            f"load generator, not the server, is the bound"
        )
    else:
        print("not pinned: server, sender and receivers share every CPU")
    targets = ["messenger", "bare"] if args.target == "both" else [args.target]
    work_dir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    best: dict[str, Result] = {}
    try:
        with contextlib.ExitStack() as stack:
            rigs = [stack.enter_context(rig(args, target, work_dir)) for target in targets]
            results: dict[str, list[Result]] = {target: [] for target in targets}
            # Rounds alternate between the servers, so that whatever else the
            # machine does meanwhile weighs on both alike.
            with profiling(args, rigs):
                for _ in range(args.rounds):
                    for each in rigs:
                        results[each.target].append(run_round(args, each))
            for each in rigs:
                report(each, results[each.target])
                rounds = results[each.target]
                best[each.target] = max(rounds, key=lambda result: result.rate)
                rates = sorted(result.rate for result in rounds)
                print(
                    f"{each.target}: best round {best[each.target].rate:,.0f} deliveries/s, "
                    f"median {rates[len(rates) // 2]:,.0f}"
                )
            if args.count_sends and shutil.which("strace"):
                for each in rigs:
                    counted, sends = counted_round(args, each)
                    print(
                        f"{each.target} under strace: {sends:,} send syscalls for "
                        f"{counted.deliveries:,} deliveries = "
                        f"{sends / max(1, counted.deliveries):.3f} per delivery"
                    )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    if len(best) == 2 and best["bare"].rate > 0:
        ratio = best["messenger"].rate / best["bare"].rate
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        if args.rate:
            verdict = "paced: both follow --rate, compare latency and CPU instead; vs"
        print(
            f"messenger/bare deliveries per second (best rounds): {ratio:.0%} ({verdict} the "
            f"{TARGET_RATIO:.0%} target, --fsync {args.fsync})"
        )
        cost = best["bare"].server_cpu_per_delivery / best["messenger"].server_cpu_per_delivery
        print(
            f"bare/messenger server CPU per delivery (same rounds): {cost:.0%} "
            f"(the rate ratio if both servers had a core to themselves and nothing else)"
        )


if __name__ == "__main__":
    main()
