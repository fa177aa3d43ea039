"""The client's side of the wire, and the only client module that imports websockets.

``Connection`` is one WebSocket carrying JSON-RPC 2.0: each request gets an id and a
future, each notification goes to a callback. ``Session`` keeps a signed-in device
connected: when the connection drops it reconnects with backoff and resumes with
``login {user, token, since}`` (protocol-contract.md, "Resume"), and it drops every
event whose cursor it has already seen, so that nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from client.errors import (
    ClientError,
    ConnectionLost,
    RpcError,
    SignedOut,
    Unreachable,
    UsageError,
)
from wire import UNLOGGED_EVENTS, ErrorCode, decode, encode

log = logging.getLogger("messenger.client")

# The server keeps its replies under its 1 MiB frame limit (lists stop at a byte
# budget and say has_more); the client is lenient about what it accepts all the same.
MAX_INCOMING_FRAME: Final = 64 * 2**20
# The close code of a frame over the receiver's limit (RFC 6455, 7.4.1).
MESSAGE_TOO_BIG: Final = 1009

NotificationHandler = Callable[[str, dict[str, Any]], None]
ResultHook = Callable[[Any], None]


@dataclasses.dataclass(slots=True)
class _Pending:
    method: str
    reply: asyncio.Future[Any]
    on_result: ResultHook | None


class Connection:
    def __init__(self, websocket: ClientConnection, on_notification: NotificationHandler) -> None:
        self._websocket = websocket
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._reader = asyncio.create_task(self._read(), name="messenger-client-reader")

    @classmethod
    async def open(
        cls, url: str, on_notification: NotificationHandler, *, open_timeout: float = 10.0
    ) -> Connection:
        try:
            websocket = await connect(url, open_timeout=open_timeout, max_size=MAX_INCOMING_FRAME)
        except InvalidURI as exc:
            raise Unreachable(url, "not a ws:// address") from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise Unreachable(url, f"HTTP {status}: is it a messenger server?") from exc
        except TimeoutError as exc:
            raise Unreachable(url, "timed out") from exc
        except ConnectionRefusedError as exc:
            raise Unreachable(url, "connection refused") from exc
        except (OSError, InvalidHandshake) as exc:
            raise Unreachable(url, str(exc) or type(exc).__name__) from exc
        return cls(websocket, on_notification)

    @property
    def closed(self) -> bool:
        return self._reader.done()

    @property
    def close_code(self) -> int | None:
        return self._websocket.close_code

    async def wait_closed(self) -> None:
        await asyncio.shield(self._reader)

    async def close(self) -> None:
        await self._websocket.close()
        await self.wait_closed()

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        on_result: ResultHook | None = None,
        frame_limit: int | None = None,
    ) -> Any:
        """Send a request and wait for its reply: the result, or ``RpcError``.

        ``on_result`` runs in the reader as the reply arrives, before any later frame
        is looked at: the place to act on a result that later notifications depend on.
        A request over ``frame_limit`` bytes, which the server would close the
        connection on, is ``UsageError`` and not sent.
        """
        if self.closed:
            raise ConnectionLost(f"{method}: not connected")
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        frame = encode(request)
        if frame_limit is not None and len(frame) > frame_limit:
            raise UsageError(
                f"{method}: too big to send ({len(frame)} bytes; the server takes {frame_limit})"
            )
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(method, reply, on_result)
        try:
            await self._websocket.send(frame, text=True)
            return await reply
        except ConnectionClosed as exc:
            raise ConnectionLost(f"{method}: the connection closed") from exc
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        try:
            async for frame in self._websocket:
                self._received(frame)
        except ConnectionClosed as exc:
            log.info("Connection closed: %s", exc)
        except Exception:  # a bug: log it at the task's boundary, and count it as a drop
            log.exception("Reading from %s failed", self._websocket.remote_address)
        finally:
            for pending in self._pending.values():
                if not pending.reply.done():
                    pending.reply.set_exception(
                        ConnectionLost(f"{pending.method}: the connection closed before the reply")
                    )

    def _received(self, frame: str | bytes) -> None:
        try:
            payload = decode(frame)
        except ValueError:
            log.warning("Expected JSON from the server, but got %.80r", frame)
            return
        # JSON-RPC 2.0 section 6: replies to a batch come as an array.
        for item in payload if isinstance(payload, list) else [payload]:
            if not isinstance(item, dict):
                log.warning("Expected a JSON-RPC object, but got %.80r", item)
            elif "id" not in item:
                self._notified(item)
            else:
                self._replied(item)

    def _notified(self, item: dict[str, Any]) -> None:
        method, params = item.get("method"), item.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            log.warning("Expected a notification {method, params}, but got %.80r", item)
            return
        try:
            self._on_notification(method, params)
        except Exception:  # one bad event must not stop the reader
            log.exception("Handling the %s event failed", method)

    def _replied(self, item: dict[str, Any]) -> None:
        pending = self._pending.get(item["id"]) if isinstance(item["id"], int) else None
        if pending is None or pending.reply.done():
            # Replies to calls given up on (the client shutting down) land here: no news.
            log.debug("Ignoring a reply to no pending request: %.80r", item)
            return
        error = item.get("error")
        if isinstance(error, dict):
            pending.reply.set_exception(
                RpcError(
                    error.get("code", 0),
                    str(error.get("message", "")),
                    error.get("data"),
                    pending.method,
                )
            )
            return
        result = item.get("result")
        if pending.on_result is not None:
            pending.on_result(result)
        pending.reply.set_result(result)


# -- a device that stays connected -----------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class EventReceived:
    method: str
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionDropped:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionResumed:
    resumed: bool  # False: the server could not replay everything; refetch state


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionAbandoned:
    error: ClientError  # Unreachable (gave up) or SignedOut


SessionEvent = EventReceived | ConnectionDropped | ConnectionResumed | ConnectionAbandoned


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts: doubling, capped, with jitter."""

    initial: float = 0.1
    maximum: float = 5.0
    give_up_after: float | None = None  # seconds without a connection; None: never
    # A connection that drops sooner than this after it came back is the same outage:
    # the delays go on growing, and the time to give up goes on running.
    stable_after: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            # Jitter keeps many clients from reconnecting in lockstep after a restart.
            yield delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, self.maximum)


