"""Driving the real client against a real server: script clients run in-process with
their stdin a pipe, and a TCP relay that a test can cut to make a connection drop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from client.cli import Options, ScriptFace, run
from client.connection import Backoff

PASSWORD = "password1"
WAIT = 5.0  # seconds a test waits for a line before it fails
# Reconnect fast: a test waits for the client, not the other way round.
FAST = Backoff(initial=0.02, maximum=0.1, give_up_after=10.0)


class Transcript(io.StringIO):
    """What a client printed on one stream, to wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._written = asyncio.Event()

    def write(self, text: str) -> int:
        self._written.set()
        return super().write(text)

    async def wait_for(self, text: str, *, after: int = 0) -> None:
        """Wait until ``text`` is printed (past the first ``after`` characters)."""
        try:
            async with asyncio.timeout(WAIT):
                while text not in self.getvalue()[after:]:
                    self._written.clear()
                    await self._written.wait()
        except TimeoutError:
            raise AssertionError(f"Expected {text!r} in:\n{self.getvalue()}") from None

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines())


@dataclasses.dataclass
class ScriptClient:
    """``messenger-client`` in script mode, fed line by line through a pipe."""

    task: asyncio.Task[int]
    stdout: Transcript
    stderr: Transcript
    keyboard: TextIO
    stdin: TextIO

    def type(self, *lines: str) -> None:
        for line in lines:
            self.keyboard.write(line + "\n")
        self.keyboard.flush()

    def type_bytes(self, data: bytes) -> None:
        """Bytes as they are, UTF-8 or not."""
        self.keyboard.flush()
        self.keyboard.buffer.write(data)
        self.keyboard.buffer.flush()

    async def started(self) -> None:
        """Wait until sign-in and the start (unread counts, latest messages) are done."""
        await self.stderr.wait_for("Signed in as")

    async def end(self) -> int:
        """Close stdin (the end of the script) and return the exit status."""
        if not self.keyboard.closed:
            self.keyboard.close()
        return await asyncio.wait_for(self.task, 2 * WAIT)


@dataclasses.dataclass
class Clients:
    """Starts script clients and, at the end of a test, ends those still running."""

    config_home: Path
    started: list[ScriptClient] = dataclasses.field(default_factory=list)

    def start(
        self,
        port: int,
        user: str,
        *,
        password: str | None = PASSWORD,
        register: bool = True,
        device: str | None = None,
        backoff: Backoff = FAST,
        stdin_errors: str = "strict",
        history: bool = False,
        mark_read: bool = False,
    ) -> ScriptClient:
        """A script client; ``history`` and ``mark_read`` as ``--history`` and
        ``--mark-read`` give them."""
        options = Options(
            user=user,
            port=port,
            device=device,
            register=register,
            password=password,
            tokens=self.config_home / "messenger" / "tokens.json",
            backoff=backoff,
        )
        read_end, write_end = os.pipe()
        stdin = os.fdopen(read_end, encoding="utf-8", errors=stdin_errors)
        keyboard = os.fdopen(write_end, "w", encoding="utf-8")
        stdout, stderr = Transcript(), Transcript()
        face = ScriptFace(stdin, stdout, stderr, history=history, mark_read=mark_read)
        task = asyncio.create_task(run(options, face))
        client = ScriptClient(task, stdout, stderr, keyboard, stdin)
        self.started.append(client)
        return client

    async def close(self) -> None:
        for client in self.started:
            if not client.keyboard.closed:
                client.keyboard.close()  # the end of input ends the client's stdin reader
            client.task.cancel()
        if self.started:
            await asyncio.wait([client.task for client in self.started])
        for reader in threading.enumerate():
            if reader.name == "messenger-stdin":
                await asyncio.to_thread(reader.join, 5)
        for client in self.started:
            client.stdin.close()


class Relay:
    """A TCP relay between a client and the server: ``cut`` drops every connection
    through it and refuses new ones until ``mend``, like a network going away."""

    def __init__(self, target_port: int = 0) -> None:
        self.target_port = target_port  # may be set later: the server's port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.WriteTransport] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self.cut_on: bytes | None = None  # drop the connections when the server sends this

    def drop(self) -> None:
        """Drop the connections through the relay, and take new ones."""
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        if self._pumps:
            await asyncio.wait(self._pumps)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports += [client_w.transport, server_w.transport]
        pumps = [
            asyncio.create_task(_pump(client_r, server_w)),
            asyncio.create_task(_pump(server_r, client_w, self)),
        ]
        self._pumps.update(pumps)
        for pump in pumps:
            pump.add_done_callback(self._pumps.discard)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watcher: Relay | None = None
) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            if watcher is not None and watcher.cut_on is not None and watcher.cut_on in data:
                watcher.cut_on = None
                watcher.drop()
                return
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def relay_to(port: int = 0) -> AsyncIterator[Relay]:
    relay = Relay(port)
    await relay.mend()
    try:
        yield relay
    finally:
        await relay.cut()
