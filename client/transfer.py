"""Files over the wire: uploads (``upload.begin``, ``upload.chunk``..., ``upload.finish``)
and downloads (``download`` chunk by chunk), base64 in JSON-RPC frames.

The disk is touched on a thread only (``asyncio.to_thread``), never on the event
loop, so events keep arriving during a transfer. A download goes to a name of this
client's choosing: the server's file name is sanitised to a bare name, and an
existing file is never overwritten.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import mimetypes
import os
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final, Protocol

from client.connection import Session
from client.errors import ClientError, ConnectionLost, RpcError, UsageError
from client.model import Json
from client.render import size_text
from wire import ErrorCode

# Room for " (999)" and a little more within the common 255-byte name limit.
NAME_BYTES_MAX: Final = 240
SUFFIXES_MAX: Final = 1000
_UNSAFE: Final = frozenset('<>:"|?*')  # refused by some file systems the file may go to


class Progress(Protocol):
    def advance(self, done: int) -> None:
        """``done`` bytes of the total have gone through."""

    def close(self) -> None:
        """The transfer is over (finished or failed): take the bar away."""


ProgressFactory = Callable[[str, int], Progress]


class TransferFailed(ClientError):
    """A transfer broke off or its bytes did not check out; nothing is left behind."""


# -- uploads ----------------------------------------------------------------------


async def upload(session: Session, where: str, progress: ProgressFactory) -> Json:
    """Upload the file at ``where`` (``~`` expanded); the server's ``file`` object.

    The size goes first (``upload.begin``), so a file over the server's limit is
    refused (-32006) before a byte of it is read.
    """
    path, size = await asyncio.to_thread(_regular_file, where)
    params: Json = {"name": path.name, "size": size}
    content_type, _ = mimetypes.guess_type(path.name)
    if content_type is not None:
        params["content_type"] = content_type
    # Not repeated on a reconnection: chunks are appended, a repeat could double one.
    try:
        begun = await session.call("upload.begin", params, retry=False)
    except RpcError as exc:
        limit = exc.data.get("max") if isinstance(exc.data, dict) else None
        if exc.error_code is not ErrorCode.TOO_LARGE or not isinstance(limit, int):
            raise
        raise TransferFailed(
            f"Too large: {path.name} is {size_text(size)}; the server takes at most "
            f"{size_text(limit)}"
        ) from exc
    upload_id, chunk_size = begun["upload"], max(1, int(begun["chunk_size"]))
    digest = hashlib.sha256()
    bar = progress(f"Sending {path.name}", size)
    try:
        file: IO[bytes] = await asyncio.to_thread(path.open, "rb")
        try:
            sent = 0
            while sent < size:
                chunk = await asyncio.to_thread(file.read, min(chunk_size, size - sent))
                if not chunk:
                    raise TransferFailed(f"{path} shrank while it was being sent; nothing was sent")
                digest.update(chunk)
                data = base64.b64encode(chunk).decode("ascii")
                await session.call("upload.chunk", {"upload": upload_id, "data": data}, retry=False)
                sent += len(chunk)
                bar.advance(sent)
        finally:
            await asyncio.to_thread(file.close)
        finished = await session.call("upload.finish", {"upload": upload_id}, retry=False)
    except ConnectionLost as exc:
        raise TransferFailed(f"Sending {path.name} broke off ({exc}); send it again") from exc
    except OSError as exc:
        raise TransferFailed(f"Cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        bar.close()
    stored: Json = finished["file"]
    if stored["sha256"] != digest.hexdigest():
        raise TransferFailed(f"The server stored other bytes than {path} holds; send it again")
    return stored


def _expand(where: str) -> Path:
    """``where`` with ``~`` or ``~user`` expanded; ``UsageError`` for an unknown user."""
    try:
        return Path(where).expanduser()
    except RuntimeError:  # ~nosuchuser: no home directory to put there
        raise UsageError(f"Cannot find the home directory in {where!r}") from None


def _regular_file(where: str) -> tuple[Path, int]:
    path = _expand(where)
    try:
        found = path.stat()
    except FileNotFoundError:
        raise UsageError(f"No file {path}") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(found.st_mode):
        raise UsageError(f"Expected a file to send, but {path} is not a regular file")
    return path, found.st_size


# -- downloads --------------------------------------------------------------------


async def download(
    session: Session,
    file_id: str,
    known: Json | None,
    requested: str | None,
    progress: ProgressFactory,
    *,
    cwd: Path | None = None,
) -> tuple[Path, int, bool]:
    """Download a file to ``requested`` (a path, a directory, or None: the current
    directory), under a new name if that one is taken.

    The saved path, the size, and whether the SHA-256 was checked (it is known from
    the message that carried the file).
    """
    first = await session.call("download", {"file": file_id, "offset": 0})
    size: int = first["size"]
    name = safe_name((known or {}).get("name") or "", fallback=safe_name(file_id, "file"))
    path, file = await asyncio.to_thread(_create_new, requested, name, cwd or Path.cwd())
    sha256: str | None = (known or {}).get("sha256")
    digest = hashlib.sha256()
    bar = progress(f"Receiving {name}", size)
    kept = False
    try:
        piece = first
        received = 0
        while True:
            if piece["offset"] != received:
                raise TransferFailed(
                    f"Expected the piece at byte {received}, but got one at {piece['offset']}"
                )
            chunk = _decoded(piece["data"])
            digest.update(chunk)
            await asyncio.to_thread(file.write, chunk)
            received += len(chunk)
            if received > size:
                raise TransferFailed(f"Expected {size} bytes of {name}, but got more")
            bar.advance(received)
            if piece["eof"] or not chunk:
                break
            piece = await session.call("download", {"file": file_id, "offset": received})
        await asyncio.to_thread(_sync_and_close, file)
        if received != size:
            raise TransferFailed(f"Expected {size} bytes of {name}, but got {received}")
        if sha256 is not None and digest.hexdigest() != sha256:
            raise TransferFailed(f"{name} arrived with another SHA-256 than it was sent with")
        kept = True
    except ConnectionLost as exc:
        raise TransferFailed(f"Receiving {name} broke off ({exc}); /get it again") from exc
    except OSError as exc:
        raise TransferFailed(f"Cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        bar.close()
        if not kept:
            await asyncio.to_thread(_discard, file, path)
    return path, size, sha256 is not None


def safe_name(name: str, fallback: str) -> str:
    """A bare file name from a name someone else chose: no directory, no control or
    format characters (no bidi tricks), no leading dot, not too long."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        "_" if ch in _UNSAFE else ch for ch in name if unicodedata.category(ch)[0] != "C"
    )
    name = name.strip().lstrip(".").strip()
    stem, dot, suffix = name.rpartition(".")
    if len(name.encode()) > NAME_BYTES_MAX:
        # Cut the stem, keep the extension: the name still says what the file is.
        suffix = suffix if dot and len(suffix) <= 16 else ""
        room = NAME_BYTES_MAX - len(suffix.encode()) - (1 if suffix else 0)
        base = (stem if suffix else name).encode()[:room].decode(errors="ignore")
        name = f"{base}.{suffix}" if suffix else base
    return name or fallback


