"""Behaviours of server/rpc.py that a mutation run (bench/mutation.py) found no test
pinning down: anonymous and session methods in a batch run in order, a batch's reply
fits its frame, and the OpenRPC document carries each method's docstring and each
``Pattern`` param's pattern."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import orjson

from server.app import Running, run_server
from server.log import EventLog
from server.service import Service
from tests.server.extras_support import config_in, http_get
from tests.wsclient import Peer, connected, user_device
from wire import USER_NAME_PATTERN


def request(method: str, request_id: Any, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}


async def exchange(peer: Peer, payload: Any) -> Any:
    """Send ``payload`` as one text frame; the reply frame, decoded."""
    return await peer.send_raw(orjson.dumps(payload).decode())


async def raw_reply(peer: Peer, payload: Any) -> bytes:
    """Send ``payload`` as one text frame; the reply frame as the server sent it."""
    await peer.connection.send(orjson.dumps(payload).decode())
    frame = await peer.connection.recv()
    return frame.encode() if isinstance(frame, str) else frame


def by_id(replies: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {reply["id"]: reply for reply in replies}


async def test_anonymous_methods_in_a_batch_run_in_order(running_server: Running) -> None:
    """register then login in one batch: the login sees the registration (the KDF of
    the registration would otherwise let the login run first, on no account)."""
    async with connected(running_server.url) as peer:
        replies = by_id(
            await exchange(
                peer,
                [
                    request("register", 1, user="alice", password="password1"),
                    request("login", 2, user="alice", password="password1"),
                ],
            )
        )
        assert "result" in replies[1], replies[1]
        assert replies[2]["result"]["user"] == "alice", replies[2]


async def test_a_batch_with_a_session_method_runs_in_order(running_server: Running) -> None:
    """login then status in one batch: status answers as the user just logged in."""
    async with connected(running_server.url) as peer:
        await peer.call("register", user="bob", password="password1")
        replies = by_id(
            await exchange(
                peer,
                [
                    request("login", "in", user="bob", password="password1"),
                    request("status", "st"),
                ],
            )
        )
        assert replies["in"]["result"]["user"] == "bob", replies["in"]
        assert "result" in replies["st"], replies["st"]
        assert replies["st"]["result"]["user"] == "bob"


# Two reads of the OpenRPC document (a few KB each): the second's longer id makes it
# the larger reply, so it is the one to give way.
BATCH = [request("rpc.discover", 1), request("rpc.discover", "the-larger-reply")]


async def batch_frame(running: Running) -> bytes:
    async with connected(running.url) as peer:
        return await raw_reply(peer, BATCH)


async def test_a_batch_reply_fits_the_frame_limit(tmp_path: Path) -> None:
    async with run_server(config_in(tmp_path / "wide")) as running:
        whole = await batch_frame(running)
    replies = by_id(orjson.loads(whole))
    assert all("result" in reply for reply in replies.values())
    size = len(whole)
    single = len(orjson.dumps(replies["the-larger-reply"]))
    assert size > single + 100  # a limit just under the whole still fits one result

    # At the boundary, a reply of exactly the limit: nothing gives way.
    async with run_server(config_in(tmp_path / "exact", frame_limit=size)) as running:
        exact = await batch_frame(running)
    assert exact == whole

    # One byte less: the largest result gives way to -32006, the other stays.
    async with run_server(config_in(tmp_path / "under", frame_limit=size - 1)) as running:
        under = await batch_frame(running)
    assert len(under) <= size - 1
    replies = by_id(orjson.loads(under))
    assert replies[1] == {"jsonrpc": "2.0", "result": replies[1]["result"], "id": 1}
    assert replies[1]["result"]["openrpc"] == "1.3.2"
    assert replies["the-larger-reply"]["error"]["code"] == -32006
    assert "result" not in replies["the-larger-reply"]


async def test_a_batch_reply_replaces_results_only(tmp_path: Path) -> None:
    """An error reply is never what gives way: the results do, largest first, until
    the frame fits."""
    long_id = "e" * 20_000  # the error reply carries it: larger than either result
    batch = [
        request("rpc.discover", 1),
        request("rpc.discover", 2),
        request("no.such.method", long_id),
    ]
    async with run_server(config_in(tmp_path / "wide")) as running, connected(running.url) as peer:
        whole = await raw_reply(peer, batch)
    replies = by_id(orjson.loads(whole))
    error = orjson.dumps(replies[long_id])
    result = orjson.dumps(replies[1])
    assert len(error) > len(result)
    limit = len(whole) - len(result) // 2  # one result must give way, one may stay
    small = config_in(tmp_path / "small", frame_limit=limit)
    async with run_server(small) as running, connected(running.url) as peer:
        reply = await raw_reply(peer, batch)
    assert len(reply) <= limit
    replies = by_id(orjson.loads(reply))
    assert replies[long_id]["error"]["code"] == -32601
    assert orjson.dumps(replies[long_id]) == error
    assert sorted("result" in replies[i] for i in (1, 2)) == [False, True]


async def test_openrpc_document_has_docstrings_and_patterns(running_server: Running) -> None:
    async with connected(running_server.url) as peer:
        document = await peer.call("rpc.discover")
    http = await http_get(running_server, "/openrpc.json")
    assert http.status == 200
    assert orjson.loads(http.body) == document
    methods = {method["name"]: method for method in document["methods"]}
    register = methods["register"]
    assert register["summary"] == inspect.getdoc(Service.register)
    assert register["summary"] == "Create an account; it joins the general chat."
    # Only the first paragraph of a longer docstring.
    status_doc = inspect.getdoc(Service.status) or ""
    assert methods["status"]["summary"] == status_doc.split("\n\n")[0]
    user = next(param for param in register["params"] if param["name"] == "user")
    pattern = user["schema"]["pattern"]
    assert pattern == f"^(?:{USER_NAME_PATTERN.pattern})$"
    assert re.fullmatch(pattern, "alice")
    assert not re.fullmatch(pattern, "no spaces here")


async def test_a_batch_without_session_methods_commits_together(running_server: Running) -> None:
    """No login, logout or register in the batch: its sends decide in order, then wait
    for the disk together, one fsync for all (a session method would run them one by
    one, an fsync each)."""
    log = running_server.service.log
    assert isinstance(log, EventLog)  # a single node's store: the append-only log
    observer = log.fsync_observer
    fsyncs: list[float] = []

    def counted(seconds: float) -> None:
        fsyncs.append(seconds)
        if observer is not None:
            observer(seconds)

    async with user_device(running_server.url, "carol") as peer:
        chat = (await peer.call("status"))["chats"][0]["id"]
        log.fsync_observer = counted
        try:
            replies = by_id(
                await exchange(peer, [request("send", i, chat=chat, text=str(i)) for i in range(8)])
            )
        finally:
            log.fsync_observer = observer
    assert [replies[i]["result"]["message"]["text"] for i in range(8)] == [str(i) for i in range(8)]
    assert len(fsyncs) < 8, fsyncs
