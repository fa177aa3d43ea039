"""WebSocket and HTTP on one port: the only module that imports websockets.

Frames go to the dispatcher; replies and events go back as text frames holding
orjson bytes. Requests of one connection are decided in the order they arrive
and may then wait for the disk together (up to ``PIPELINE`` at a time); a frame
with a session method (``login``...) is handled alone, after those before it.

What one client can hold is bounded (protocol.md, sections 1 and 2):
- replies are written like events, without waiting for the peer, and count
  towards the same unsent bound (``send_buffer_limit``), as do the pongs
  websockets writes by itself: past it the connection is cut off. A client that
  never reads holds at most that, its frames queued unread (``RECEIVE_QUEUE``)
  and ``PIPELINE`` requests; one that takes nothing for ``stall_timeout`` behind
  a full buffer is cut off too;
- a connection not logged in within ``login_timeout`` is closed (1008, or dropped
  before its handshake);
- connections are capped in all and per client address (the address behind a
  trusted proxy); a newcomer over a cap gets HTTP 503 and nothing else;
- ``GET /files/{id}`` is streamed from disk in pieces as the reader takes them:
  memory per download is a piece and the write buffer, and only a reader that
  takes nothing for ``stall_timeout`` is cut off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import hmac
import http
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Final, cast

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from server.admission import (
    Admission,
    Occasional,
    Refusal,
    client_address,
    default_max_connections,
)
from server.config import Config
from server.domain.model import UserKey
from server.files import FileMethods, content_disposition
from server.hub import Hub, Session
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.metrics import Metrics
from server.redact import redacted_header, redacted_json
from server.rpc import Dispatcher
from server.webclient import Asset, load_assets, origin_allowed

logger = logging.getLogger("messenger.server.transport")

PIPELINE: Final = 8  # requests of one connection in flight at once
RECEIVE_QUEUE: Final = 2  # frames received but not yet read, before reading pauses
DOWNLOAD_PIECE: Final = 64 * 2**10  # bytes read from disk at a time for GET /files
DOWNLOADS_PER_USER: Final = 4  # so that one account cannot take every download slot
REFUSED_LINGER: Final = 1.0  # seconds a refused connection may take to read its 503
LINGERING_MAX: Final = 64  # refused connections lingering at once; more are dropped

# RFC 6455 section 7.4.1 close codes.
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_POLICY_VIOLATION: Final = 1008

FILES_PREFIX: Final = "/files/"
# Uploaded bytes are never a page of this origin: opened directly they download, and
# a file that claims to be HTML runs nothing (sandboxed, no scripts, no sniffing).
FILE_HEADERS: Final = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=600",  # a file id's bytes never change
}
# EMFILE and its kin: the accept loop fails for want of a descriptor or memory.
OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _respond(
    connection: ServerConnection,
    content_type: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> Response:
    response = connection.respond(http.HTTPStatus.OK, "")
    response.body = body
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = content_type
    response.headers["Content-Length"] = str(len(body))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _busy(connection: ServerConnection, text: str) -> Response:
    response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, text)
    response.headers["Retry-After"] = "1"
    return response


def _unavailable(text: str) -> bytes:
    """A plain HTTP 503, written before any request was read."""
    body = text.encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%b"
        % (len(body), body)
    )


class TextFrames:
    """The last payload asked for, as one unmasked text frame (RFC 6455 section 5.2,
    serialized by websockets): a fan-out asks for the same payload object once per
    device, and framing it once instead of per device takes a third off the
    server's CPU per delivery (bench/fanout.py: 12.7 -> 8.5 us)."""

    __slots__ = ("data", "frame")

    def __init__(self) -> None:
        self.data = b""
        self.frame = Frame(Opcode.TEXT, b"").serialize(mask=False)

    def of(self, data: bytes) -> bytes:
        if data is not self.data:
            self.data, self.frame = data, Frame(Opcode.TEXT, data).serialize(mask=False)
        return self.frame


