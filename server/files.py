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
import errno
import functools
import hashlib
import hmac
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
from server.blobs import Blobs, LocalBlobs
from server.domain import rules, views
from server.domain.events import Event, FileDropped, FileUploaded
from server.domain.model import Device, DeviceId, FileId, StoredFile, UserKey, user_key
from server.domain.state import State
from server.errors import Forbidden, InternalError, InvalidParams, NotFound, RateLimited, TooLarge
from server.hub import Session
from server.log import fsync_directory
from server.rpc import Doc, Length, Range, rpc_method
from server.service import Service

logger = logging.getLogger("messenger.server.files")

FILE_URL_TTL_MS: Final = 600_000  # a file.url works this long (the contract's maximum)
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*")
UploadParam = Annotated[str, Length(1, 64), Doc("an upload id from upload.begin")]
# What a full disk (or a file size limit) looks like to write(): the file did not fit.
_NO_ROOM: Final = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


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
        self.blobs: Blobs = LocalBlobs()  # a cluster node's Object Store, set by app
        self.removing: set[asyncio.Task[None]] = set()
        service.housekeeping_hooks.append(self.drop_idle_uploads)
        service.housekeeping_hooks.append(self.drop_unused_files)

    @property
    def state(self) -> State:
        return self.service.state  # replaced when a cluster node re-reads the log

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
        free = (await self.service.off_loop(shutil.disk_usage, self.incoming)).free
        if size + self.config.disk_reserve > free:  # and at every chunk (_append)
            raise _no_room(max(0, free - self.config.disk_reserve))
        # From here on nothing is awaited: the slots and bytes counted are still so.
        key = user_key(account.name)
        mine = [upload for upload in self.uploads.values() if upload.user == key]
        self._check_slots(len(mine))
        rules.check_storage(self.state, account, size, sum(upload.size for upload in mine))
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
            try:
                await self.service.off_loop(
                    _append, current.path, raw, current.digest, self.config.disk_reserve
                )
            except OSError as error:
                await self._drop(current)
                raise _refused(error) from None
            current.received += len(raw)
            current.touched = time.monotonic()
        return {"received": current.received}

    @rpc_method("upload.finish")
    async def finish(self, session: Session, *, upload: UploadParam) -> dict[str, Any]:
        """Store the file; it can then be sent with ``send {file}``."""
        current = self._upload(session, upload)
        account = self.service.account(session)
        uploader = account.name
        async with self._locked(current):
            if current.received != current.size:
                raise InvalidParams(
                    f"Expected {current.size} bytes, but got {current.received} so far"
                )
            del self.uploads[current.id]
            try:  # again: other uploads may have been stored since this one began
                rules.check_storage(self.state, account, current.size, 0)
            except TooLarge:
                await self._drop(current)
                raise
            sha256 = current.digest.hexdigest()
            self.storing[sha256] += 1
            refused = False
            try:
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(
                        self.blob_io, _store, current.path, self.stored / sha256
                    )
                except OSError as error:
                    await self._drop(current)
                    raise _refused(error) from None
                await self.blobs.publish(sha256)
                # Once more, with nothing awaited between it and the record: while the
                # bytes were stored, another upload of the user's may have been admitted.
                try:
                    rules.check_storage(self.state, self.service.account(session), current.size, 0)
                except TooLarge:
                    await self._drop(current)
                    refused = True
                    raise
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
                if refused:
                    self._forget_bytes(sha256)
        logger.info("user %s stored a file of %d bytes", uploader, current.size)
        return {"file": views.file_view(self.state.files[event.file])}

    def _forget_bytes(self, sha256: str) -> None:
        """The bytes of a file that was refused after they were stored: gone from here
        and, after the grace, from the cluster, unless the content is in use."""
        if sha256 in self.in_use():
            return
        loop = asyncio.get_running_loop()
        remove = functools.partial((self.stored / sha256).unlink, missing_ok=True)
        loop.run_in_executor(self.blob_io, remove)
        removing = loop.create_task(self.blobs.remove(sha256))
        self.removing.add(removing)
        removing.add_done_callback(self.removing.discard)

    @rpc_method("upload.abort")
    async def abort(self, session: Session, *, upload: UploadParam) -> dict[str, Any]:
        """Give up an upload in progress (it frees one of your upload slots)."""
        current = self._upload(session, upload)
        async with self._locked(current):
            await self._drop(current)
        return {}

    def _check_slots(self, mine: int) -> None:
        limit = self.config.uploads_per_user
        if mine >= limit:
            raise Forbidden(
                f"Expected at most {limit} uploads of yours in progress; "
                "finish one or wait for it to be dropped"
            )
        if len(self.uploads) >= self.config.uploads_in_all:
            raise RateLimited(
                "The server has too many uploads in progress; try again later",
                self.config.upload_idle_timeout,
            )

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
        """Forget ``upload`` at once; its partial file is gone when the result is done
        (a request awaits it, so that its reply comes after)."""
        self.uploads.pop(upload.id, None)
        remove = functools.partial(upload.path.unlink, missing_ok=True)
        # Shielded: a request given up meanwhile must not cancel the removal.
        return asyncio.shield(asyncio.get_running_loop().run_in_executor(None, remove))

    def drop_unused_files(self) -> None:
        """Forget the files no live or pending message carries, once a message lifetime
        (at least an hour) has passed since their upload; then delete their bytes."""
        if not self.service.writing:  # the writer drops them, for the whole cluster
            loop = asyncio.get_running_loop()
            loop.run_in_executor(self.blob_io, self.blobs.prune_cache, self.in_use())
            return
        unused: list[StoredFile] = []

        def drop(state: State, now: int) -> list[Event]:
            unused.extend(state.unused_files(now, max(self.config.message_ttl, 3600) * 1000))
            return [FileDropped(stored.id, now) for stored in unused]

        durable = self.service.executor.run_job(drop)
        if durable is None:
            return
        logger.info("dropping %d stored files no message carries any more", len(unused))
        digests = {stored.sha256 for stored in unused}

        def delete(_: asyncio.Future[None]) -> None:
            if durable.cancelled() or durable.exception() is not None:
                return
            for sha256 in digests:
                self._forget_bytes(sha256)

        durable.add_done_callback(delete)

    def in_use(self) -> set[str]:
        """The contents (SHA-256) of the stored files and of those being stored here."""
        return {stored.sha256 for stored in self.state.files.values()} | set(self.storing)

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
        # A file seen only through an expired message is not found.
        account = self.service.account(session)
        stored = rules.find_file(self.state, account, file, self.service.clock())
        offset = offset or 0
        if offset > stored.size:
            raise InvalidParams(f"Expected an offset of at most {stored.size}, but got {offset}")
        length = min(length or self.config.upload_chunk_size, self.config.upload_chunk_size)
        await self.blobs.fetch(stored.sha256)
        raw = await self.service.off_loop(_read, self.stored / stored.sha256, offset, length)
        return {
            "data": base64.b64encode(raw).decode(),
            "offset": offset,
            "size": stored.size,
            "eof": offset + len(raw) >= stored.size,
        }

    @rpc_method("file.url")
    async def url(
        self, session: Session, *, file: Annotated[str, Length(1, 64), Doc("a file id")]
    ) -> dict[str, Any]:
        """A path that downloads a file you can see with a plain GET, for 10 minutes."""
        now = self.service.clock()
        stored = rules.find_file(self.state, self.service.account(session), file, now)
        expires_at = now + FILE_URL_TTL_MS
        query = signed_query(stored.id, self.service.device(session), expires_at)
        return {"url": f"/files/{stored.id}?{query}", "expires_at": expires_at}

    async def http_file(
        self, file_id: str, authorization: str | None, query: str = ""
    ) -> tuple[StoredFile, Path, UserKey] | None:
        """``GET /files/{id}``: the file, where its bytes are and who asks, for a valid
        bearer token, or a URL signed by ``file.url`` and not expired, of a user who
        may (still) see it (the transport streams it)."""
        now = self.service.clock()
        if authorization is None and query:
            device = self._signer(file_id, query, now)
        else:
            scheme, _, token = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            device = self.state.devices_by_token.get(token_hash(token.strip()))
        if device is None:
            return None
        key = user_key(device.user)
        try:
            stored = rules.find_file(self.state, self.state.users[key], file_id, now)
            await self.blobs.fetch(stored.sha256)
        except NotFound:
            return None
        return stored, self.stored / stored.sha256, key

    def _signer(self, file_id: str, query: str, now: int) -> Device | None:
        """The device whose ``file.url`` signed this query, if valid and not expired."""
        fields = urllib.parse.parse_qs(query)
        try:
            (user,), (device_id,), (expires,), (signature,) = (
                fields[name] for name in ("user", "device", "expires", "sig")
            )
            expires_at = int(expires)
        except (KeyError, ValueError):  # missing, repeated or not a number
            return None
        if expires_at <= now or expires_at > now + FILE_URL_TTL_MS:
            return None
        account = self.state.users.get(user_key(user))
        device = None if account is None else account.devices.get(DeviceId(device_id))
        if device is None:  # logged out since: its URLs die with its token
            return None
        expected = _signature(file_id, device, expires_at)
        return device if hmac.compare_digest(signature, expected) else None