class Session:
    """One device of one user, connected to one server for as long as it runs.

    Before ``login`` succeeds it is a bare connection (``register`` and failed
    logins go through it); after, ``call`` survives reconnections and every event,
    and every change of connection, comes out of ``events`` in order.
    """

    def __init__(self, url: str, backoff: Backoff | None = None) -> None:
        self.url = url
        self.backoff = backoff or Backoff()
        self.events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self.user: str | None = None
        self.token: str | None = None
        self.cursor: int | None = None  # the last event cursor seen
        self.failure: ClientError | None = None
        self.frame_limit: int | None = None  # the server's, once signed in
        self._connection: Connection | None = None
        self._changed = asyncio.Condition()
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False

    async def connect(self) -> None:
        """Open the first connection; ``Unreachable`` when the server is not there."""
        self._connection = await Connection.open(self.url, self._notified)

    async def login(self, params: dict[str, Any]) -> dict[str, Any]:
        """``login`` with a password or a token; from then on the session reconnects."""
        result: dict[str, Any] = await self._live().call("login", params, on_result=self._logged_in)
        self.user, self.token = result["user"], result["token"]
        frame_limit = result.get("limits", {}).get("frame_limit")
        self.frame_limit = frame_limit if isinstance(frame_limit, int) else None
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._stay_connected(), name="messenger-client")
        return result

    async def call(self, method: str, params: dict[str, Any], *, retry: bool = True) -> Any:
        """Call ``method``; when the connection drops first, call again once reconnected.

        Only for calls that are safe to repeat (``send`` carries a ``client_id``);
        ``retry=False`` raises ``ConnectionLost`` instead. A request the server closed
        the connection on as too big (1009) is ``UsageError``: it would be again.
        """
        while True:
            connection = await self._connected()
            try:
                return await connection.call(method, params, frame_limit=self.frame_limit)
            except ConnectionLost:
                if connection.close_code == MESSAGE_TOO_BIG:
                    raise UsageError(f"{method}: too big for the server to take") from None
                if not retry or self._keeper is None:
                    raise
                await connection.wait_closed()  # then wait for the keeper's next connection

    async def close(self) -> None:
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.wait([self._keeper])
        if self._connection is not None:
            await self._connection.close()

    def _live(self) -> Connection:
        if self._connection is None or self._connection.closed:
            raise ConnectionLost("not connected")
        return self._connection

    async def _connected(self) -> Connection:
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.failure is not None
                    or self._keeper is None
                    or (self._connection is not None and not self._connection.closed)
                )
            )
        if self.failure is not None:
            raise self.failure
        return self._live()

    def _logged_in(self, result: dict[str, Any]) -> None:
        # Runs before any frame after the reply, and after the replayed events, which
        # the server pushes first: every event to come is past the reply's cursor.
        # Without a replay the server's cursor is the one to go by, even when lower
        # (a server whose state was reset counts from 1 again).
        if result.get("resumed") is True and self.cursor is not None:
            self.cursor = max(self.cursor, result["cursor"])
        else:
            self.cursor = result["cursor"]

    def _notified(self, method: str, params: dict[str, Any]) -> None:
        cursor = params.get("cursor")
        if isinstance(cursor, int) and method not in UNLOGGED_EVENTS:
            if self.cursor is not None and cursor <= self.cursor:
                return  # replayed after a resume, and already seen
            self.cursor = cursor
        self.events.put_nowait(EventReceived(method, params))

    async def _stay_connected(self) -> None:
        loop = asyncio.get_running_loop()
        delays: Iterator[float] | None = None
        outage_started = 0.0
        while True:
            assert self._connection is not None
            up_since = loop.time()
            await self._connection.wait_closed()
            if self._closing:
                return
            if delays is None or loop.time() - up_since >= self.backoff.stable_after:
                delays, outage_started = self.backoff.delays(), loop.time()
            self.events.put_nowait(ConnectionDropped())
            try:
                self._connection, result = await self._reconnect(delays, outage_started)
            except ClientError as exc:
                self.failure = exc
                self.events.put_nowait(ConnectionAbandoned(exc))
                return
            finally:
                async with self._changed:
                    self._changed.notify_all()
            self.events.put_nowait(ConnectionResumed(result.get("resumed") is True))

    async def _reconnect(
        self, delays: Iterator[float], started: float
    ) -> tuple[Connection, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        reason = "no answer"
        while True:
            limit = self.backoff.give_up_after
            if limit is not None and loop.time() - started > limit:
                raise Unreachable(self.url, f"{reason}; gave up after {limit:g} s")
            await asyncio.sleep(next(delays))
            try:
                connection = await Connection.open(self.url, self._notified)
            except Unreachable as exc:
                reason = exc.reason
                continue
            params = {"user": self.user, "token": self.token, "since": self.cursor}
            try:
                result = await connection.call("login", params, on_result=self._logged_in)
            except RpcError as exc:
                await connection.close()
                if exc.code == ErrorCode.UNAUTHENTICATED:
                    raise SignedOut("This device was signed out; run the client again") from exc
                reason = exc.message
            except ConnectionLost as exc:
                reason = str(exc)
            except asyncio.CancelledError:
                await connection.close()
                raise
            else:
                log.info("Reconnected to %s, resumed: %s", self.url, result.get("resumed"))
                return connection, result