class Outbox:
    """Frames owed to connections, written once per connection per batch.

    A group commit completes the futures of its batch together, so the callbacks that
    tell its events run back to back; a cluster follower folds a whole batch from the
    shared log in one call. What is written to a connection meanwhile (events, replies,
    a resume) waits in its ``WebSocketPeer`` and goes out in one ``transport.write``
    once those callbacks have run: the flush is scheduled by the first frame owed, so
    it runs after every callback that was ready then. One ``send()`` per device per
    batch instead of one per frame (the kernel's loopback send was 60 % of the
    fan-out's CPU); the frames stay separate RFC 6455 frames, in the order written.

    Frames owed count towards the unsent bound like frames in the transport's buffer.
    So that a batch alone never passes it for a device that reads, a connection owed
    ``write_at`` bytes is written at once (a quarter of the bound).
    """

    __slots__ = ("frames", "frames_written", "owed", "write_at", "writes")

    def __init__(self, write_at: int) -> None:
        self.write_at = write_at
        self.frames = TextFrames()
        self.owed: dict[WebSocketPeer, None] = {}  # insertion-ordered set
        self.writes = 0  # transport writes of owed frames, for /metrics
        self.frames_written = 0

    def owe(self, peer: WebSocketPeer) -> None:
        if not self.owed:
            asyncio.get_running_loop().call_soon(self.flush)
        self.owed[peer] = None

    def flush(self) -> None:
        owed, self.owed = self.owed, {}
        for peer in owed:
            peer.flush()


class WebSocketPeer:
    """``hub.Peer`` over a websockets connection: frames are held until the outbox
    flushes (``buffered`` counts them), then written together."""

    __slots__ = ("closing", "connection", "outbox", "owed", "owed_bytes")

    def __init__(
        self, connection: ServerConnection, closing: set[asyncio.Task[None]], outbox: Outbox
    ) -> None:
        self.connection = connection
        self.closing = closing
        self.outbox = outbox
        self.owed: list[bytes] = []
        self.owed_bytes = 0

    def write_text(self, data: bytes) -> None:
        # Written without waiting for the peer: never blocks the fan-out.
        connection = self.connection
        if connection.transport.is_closing():
            return  # aborted (cut off) or closed: the transport would drop it too
        protocol = connection.protocol
        if (
            protocol.state is State.OPEN
            and connection.send_in_progress is None
            and not protocol.extensions
            and not protocol.debug
        ):
            # What broadcast() does for one connection, with the frame made once.
            outbox = self.outbox
            if not self.owed:
                outbox.owe(self)
            frame = outbox.frames.of(data)
            self.owed.append(frame)
            self.owed_bytes += len(frame)
            if self.owed_bytes >= outbox.write_at:
                self.flush()
        else:  # closing, or frames logged: broadcast() skips or logs as it should
            self.flush()
            broadcast((connection,), data, text=True)

    def flush(self) -> None:
        """Write the frames owed, in one write."""
        if not self.owed:
            return
        owed, self.owed, self.owed_bytes = self.owed, [], 0
        # Only the state can have changed since they were framed: a connection that
        # is closing takes no more data frames (broadcast() would skip it too).
        if self.connection.protocol.state is State.OPEN:
            self.connection.transport.write(owed[0] if len(owed) == 1 else b"".join(owed))
            self.outbox.writes += 1
            self.outbox.frames_written += len(owed)

    def buffered(self) -> int:
        return self.connection.transport.get_write_buffer_size() + self.owed_bytes

    def abort(self) -> None:
        self.owed, self.owed_bytes = [], 0
        self.connection.transport.abort()

    def close(self, code: int, reason: str) -> None:
        self.flush()  # what it was told before the close frame
        task = asyncio.get_running_loop().create_task(self.connection.close(code, reason))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)