def signed_query(file_id: str, device: Device, expires_at: int) -> str:
    """The query of a ``file.url``: who asked, until when, and an HMAC-SHA256 of it
    keyed by the device's token hash (held in the shared state, so every node of a
    cluster checks it alike, and a logout revokes the device's URLs)."""
    return urllib.parse.urlencode(
        {
            "user": device.user,
            "device": device.id,
            "expires": expires_at,
            "sig": _signature(file_id, device, expires_at),
        }
    )


def _signature(file_id: str, device: Device, expires_at: int) -> str:
    message = f"file.url\n{file_id}\n{user_key(device.user)}\n{device.id}\n{expires_at}"
    digest = hmac.new(device.token_hash.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def content_disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


def _no_room(room: int) -> TooLarge:
    return TooLarge(
        f"Expected a file of at most {room} bytes: the server's disk has no room for more",
        room,
    )


def _refused(error: OSError) -> InternalError | TooLarge:
    """The answer to a failed write of an upload (it has been dropped)."""
    if error.errno in _NO_ROOM:
        logger.warning("an upload did not fit on the disk: %s", error.strerror)
        return _no_room(0)
    logger.warning("an upload could not be written: %s", error)
    return InternalError("The upload could not be written on the server; it is dropped")


# -- blocking work, run on a thread ----------------------------------------------


def _append(path: Path, data: bytes, digest: Any, reserve: int) -> None:
    # The log's reserve is kept at every write, whatever the uploads declared: many
    # uploads that each fitted at upload.begin cannot fill the disk together.
    if shutil.disk_usage(path.parent).free - len(data) < reserve:
        raise OSError(errno.ENOSPC, "the disk's free space is kept for the event log")
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
