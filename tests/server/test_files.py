"""Files end to end on a real server: uploads in chunks and their limits, sending a
file to a group, downloads over RPC and HTTP, who may see a file, where it is
stored, and abandoned uploads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from server.app import Running, run_server
from server.config import Config
from tests.server.extras_support import Clock, config_in, error_of, http_get
from tests.wsclient import Peer, user_device

MAX_FILE_SIZE = 1000
CHUNK = 64


def files_config(tmp_path: Path, **changes: Any) -> Config:
    return config_in(tmp_path, max_file_size=MAX_FILE_SIZE, upload_chunk_size=CHUNK, **changes)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def upload(
    peer: Peer, content: bytes, name: str = "photo.png", content_type: str = "image/png"
) -> dict[str, Any]:
    """Upload ``content`` in chunks of the size the server asks for; the stored file."""
    begun = await peer.call("upload.begin", name=name, size=len(content), content_type=content_type)
    assert begun["chunk_size"] == CHUNK
    for start in range(0, len(content), CHUNK):
        piece = content[start : start + CHUNK]
        received = await peer.call("upload.chunk", upload=begun["upload"], data=b64(piece))
        assert received == {"received": start + len(piece)}
    file: dict[str, Any] = (await peer.call("upload.finish", upload=begun["upload"]))["file"]
    return file


async def shared_group(owner: Peer, *members: str) -> str:
    chat_id: str = (await owner.call("chat.create", title="files"))["chat"]["id"]
    for member in members:
        await owner.call("chat.invite", chat=chat_id, user=member)
    return chat_id


def bearer(peer: Peer) -> dict[str, str]:
    assert peer.token is not None
    return {"Authorization": f"Bearer {peer.token}"}


async def test_begin_over_the_size_limit_is_refused_before_any_data(tmp_path: Path) -> None:
    """upload.begin over max_file_size is -32006 with data.max; exactly at the limit it is fine."""
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        error = await error_of(alice, "upload.begin", name="big.bin", size=MAX_FILE_SIZE + 1)
        assert (error.code, error.data) == (-32006, {"max": MAX_FILE_SIZE})
        begun = await alice.call("upload.begin", name="fits.bin", size=MAX_FILE_SIZE)
        assert begun["chunk_size"] == CHUNK


async def test_chunks_past_the_declared_size_are_too_large_and_drop_the_upload(
    tmp_path: Path,
) -> None:
    """A chunk that goes past the declared size is -32006 (max = that size); the upload is gone."""
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        upload_id = (await alice.call("upload.begin", name="a.txt", size=10))["upload"]
        assert await alice.call("upload.chunk", upload=upload_id, data=b64(b"12345678")) == {
            "received": 8
        }
        error = await error_of(alice, "upload.chunk", upload=upload_id, data=b64(b"9abc"))
        assert (error.code, error.data) == (-32006, {"max": 10})
        error = await error_of(alice, "upload.chunk", upload=upload_id, data=b64(b"9a"))
        assert error.code == -32003
        assert list((running_state_dir(running) / "uploads").iterdir()) == []


async def test_bad_base64_is_invalid_params(tmp_path: Path) -> None:
    """A chunk that is not base64 is -32602 and does not count as received."""
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        upload_id = (await alice.call("upload.begin", name="a.txt", size=4))["upload"]
        for bad in ("not base64!", "abc", "YWJj\n"):
            error = await error_of(alice, "upload.chunk", upload=upload_id, data=bad)
            assert error.code == -32602, bad
        assert await alice.call("upload.chunk", upload=upload_id, data=b64(b"abcd")) == {
            "received": 4
        }


async def test_finish_with_bytes_missing_is_invalid_params(tmp_path: Path) -> None:
    """upload.finish before all declared bytes came is -32602; the upload can still be completed."""
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        upload_id = (await alice.call("upload.begin", name="a.txt", size=6))["upload"]
        await alice.call("upload.chunk", upload=upload_id, data=b64(b"abc"))
        assert (await error_of(alice, "upload.finish", upload=upload_id)).code == -32602
        await alice.call("upload.chunk", upload=upload_id, data=b64(b"def"))
        file = (await alice.call("upload.finish", upload=upload_id))["file"]
        assert file["sha256"] == hashlib.sha256(b"abcdef").hexdigest()
        assert (await error_of(alice, "upload.finish", upload=upload_id)).code == -32003


async def test_a_file_sent_to_a_group_is_downloaded_by_its_members(tmp_path: Path) -> None:
    """A file uploaded in chunks and sent to a group comes back whole to members (RPC, HTTP)."""
    content = os.urandom(200)
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        file = await upload(alice, content)
        assert file == {
            "id": file["id"],
            "name": "photo.png",
            "size": 200,
            "content_type": "image/png",
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        group = await shared_group(alice, "bob")
        sent = (await alice.call("send", chat=group, text="", file=file["id"]))["message"]
        assert sent["file"] == file
        assert (await bob.next_event("message"))["params"]["message"]["file"] == file

        pieces = []
        offset = 0
        while True:
            piece = await bob.call("download", file=file["id"], offset=offset, length=50)
            assert (piece["offset"], piece["size"]) == (offset, 200)
            pieces.append(base64.b64decode(piece["data"]))
            offset += len(pieces[-1])
            assert piece["eof"] == (offset == 200)
            if piece["eof"]:
                break
        assert [len(p) for p in pieces] == [50, 50, 50, 50]
        assert b"".join(pieces) == content
        whole = await bob.call("download", file=file["id"])  # capped at the chunk size
        assert base64.b64decode(whole["data"]) == content[:CHUNK]
        assert not whole["eof"]

        reply = await http_get(running, f"/files/{file['id']}", bearer(bob))
        assert reply.status == 200
        assert reply.body == content
        assert reply.headers["content-type"] == "image/png"
        assert reply.headers["content-length"] == "200"


async def test_a_non_member_cannot_see_the_file(tmp_path: Path) -> None:
    """To an outsider a file is -32003 over RPC and 404 over HTTP, as with no or a bad token."""
    content = b"secret bytes"
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        file = await upload(alice, content, "notes.txt", "text/plain")
        # Before it is posted anywhere only the uploader sees it.
        assert (await error_of(bob, "download", file=file["id"])).code == -32003
        group = await shared_group(alice, "bob")
        await alice.call("send", chat=group, text="see attached", file=file["id"])
        assert (await error_of(carol, "download", file=file["id"])).code == -32003
        path = f"/files/{file['id']}"
        for headers in (
            bearer(carol),
            {},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": f"Basic {bob.token}"},
        ):
            reply = await http_get(running, path, headers)
            assert (reply.status, content not in reply.body) == (404, True), headers
        unknown = await http_get(running, "/files/f0000000000000000", bearer(bob))
        assert unknown.status == 404
        assert (await http_get(running, path, bearer(bob))).body == content
        assert (await http_get(running, path, bearer(alice))).body == content


async def test_a_client_file_name_is_only_a_label(tmp_path: Path) -> None:
    """A name like ../../x/evil is stored as the label "evil"; the bytes live at files/<sha256>."""
    content = b"payload of a sneaky name"
    config = files_config(tmp_path)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        file = await upload(alice, content, "../../x/evil", "text/plain")
        assert file["name"] == "evil"
        stored = config.state_dir / "files" / hashlib.sha256(content).hexdigest()
        assert stored.read_bytes() == content
        assert list((config.state_dir / "files").iterdir()) == [stored]
        assert named_like_the_label(tmp_path) == []
        reply = await http_get(running, f"/files/{file['id']}", bearer(alice))
        assert "evil" in reply.headers["content-disposition"]
        assert "/" not in reply.headers["content-disposition"]


async def test_an_abandoned_upload_is_cleaned_up(tmp_path: Path) -> None:
    """An upload with no chunk for upload_idle_timeout loses its temp file and its id."""
    config = files_config(tmp_path, housekeeping_interval=0.05, upload_idle_timeout=0.1)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        upload_id = (await alice.call("upload.begin", name="a.bin", size=100))["upload"]
        await alice.call("upload.chunk", upload=upload_id, data=b64(b"x" * 10))
        temp = config.state_dir / "uploads" / upload_id
        assert temp.read_bytes() == b"x" * 10
        for _ in range(100):
            if not temp.exists():
                break
            await asyncio.sleep(0.02)
        assert not temp.exists()
        error = await error_of(alice, "upload.chunk", upload=upload_id, data=b64(b"y"))
        assert error.code == -32003


def named_like_the_label(root: Path) -> list[Path]:
    """Paths under ``root`` that the client's name could have made."""
    return [p for p in root.rglob("*") if "evil" in p.name or p.name == "x"]


