"""What the extras' integration tests share: a clock the test moves by hand, a
config in tmp_path, and small calls over the wire (errors, raw HTTP GET)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, Protocol

import pytest

from server.app import LOG_FILE
from server.config import Config
from server.log import SNAPSHOT_SUFFIX
from tests.configs import config_for_tests
from tests.wsclient import Peer, RpcError

START = 1_800_000_000_000  # a multiple of every rate period the tests use


class Clock:
    """Milliseconds since the epoch, moved only by the test."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1000)


def config_in(tmp_path: Path, **changes: Any) -> Config:
    """A real server's settings in tmp_path, with a schedule timer quick to notice
    the test's clock and no rate limit unless the test sets one."""
    return config_for_tests(
        tmp_path, **{"rate_limit": 100_000, "timer_resolution": 0.02, **changes}
    )


def log_text(config: Config) -> str:
    """What the state folder keeps of the history: the log, and the snapshot beside it."""
    log = config.state_dir / LOG_FILE
    snapshot = log.with_suffix(SNAPSHOT_SUFFIX)
    return log.read_text() + (snapshot.read_text() if snapshot.exists() else "")


async def error_of(peer: Peer, method: str, **params: Any) -> RpcError:
    """The error ``method`` fails with (the test fails if it succeeds)."""
    with pytest.raises(RpcError) as caught:
        await peer.call(method, **params)
    return caught.value


async def post(peer: Peer, chat: str, text: str, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = (await peer.call("send", chat=chat, text=text, **params))["message"]
    return message


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [message["text"] for message in messages]


def chat_of(status: dict[str, Any], chat_id: str) -> dict[str, Any]:
    chat: dict[str, Any] = next(chat for chat in status["chats"] if chat["id"] == chat_id)
    return chat


async def events_until_quiet(peer: Peer, wait: float = 0.2) -> list[dict[str, Any]]:
    """Every event pushed to ``peer`` until none comes for ``wait`` seconds."""
    seen: list[dict[str, Any]] = []
    while True:
        try:
            seen.append(await asyncio.wait_for(peer.events.get(), wait))
        except TimeoutError:
            return seen


@dataclasses.dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class Address(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


async def http_get(
    running: Address, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> HttpReply:
    """A raw HTTP/1.1 request (a GET unless told) to the server's port."""
    reader, writer = await asyncio.open_connection(running.host, running.port)
    try:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {running.host}:{running.port}\r\n{extra}"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in header_lines:  # a repeated header shows as its values joined (RFC 9110 5.3)
        name, value = line.split(": ", 1)
        name = name.lower()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return HttpReply(int(status_line.split()[1]), fields, body)