class GuardedConnection(ServerConnection):
    """A websockets connection that the transport admits, times out and may stream a
    file on. ``owner`` is set on a subclass made per transport."""

    owner: ClassVar[Transport]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer_address = ""
        self.client = ""  # the address counted and logged: behind a trusted proxy, its client
        self.claimed: str | None = None  # the address counted against its cap
        self.entered = False  # counted against the total cap
        self.refused: Refusal | None = None
        self.lingering = False  # refused, its 503 sent, waiting for the peer to close
        self.session: Session | None = None
        self.downloading = False
        self.head_seen = False
        self.head_tail = b""
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner.connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner.connection_lost(self)

    def data_received(self, data: bytes) -> None:
        if self.refused is not None:
            return  # its 503 is on its way: what it sends is not read
        if self.head_seen:
            if self.protocol.state is State.CONNECTING:
                return  # RFC 6455 section 4.1: nothing may follow the request before the response
            super().data_received(data)
            # websockets answers pings (and closes) by itself, at the rate they come:
            # a peer that pings and never reads would grow its buffer without end.
            if self.transport.get_write_buffer_size() > self.owner.config.send_buffer_limit:
                self.owner.cut_off(self)
            return
        # The request head ends with an empty line (RFC 9112 section 2.1); what follows
        # it before the response is out is dropped, so that a pipelined second request
        # is never taken for a frame.
        window = self.head_tail + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self.head_tail = window[-3:]
            super().data_received(data)
            return
        self.head_seen = True
        super().data_received(data[: end + 4 - len(self.head_tail)])

    @property
    def logged_in(self) -> bool:
        return self.session is not None and self.session.user is not None

    def on_deadline(self) -> None:
        """Not logged in by now: closed with 1008, or dropped if not even a WebSocket."""
        self.deadline = None
        if self.logged_in or self.downloading:
            return
        self.owner.metrics.inc("messenger_connections_closed_total", reason="login_timeout")
        if self.protocol.state is State.OPEN and self.session is not None:
            self.session.peer.close(CLOSE_POLICY_VIOLATION, "log in sooner")
            # A peer that does not read may never take the close frame: then it goes.
            grace = self.owner.config.login_timeout
            self.deadline = self.loop.call_later(grace, self.transport.abort)
        else:
            self.transport.abort()


