"""Files: uploads in chunks to a temp file, stored content-addressed by SHA-256
under ``state_dir/files``, downloads over RPC or ``GET /files/{id}``.

No path ever comes from a client: a stored file's path is its digest, a temp
file's path is a random id, and the client's file name is only a label. All disk
work runs on a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Final

from server.auth import token_hash
from server.domain import rules, views
from server.domain.events import FileDropped, FileUploaded
from server.domain.model import FileId, StoredFile, UserKey, user_key
from server.errors import Forbidden, InvalidParams, NotFound, TooLarge
from server.hub import Session
from server.log import fsync_directory
from server.rpc import Doc, Length, Range, rpc_method
from server.service import Service

logger = logging.getLogger("messenger.server.files")

UPLOADS_PER_USER: Final = 4
UPLOADS_IN_ALL: Final = 256
HTTP_READS: Final = 8  # GET /files/{id} reading at once (each holds a whole file)
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*")
UploadParam = Annotated[str, Length(1, 64), Doc("an upload id from upload.begin")]


def clean_name(name: str) -> str:
    """A label safe to show and to put in a header: no directories, no controls."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    name = name.lstrip(".") or "file"
    return name[:255]


@dataclasses.dataclass(slots=True, eq=False)
class Upload:
    id: str
    user: UserKey
    name: str
    size: int
    content_type: str
    path: Path
    digest: Any  # hashlib's sha256 object
    received: int = 0
    touched: float = dataclasses.field(default_factory=time.monotonic)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class FileMethods:
    def __init__(self, service: Service, state_dir: Path) -> None:
        self.service = service
        self.state = service.state
        self.config = service.config
        self.stored = state_dir / "files"
        self.incoming = state_dir / "uploads"
        self.uploads: dict[str, Upload] = {}
        self.stored.mkdir(parents=True, exist_ok=True)
        # Uploads do not survive a restart: what was half sent is dropped.
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        # Every change to stored blobs goes through this one thread, in order: a
        # deletion queued before a store of the same content cannot undo it.
        self.blob_io = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="messenger-files"
        )
        self.storing: collections.Counter[str] = collections.Counter()  # digests on their way
        self.http_reads = asyncio.Semaphore(HTTP_READS)
        service.housekeeping_hooks.append(self.drop_idle_uploads)
        service.housekeeping_hooks.append(self.drop_unused_files)

    # -- uploads -------------------------------------------------------------------

    @rpc_method("upload.begin")
    async def begin(
        self,
        session: Session,
        *,
        name: Annotated[str, Length(1, 1024), Doc("the file's name (a label only)")],
        size: Annotated[int, Range(0, None), Doc("bytes")],
        content_type: Annotated[str, Length(1, 255), Doc("a MIME type")] | None = None,
    ) -> dict[str, Any]:
        """Start an upload; refused before any data when ``size`` is over the limit."""
        account = self.service.account(session)
        limit = self.config.max_file_size
        if size > limit:
            raise TooLarge(f"Expected a file of at most {limit} bytes, but got {size}", limit)
        key = user_key(account.name)
        mine = sum(1 for upload in self.uploads.values() if upload.user == key)
        if mine >= UPLOADS_PER_USER or len(self.uploads) >= UPLOADS_IN_ALL:
            raise Forbidden(
                f"Expected at most {UPLOADS_PER_USER} uploads in progress per user; "
                "finish one or wait for it to be dropped"
            )
        upload_id = secrets.token_hex(12)
        path = self.incoming / upload_id  # created by the first chunk (or by finish)
        if content_type is None or not _CONTENT_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"
        self.uploads[upload_id] = Upload(
            upload_id, key, clean_name(name), size, content_type.lower(), path, hashlib.sha256()
        )
        return {"upload": upload_id, "chunk_size": self.config.upload_chunk_size}

    @rpc_method("upload.chunk")
    async def chunk(
        self,
        session: Session,
        *,
        upload: UploadParam,
        data: Annotated[str, Length(0, 2**21), Doc("the next bytes, base64")],
    ) -> dict[str, Any]:
        """Append the next chunk (in order); refused once past the declared size."""
        current = self._upload(session, upload)
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error as error:
            raise InvalidParams(f"Expected base64 data, but got an error: {error}") from None
        async with self._locked(current):
            if current.received + len(raw) > current.size:
                await self._drop(current)
                raise TooLarge(
                    f"Expected at most {current.size} bytes as declared, "
                    f"but got {current.received + len(raw)}; the upload is dropped",
                    current.size,
                )
            await self.service.off_loop(_append, current.path, raw, current.digest)
            current.received += len(raw)
            current.touched = time.monotonic()
        return {"received": current.received}

    @rpc_method("upload.finish")
    async def finish(self, session: Session, *, upload: UploadParam) -> dict[str, Any]:
        """Store the file; it can then be sent with ``send {file}``."""
        current = self._upload(session, upload)
        uploader = self.service.account(session).name
        async with self._locked(current):
            if current.received != current.size:
                raise InvalidParams(
                    f"Expected {current.size} bytes, but got {current.received} so far"
                )
            del self.uploads[current.id]
            sha256 = current.digest.hexdigest()
            self.storing[sha256] += 1
            try:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self.blob_io, _store, current.path, self.stored / sha256)
                event = FileUploaded(
                    FileId("f" + secrets.token_hex(8)),
                    current.name,
                    current.size,
                    current.content_type,
                    sha256,
                    uploader,
                    self.service.clock(),
                )
                await self.service.commit([event])
            finally:
                self.storing[sha256] -= 1
                if not self.storing[sha256]:
                    del self.storing[sha256]
        logger.info("user %s stored a file of %d bytes", uploader, current.size)
        return {"file": views.file_view(self.state.files[event.file])}

    @rpc_method("upload.abort")
    async def abort(self, session: Session, *, upload: UploadParam) -> dict[str, Any]:
        """Give up an upload in progress (it frees one of your upload slots)."""
        current = self._upload(session, upload)
        async with self._locked(current):
            await self._drop(current)
        return {}

    @contextlib.asynccontextmanager
    async def _locked(self, upload: Upload) -> AsyncIterator[None]:
        """The upload's lock, once it is certain the upload is still in progress (a
        request queued on the lock behind an abort or a finish finds it gone)."""
        async with upload.lock:
            if self.uploads.get(upload.id) is not upload:
                raise NotFound(f"No upload {upload.id!r} of yours in progress")
            yield

    def _upload(self, session: Session, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.user != session.key:
            raise NotFound(f"No upload {upload_id!r} of yours in progress")
        return upload

    def _drop(self, upload: Upload) -> asyncio.Future[None]:
        """Forget ``upload`` and delete its bytes; done once they are gone, so that a
        request that drops an upload answers only then."""
        self.uploads.pop(upload.id, None)
        remove = functools.partial(upload.path.unlink, missing_ok=True)
        return asyncio.get_running_loop().run_in_executor(None, remove)

    def drop_unused_files(self) -> None:
        """Forget the files no live or pending message carries, once a message lifetime
        (at least an hour) has passed since their upload; then delete their bytes."""
        now = self.service.clock()
        unused = self.state.unused_files(now, max(self.config.message_ttl, 3600) * 1000)
        if not unused:
            return
        logger.info("dropping %d stored files no message carries any more", len(unused))
        durable = self.service.record([FileDropped(stored.id, now) for stored in unused])
        digests = {stored.sha256 for stored in unused}

        def delete(_: asyncio.Future[None]) -> None:
            if durable.cancelled() or durable.exception() is not None:
                return
            kept = {stored.sha256 for stored in self.state.files.values()}
            loop = asyncio.get_running_loop()
            for sha256 in digests - kept - set(self.storing):
                remove = functools.partial((self.stored / sha256).unlink, missing_ok=True)
                loop.run_in_executor(self.blob_io, remove)

        durable.add_done_callback(delete)

    def close(self) -> None:
        self.blob_io.shutdown(wait=True)

    def drop_idle_uploads(self) -> None:
        deadline = time.monotonic() - self.config.upload_idle_timeout
        for upload in list(self.uploads.values()):
            if upload.touched < deadline and not upload.lock.locked():
                logger.info("dropping an upload idle for %.0f s", self.config.upload_idle_timeout)
                self._drop(upload)

    # -- downloads -----------------------------------------------------------------

    @rpc_method("download")
    async def download(
        self,
        session: Session,
        *,
        file: Annotated[str, Length(1, 64), Doc("a file id")],
        offset: Annotated[int, Range(0, None), Doc("first byte")] | None = None,
        length: Annotated[int, Range(1, None), Doc("bytes at most (capped)")] | None = None,
    ) -> dict[str, Any]:
        """A piece of a file you can see, base64; ``eof`` once it reaches the end."""
        self.state.expire(self.service.clock())  # a file seen only through an expired message
        stored = rules.find_file(self.state, self.service.account(session), file)
        offset = offset or 0
        if offset > stored.size:
            raise InvalidParams(f"Expected an offset of at most {stored.size}, but got {offset}")
        length = min(length or self.config.upload_chunk_size, self.config.upload_chunk_size)
        raw = await self.service.off_loop(_read, self.stored / stored.sha256, offset, length)
        return {
            "data": base64.b64encode(raw).decode(),
            "offset": offset,
            "size": stored.size,
            "eof": offset + len(raw) >= stored.size,
        }

    async def http_get(
        self, file_id: str, authorization: str | None
    ) -> tuple[StoredFile, bytes] | None:
        """``GET /files/{id}``: the file for a valid bearer token that may see it."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        device = self.state.devices_by_token.get(token_hash(token.strip()))
        if device is None:
            return None
        self.state.expire(self.service.clock())
        try:
            stored = rules.find_file(self.state, self.state.users[user_key(device.user)], file_id)
            async with self.http_reads:  # whole files in memory: a few at a time
                body = await self.service.off_loop(
                    _read, self.stored / stored.sha256, 0, stored.size
                )
        except NotFound:
            return None
        return stored, body


def content_disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


# -- blocking work, run on a thread ----------------------------------------------


def _append(path: Path, data: bytes, digest: Any) -> None:
    with _open_for_append(path) as file:
        file.write(data)
    digest.update(data)


def _open_for_append(path: Path) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")


def _store(incoming: Path, destination: Path) -> None:
    with _open_for_append(incoming) as file:  # an empty file had no chunk to create it
        os.fsync(file.fileno())
    os.replace(incoming, destination)  # the same content may be there: same bytes
    fsync_directory(destination.parent)


def _read(path: Path, offset: int, length: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(length)
    except FileNotFoundError:  # deleted as unused between the check and the read
        raise NotFound("No such file any more") from None