def numbered(path: Path, number: int) -> Path:
    """``report.pdf``, ``report (1).pdf``, ``report (2).pdf``..."""
    if number == 0:
        return path
    return path.with_name(f"{path.stem} ({number}){path.suffix}")


def _target(requested: str | None, name: str, cwd: Path) -> Path:
    if requested is None:
        return cwd / name
    path = _expand(requested)
    if not path.is_absolute():
        path = cwd / path
    if requested.endswith(("/", os.sep)) or path.is_dir():
        return path / name
    return path


def _create_new(requested: str | None, name: str, cwd: Path) -> tuple[Path, IO[bytes]]:
    """Open a file that did not exist: the target, or it numbered (O_EXCL, no races)."""
    target = _target(requested, name, cwd)
    for number in range(SUFFIXES_MAX):
        candidate = numbered(target, number)
        try:
            return candidate, candidate.open("xb")
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"Cannot write {candidate}: {exc.strerror or exc}") from exc
    raise UsageError(f"Cannot find a free name like {target}: {SUFFIXES_MAX} are taken")


def _decoded(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise TransferFailed(f"Expected base64 from the server, but got an error: {exc}") from exc


def _sync_and_close(file: IO[bytes]) -> None:
    with file:
        file.flush()
        os.fsync(file.fileno())


def _discard(file: IO[bytes], path: Path) -> None:
    with contextlib.suppress(OSError):
        file.close()
    path.unlink(missing_ok=True)