class Transport:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        dispatcher: Dispatcher,
        http_routes: dict[str, Callable[[], tuple[int, str, bytes]]],
        files: FileMethods,
        *,
        metrics: Metrics,
    ) -> None:
        self.files = files
        self.config = config
        self.hub = hub
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.http_routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            **http_routes,
            "/metrics": lambda: (200, METRICS_CONTENT_TYPE, self.metrics.render()),
        }
        self.closing: set[asyncio.Task[None]] = set()
        self.outbox = Outbox(config.send_buffer_limit // 4)
        self.server: Server | None = None
        self.assets = load_assets()
        self.admission = Admission(
            config.max_connections or default_max_connections(),
            config.max_connections_per_address,
        )
        self.connections: set[GuardedConnection] = set()
        self.lingering = 0
        self.downloads = 0
        self.downloads_by_user: collections.Counter[UserKey] = collections.Counter()
        self.in_flight = 0  # requests of all connections
        self.stopping = False
        self.out_of_fds = Occasional(logger, config.occasional_interval, time.monotonic)
        self.refusing = Occasional(logger, config.occasional_interval, time.monotonic)
        self._previous_handler: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._watch_metrics()

    def _watch_metrics(self) -> None:
        def by_state() -> list[tuple[tuple[tuple[str, str], ...], float]]:
            counts = dict.fromkeys(("handshake", "anonymous", "logged_in", "download"), 0)
            for connection in self.connections:
                if connection.downloading:
                    counts["download"] += 1
                elif connection.session is None:
                    counts["handshake"] += 1
                else:
                    counts["logged_in" if connection.logged_in else "anonymous"] += 1
            return [((("state", state),), count) for state, count in counts.items()]

        self.metrics.read("messenger_connections", "gauge", "Open connections by state.", by_state)
        self.dispatcher.on_answer = self.metrics.count_answer
        self.metrics.read_value(
            "messenger_fanout_bytes_total",
            "counter",
            "Bytes of events handed to connections.",
            lambda: self.hub.fanout_bytes,
        )
        self.metrics.read_value(
            "messenger_slow_cutoffs_total",
            "counter",
            "Connections cut off for passing the unsent bound.",
            lambda: self.hub.cut_offs,
        )
        self.metrics.read_value(
            "messenger_fanout_writes_total",
            "counter",
            "Transport writes of events and replies (one per connection per batch).",
            lambda: self.outbox.writes,
        )
        self.metrics.read_value(
            "messenger_fanout_frames_total",
            "counter",
            "Frames of events and replies in those writes.",
            lambda: self.outbox.frames_written,
        )
        self.metrics.read_value(
            "messenger_downloads_in_progress",
            "gauge",
            "GET /files/{id} being streamed.",
            lambda: self.downloads,
        )
        self.metrics.read_value(
            "messenger_requests_in_flight",
            "gauge",
            "Requests being handled, all connections together.",
            lambda: self.in_flight,
        )

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        connection_class = type("Guarded", (GuardedConnection,), {"owner": self})
        self.server = await serve(
            self.serve_connection,
            self.config.host,
            self.config.port,
            process_request=self.process_request,
            max_size=self.config.frame_limit,  # larger frames: close 1009 (RFC 6455 7.4.1)
            max_queue=RECEIVE_QUEUE,
            compression=None,  # fan-out writes the same bytes to all: no per-peer deflate
            open_timeout=None,  # the login deadline covers the handshake; downloads have none
            create_connection=connection_class,
            logger=WEBSOCKETS_LOGGER,
        )
        self._sweeper = loop.create_task(self.sweep_stalled(), name="messenger-stall-sweeper")
        return self.server

    async def sweep_stalled(self) -> None:
        """Every ``stall_timeout``, cut off the WebSocket connections whose reader took
        nothing since the last sweep while their write buffer was full. Such a
        connection never gets a keepalive ping out (the ping waits behind the buffer),
        so it would otherwise hold its buffer, up to ``send_buffer_limit``, for ever."""
        full: dict[GuardedConnection, int] = {}  # unsent bytes at the last sweep
        while True:
            await asyncio.sleep(self.config.stall_timeout)
            still: dict[GuardedConnection, int] = {}
            for connection in self.connections:
                if not connection.paused or connection.protocol.state is not State.OPEN:
                    continue
                unsent = connection.transport.get_write_buffer_size()
                if connection in full and unsent >= full[connection]:
                    self.metrics.inc("messenger_connections_closed_total", reason="stalled")
                    logger.warning(
                        "cutting off %s: %d bytes unsent, none taken for %.0f s",
                        connection.session or connection.client,
                        unsent,
                        self.config.stall_timeout,
                    )
                    connection.transport.abort()
                else:
                    still[connection] = unsent
            full = still

    async def stop(self) -> None:
        """Stop listening and close every connection with 1001 (going away)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.stopping = True
        for connection in list(self.connections):
            if connection.protocol.state is State.CONNECTING:  # a download or a slow request
                connection.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio's accept loop reports every failed accept (and retries a second
        # later): out of fds, that is one traceback per attempt. One line per interval.
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in OUT_OF_RESOURCES:
            self.metrics.inc("messenger_fd_exhausted_total")
            self.out_of_fds.warn("cannot accept connections: %s", error.strerror)
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def cut_off(self, connection: GuardedConnection) -> None:
        """A connection past the unsent bound by what websockets wrote on its own."""
        if connection.session is not None:
            self.hub.cut_off(connection.session)  # counted and logged with the others
        else:
            connection.transport.abort()

    # -- admission -------------------------------------------------------------------

    def connection_made(self, connection: GuardedConnection) -> None:
        transport = connection.transport
        if self.stopping:
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        connection.peer_address = connection.client = str(peer[0]) if peer else "unknown"
        refusal = self.admission.enter()
        if refusal is None:
            connection.entered = True
            if connection.peer_address not in self.config.trusted_proxies:
                refusal = self.claim(connection, connection.peer_address)
        if refusal is not None:
            self.refuse_early(connection, refusal)
            return
        self.connections.add(connection)
        connection.deadline = asyncio.get_running_loop().call_later(
            self.config.login_timeout, connection.on_deadline
        )

    def claim(self, connection: GuardedConnection, address: str) -> Refusal | None:
        refusal = self.admission.claim(address)
        if refusal is None:
            connection.claimed = address
        return refusal

    def count_refusal(self, connection: GuardedConnection, refusal: Refusal) -> str:
        self.metrics.inc("messenger_connections_refused_total", reason=refusal)
        self.refusing.warn("refusing connections: %s (last from %s)", refusal, connection.client)
        return "server full\n" if refusal is Refusal.SERVER_FULL else "too many connections\n"

    def refuse_early(self, connection: GuardedConnection, refusal: Refusal) -> None:
        """Over a cap before its request was read: a 503, the write side shut, and the
        socket closed once the peer has read it (or at once if too many linger)."""
        connection.refused = refusal
        if connection.entered:  # it holds no place: give it back now, not at its close
            self.admission.leave()
            connection.entered = False
        transport = connection.transport
        transport.write(_unavailable(self.count_refusal(connection, refusal)))
        if self.lingering >= LINGERING_MAX or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering += 1
        connection.lingering = True
        connection.deadline = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.abort)

    def connection_lost(self, connection: GuardedConnection) -> None:
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None
        if connection.lingering:
            self.lingering -= 1
            connection.lingering = False
        if connection.entered:
            self.admission.leave()
            connection.entered = False
        if connection.claimed is not None:
            self.admission.release(connection.claimed)
            connection.claimed = None
        self.connections.discard(connection)

    # -- HTTP ------------------------------------------------------------------------

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        guarded = cast(GuardedConnection, connection)
        if guarded.peer_address in self.config.trusted_proxies:
            # Several header lines are one list (RFC 9110 section 5.3), in order.
            forwarded = ",".join(request.headers.get_all("X-Forwarded-For"))
            guarded.client = client_address(
                guarded.peer_address, forwarded, self.config.trusted_proxies
            )
            refusal = self.claim(guarded, guarded.client)
            if refusal is not None:
                text = self.count_refusal(guarded, refusal)
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, text)
        path, _, query = request.path.partition("?")
        if request.method != "GET":
            response = connection.respond(http.HTTPStatus.METHOD_NOT_ALLOWED, "GET only\n")
            response.headers["Allow"] = "GET"
            return response
        if path == "/" and "Upgrade" in request.headers:
            origins = request.headers.get_all("Origin")  # browsers send one; scripts none
            hosts = request.headers.get_all("Host")
            if origins and not (
                len(origins) == len(hosts) == 1
                and origin_allowed(origins[0], hosts[0], self.config.allowed_origins)
            ):
                logger.info("refused a WebSocket from origin %r", origins[0][:200])
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            return None  # the WebSocket handshake goes on
        if path.startswith(FILES_PREFIX):
            # Two Authorization lines (a websockets MultipleValuesError) mean none.
            authorization = request.headers.get_all("Authorization")
            return await self.download(
                guarded,
                path.removeprefix(FILES_PREFIX),
                authorization[0] if len(authorization) == 1 else None,
                query,
            )
        asset = self.assets.get(path)
        if asset is not None:
            return self._asset(connection, request, asset)
        if path == "/metrics":
            refused = self._refuse_metrics(guarded, request)
            if refused is not None:
                return refused
        route = self.http_routes.get(path)
        if route is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        status, content_type, body = route()
        response = _respond(connection, content_type, body)
        if status != http.HTTPStatus.OK:
            response = dataclasses.replace(
                response, status_code=status, reason_phrase=http.HTTPStatus(status).phrase
            )
        return response

    def _refuse_metrics(self, connection: GuardedConnection, request: Request) -> Response | None:
        """The figures say how many are online, how fast messages go, what is refused:
        for the operator, not for anyone who can reach the port."""
        token = self.config.metrics_token
        if token is None:
            if _is_loopback(connection.client):
                return None
            return connection.respond(
                http.HTTPStatus.FORBIDDEN,
                "metrics are served to this machine only; see --metrics-token\n",
            )
        given = request.headers.get_all("Authorization")
        scheme, _, credentials = given[0].partition(" ") if len(given) == 1 else ("", "", "")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), token.encode()
        ):
            return None
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "bearer token needed\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response

    def _asset(self, connection: ServerConnection, request: Request, asset: Asset) -> Response:
        if asset.etag in request.headers.get_all("If-None-Match"):
            response = connection.respond(http.HTTPStatus.NOT_MODIFIED, "")
            del response.headers["Content-Type"]
            del response.headers["Content-Length"]
            response.body = b""
            for name, value in asset.headers().items():
                response.headers[name] = value
            return response
        return _respond(connection, asset.content_type, asset.body, asset.headers())

    async def download(
        self, connection: GuardedConnection, file_id: str, authorization: str | None, query: str
    ) -> Response:
        """``GET /files/{id}``: the file streamed as the reader takes it."""
        found = await self.files.http_file(file_id, authorization, query)
        if found is None:  # unknown, or not for this user: the same answer
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        stored, path, user = found
        if (
            self.downloads >= self.config.max_downloads
            or self.downloads_by_user[user] >= DOWNLOADS_PER_USER
        ):
            self.metrics.inc("messenger_connections_refused_total", reason="downloads_busy")
            return _busy(connection, "too many downloads\n")
        loop = asyncio.get_running_loop()
        try:
            file = await loop.run_in_executor(None, _open_file, path)
        except FileNotFoundError:  # deleted as unused between the check and the open
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        except OSError as error:  # out of fds, say: not a bug, and not for ever
            self.out_of_fds.warn("cannot open %s for a download: %s", path, error.strerror)
            return _busy(connection, "try again\n")
        head = _respond(
            connection,
            stored.content_type,
            b"",
            {"Content-Disposition": content_disposition(stored.name), **FILE_HEADERS},
        )
        del head.headers["Content-Length"]  # one, the file's (a browser refuses two)
        head.headers["Content-Length"] = str(stored.size)
        self.downloads += 1
        self.downloads_by_user[user] += 1
        connection.downloading = True
        try:
            await self.stream(connection, head.serialize(), file, stored.size)
        finally:
            self.downloads -= 1
            self.downloads_by_user[user] -= 1
            if not self.downloads_by_user[user]:
                del self.downloads_by_user[user]
            connection.downloading = False
            await loop.run_in_executor(None, file.close)
        # The response is out: once the connection is closed, websockets sends nothing.
        return head

    async def stream(
        self, connection: GuardedConnection, head: bytes, file: BinaryIO, size: int
    ) -> None:
        transport = connection.transport
        loop = asyncio.get_running_loop()
        transport.write(head)
        left = size
        try:
            while left > 0 and not transport.is_closing():
                piece = await loop.run_in_executor(None, file.read, min(DOWNLOAD_PIECE, left))
                if not piece:  # the file shrank: the length promised cannot be kept
                    break
                transport.write(piece)
                left -= len(piece)
                await self.drained(connection)
            if left:
                transport.abort()
            else:
                transport.close()
            while not connection.connection_lost_waiter.done():
                await self.drained(connection, connection.connection_lost_waiter)
        except TimeoutError:
            self.metrics.inc("messenger_connections_closed_total", reason="download_stalled")
            logger.warning(
                "cutting off a download to %s: nothing taken for %.0f s",
                connection.client,
                self.config.stall_timeout,
            )
            transport.abort()
        except OSError:  # the reader went away (reset): nothing more to send
            transport.abort()
        await asyncio.shield(connection.connection_lost_waiter)

    async def drained(
        self, connection: GuardedConnection, until: asyncio.Future[None] | None = None
    ) -> None:
        """Until the write buffer is low again (or ``until`` is done); TimeoutError if the
        reader took nothing at all for ``stall_timeout``. A slow reader is never cut off."""
        transport = connection.transport
        waiter = until if until is not None else asyncio.ensure_future(connection.drain())
        left = transport.get_write_buffer_size()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.stall_timeout):
                        await asyncio.shield(waiter)
                    return
                except TimeoutError:
                    now = transport.get_write_buffer_size()
                    if now >= left:
                        raise
                    left = now
        finally:
            if until is None:
                waiter.cancel()

    # -- WebSocket ---------------------------------------------------------------------

    async def serve_connection(self, connection: ServerConnection) -> None:
        guarded = cast(GuardedConnection, connection)
        session = Session(WebSocketPeer(connection, self.closing, self.outbox), guarded.client)
        guarded.session = session
        in_flight: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(PIPELINE)
        logger.debug("connection from %s", session.remote)
        try:
            async for frame in connection:
                if isinstance(frame, bytes):
                    await connection.close(CLOSE_UNSUPPORTED_DATA, "text frames only")
                    break
                payload = self.dispatcher.parse(frame)
                del frame  # the parsed payload is all that is kept
                if self.dispatcher.needs_order(payload):
                    if in_flight:
                        await asyncio.wait(in_flight)
                    await self.answer(session, payload)
                    continue
                await room.acquire()
                task = asyncio.create_task(self.answer(session, payload))
                del payload
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: room.release())
        except ConnectionClosed:
            pass
        finally:
            self.hub.detach(session)
            if in_flight:  # their events are already decided: let them be written
                await asyncio.wait(in_flight)
            logger.debug("connection from %s closed (%s)", session.remote, connection.close_code)

    async def answer(self, session: Session, payload: Any) -> None:
        self.in_flight += 1
        try:
            reply = await self.dispatcher.handle(session, payload)
        finally:
            self.in_flight -= 1
        if reply is not None:
            # Like an event: written at once, counted towards the unsent bound.
            self.hub.reply(session, reply)


def _open_file(path: Path) -> BinaryIO:
    return path.open("rb")


class RedactingFilter(logging.Filter):
    """websockets' own log lines, made fit for an operator log: frame dumps without
    secrets, secret headers blanked, and its per-connection INFO lines (open,
    closed, rejected: one per attempt in a flood) moved down to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            if not WEBSOCKETS_LOGGER.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        args = record.args
        if isinstance(args, tuple) and args:
            first = args[0]
            if isinstance(first, Frame):
                shown = (
                    redacted_json(bytes(first.data))
                    if first.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
                    else f"[{len(first.data)} bytes]"
                )
                record.args = (f"{first.opcode.name} {shown}", *args[1:])
            elif len(args) == 2 and record.msg in ("< %s: %s", "> %s: %s"):
                record.args = (first, redacted_header(str(first), str(args[1])))
        return True


WEBSOCKETS_LOGGER: Final = logging.getLogger("messenger.server.websockets")
WEBSOCKETS_LOGGER.addFilter(RedactingFilter())


def _is_loopback(address: str) -> bool:
    """127.0.0.0/8, ``::1``, and ``::ffff:127.x.y.z`` as a dual-stack socket names a
    client of this machine (Python 3.11's ``is_loopback`` says False for that one)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback
