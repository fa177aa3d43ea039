"""WebSocket and HTTP on one port: the only module that imports websockets.

Frames go to the dispatcher; replies and events go back as text frames holding
orjson bytes. Requests of one connection are decided in the order they arrive
and may then wait for the disk together (up to ``PIPELINE`` at a time); a frame
with a session method (``login``...) is handled alone, after those before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import logging
from collections.abc import Callable
from typing import Any, Final

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from server.config import Config
from server.files import FileMethods, content_disposition
from server.hub import Hub, Session
from server.rpc import Dispatcher
from server.webclient import Asset, load_assets, origin_allowed

logger = logging.getLogger("messenger.server.transport")

PIPELINE: Final = 64  # requests of one connection in flight at once

# RFC 6455 section 7.4.1 close codes.
CLOSE_UNSUPPORTED_DATA: Final = 1003


FILES_PREFIX: Final = "/files/"
# Uploaded bytes are never a page of this origin: opened directly they download, and
# a file that claims to be HTML runs nothing (sandboxed, no scripts, no sniffing).
FILE_HEADERS: Final = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=600",  # a file id's bytes never change
}


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


class WebSocketPeer:
    """``hub.Peer`` over a websockets connection."""

    __slots__ = ("closing", "connection", "frames")

    def __init__(
        self, connection: ServerConnection, closing: set[asyncio.Task[None]], frames: TextFrames
    ) -> None:
        self.connection = connection
        self.closing = closing
        self.frames = frames

    def write_text(self, data: bytes) -> None:
        # Written without waiting for the peer: never blocks the fan-out.
        connection = self.connection
        protocol = connection.protocol
        if (
            protocol.state is State.OPEN
            and connection.send_in_progress is None
            and not protocol.extensions
            and not protocol.debug
        ):
            # What broadcast() does for one connection, with the frame made once.
            connection.transport.write(self.frames.of(data))
        else:  # closing, or frames logged: broadcast() skips or logs as it should
            broadcast((connection,), data, text=True)

    def buffered(self) -> int:
        return self.connection.transport.get_write_buffer_size()

    def abort(self) -> None:
        self.connection.transport.abort()

    def close(self, code: int, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self.connection.close(code, reason))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)


class Transport:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        dispatcher: Dispatcher,
        http_routes: dict[str, Callable[[], tuple[int, str, bytes]]],
        files: FileMethods,
    ) -> None:
        self.files = files
        self.config = config
        self.hub = hub
        self.dispatcher = dispatcher
        self.http_routes = http_routes
        self.closing: set[asyncio.Task[None]] = set()
        self.frames = TextFrames()
        self.server: Server | None = None
        self.assets = load_assets()

    async def start(self) -> Server:
        self.server = await serve(
            self.serve_connection,
            self.config.host,
            self.config.port,
            process_request=self.process_request,
            max_size=self.config.frame_limit,  # larger frames: close 1009 (RFC 6455 7.4.1)
            compression=None,  # fan-out writes the same bytes to all: no per-peer deflate
            logger=logging.getLogger("messenger.server.websockets"),
        )
        return self.server

    async def stop(self) -> None:
        """Stop listening and close every connection with 1001 (going away)."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
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
            found = await self.files.http_get(
                path.removeprefix(FILES_PREFIX), request.headers.get("Authorization"), query
            )
            if found is None:  # unknown, or not for this user: the same answer
                return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
            stored, body = found
            return _respond(
                connection,
                stored.content_type,
                body,
                {"Content-Disposition": content_disposition(stored.name), **FILE_HEADERS},
            )
        asset = self.assets.get(path)
        if asset is not None:
            return self._asset(connection, request, asset)
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

    async def serve_connection(self, connection: ServerConnection) -> None:
        remote = "{}:{}".format(*connection.remote_address[:2])
        session = Session(WebSocketPeer(connection, self.closing, self.frames), remote)
        in_flight: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(PIPELINE)
        logger.debug("connection from %s", remote)
        try:
            async for frame in connection:
                if isinstance(frame, bytes):
                    await connection.close(CLOSE_UNSUPPORTED_DATA, "text frames only")
                    break
                payload = self.dispatcher.parse(frame)
                if self.dispatcher.needs_order(payload):
                    if in_flight:
                        await asyncio.wait(in_flight)
                    await self.answer(connection, session, payload)
                    continue
                await room.acquire()
                task = asyncio.create_task(self.answer(connection, session, payload))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: room.release())
        except ConnectionClosed:
            pass
        finally:
            self.hub.detach(session)
            if in_flight:  # their events are already decided: let them be written
                await asyncio.wait(in_flight)
            logger.debug("connection from %s closed (%s)", remote, connection.close_code)

    async def answer(self, connection: ServerConnection, session: Session, payload: Any) -> None:
        reply = await self.dispatcher.handle(session, payload)
        if reply is not None:
            with contextlib.suppress(ConnectionClosed):
                await connection.send(reply, text=True)