def running_state_dir(running: Running) -> Path:
    return running.service.config.state_dir


async def test_a_file_is_no_longer_visible_through_a_message_that_expired(tmp_path: Path) -> None:
    """Once the only message with a file expires, members get -32003 and 404; the uploader not."""
    clock = Clock()
    content = b"short-lived"
    async with (
        run_server(files_config(tmp_path, message_ttl=60), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        file = await upload(alice, content, "a.txt", "text/plain")
        group = await shared_group(alice, "bob")
        await alice.call("send", chat=group, text="", file=file["id"])
        assert (await http_get(running, f"/files/{file['id']}", bearer(bob))).status == 200
        clock.advance(61)
        assert (await error_of(bob, "download", file=file["id"])).code == -32003
        assert (await http_get(running, f"/files/{file['id']}", bearer(bob))).status == 404
        assert (await http_get(running, f"/files/{file['id']}", bearer(alice))).body == content


async def test_chunks_sent_without_waiting_are_stored_in_order(tmp_path: Path) -> None:
    """Chunks and finish pipelined on one connection are taken in the order they were sent."""
    content = os.urandom(CHUNK * 8)
    async with (
        run_server(files_config(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        upload_id = (await alice.call("upload.begin", name="a.bin", size=len(content)))["upload"]
        calls = [
            alice.call("upload.chunk", upload=upload_id, data=b64(content[at : at + CHUNK]))
            for at in range(0, len(content), CHUNK)
        ]
        *received, finished = await asyncio.gather(
            *calls, alice.call("upload.finish", upload=upload_id)
        )
        assert [r["received"] for r in received] == list(range(CHUNK, len(content) + 1, CHUNK))
        assert finished["file"]["sha256"] == hashlib.sha256(content).hexdigest()
        reply = await http_get(running, f"/files/{finished['file']['id']}", bearer(alice))
        assert reply.body == content


async def test_an_aborted_upload_frees_its_slot_and_its_temp_file(tmp_path: Path) -> None:
    """upload.abort drops the temp file and the id, and gives the slot back for a new upload."""
    config = files_config(tmp_path)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
    ):
        begun = [
            (await alice.call("upload.begin", name=f"{n}.bin", size=10))["upload"] for n in range(4)
        ]
        assert (await error_of(alice, "upload.begin", name="5.bin", size=10)).code == -32002
        await alice.call("upload.chunk", upload=begun[0], data=b64(b"x" * 5))
        assert await alice.call("upload.abort", upload=begun[0]) == {}
        assert (
            await error_of(alice, "upload.chunk", upload=begun[0], data=b64(b"y"))
        ).code == -32003
        await alice.call("upload.begin", name="5.bin", size=10)
        temp = config.state_dir / "uploads" / begun[0]
        for _ in range(100):
            if not temp.exists():
                break
            await asyncio.sleep(0.01)
        assert not temp.exists()
