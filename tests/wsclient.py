"""A minimal JSON-RPC client for the server's tests: real websockets, no mocks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['code']}: {error['message']}")
        self.code: int = error["code"]
        self.data: Any = error.get("data")


class Peer:
    """One device's connection: ``call`` for replies, ``next_event`` for pushes."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count(1)
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.raw: asyncio.Queue[Any] = asyncio.Queue()  # replies nobody waits for
        self.reader = asyncio.create_task(self._read())
        self.user: str | None = None
        self.token: str | None = None
        self.cursor = 0

    async def _read(self) -> None:
        async for frame in self.connection:
            payload = orjson.loads(frame)
            if isinstance(payload, dict) and "method" in payload:
                self.cursor = max(self.cursor, payload["params"]["cursor"])
                await self.events.put(payload)
            elif isinstance(payload, dict) and payload.get("id") in self.replies:
                self.replies.pop(payload["id"]).set_result(payload)
            else:
                await self.raw.put(payload)

    async def call(self, method: str, **params: Any) -> Any:
        request_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = future
        await self.connection.send(
            orjson.dumps(
                {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
            ).decode()
        )
        reply = await asyncio.wait_for(future, 10)
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply["result"]

    async def send_raw(self, frame: str | bytes) -> Any:
        await self.connection.send(frame)
        return await asyncio.wait_for(self.raw.get(), 10)

    async def next_event(self, method: str | None = None) -> dict[str, Any]:
        """The next pushed event (skipping others when ``method`` is given), within 5 s."""
        async with asyncio.timeout(5):
            while True:
                event = await self.events.get()
                if method is None or event["method"] == method:
                    return event

    async def no_event(self, wait: float = 0.2) -> None:
        """Assert nothing is pushed within ``wait`` seconds."""
        try:
            event = await asyncio.wait_for(self.events.get(), wait)
        except TimeoutError:
            return
        raise AssertionError(f"expected no event, but got {event}")

    async def login(self, user: str, password: str = "password1", **params: Any) -> Any:
        result = await self.call("login", user=user, password=password, **params)
        self.user, self.token = result["user"], result["token"]
        return result

    async def close(self) -> None:
        await self.connection.close()
        self.reader.cancel()


@asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[Peer]:
    """A connection to ``url``; ``options`` go to ``connect`` (``local_addr``, say)."""
    async with connect(url, max_size=2**20, **options) as connection:
        peer = Peer(connection)
        try:
            yield peer
        finally:
            peer.reader.cancel()


@asynccontextmanager
async def user_device(url: str, user: str, register: bool = True) -> AsyncIterator[Peer]:
    """A logged-in device of ``user`` (registered first unless told otherwise)."""
    async with connected(url) as peer:
        if register:
            await peer.call("register", user=user, password="password1")
        await peer.login(user)
        yield peer
