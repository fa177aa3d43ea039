"""The wire, end to end on a real server: JSON-RPC 2.0 to the letter
(https://www.jsonrpc.org/specification), the session methods' errors, frame
limits (RFC 6455 section 7.4.1) and the plain-HTTP routes on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.app import Running, run_server
from server.config import Config
from tests.configs import config_for_tests
from tests.server.extras_support import http_get
from tests.wsclient import Peer, RpcError, connected, user_device

SESSION_METHODS = {"register", "login", "logout", "rpc.discover"}
CORE_METHODS = SESSION_METHODS | {"status", "send", "history", "read", "unread"}


def request(method: str, request_id: Any = None, **params: Any) -> dict[str, Any]:
    """A JSON-RPC request object; a notification when ``request_id`` is None."""
    payload: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        payload["id"] = request_id
    return payload


async def exchange(peer: Peer, payload: Any) -> Any:
    """Send ``payload`` as one text frame; the reply frame nobody else waits for."""
    return await peer.send_raw(orjson.dumps(payload).decode())


async def error_of(peer: Peer, method: str, **params: Any) -> RpcError:
    """The error ``method`` fails with (the test fails if it succeeds)."""
    with pytest.raises(RpcError) as caught:
        await peer.call(method, **params)
    return caught.value


@contextlib.asynccontextmanager
async def raw_connection(url: str) -> AsyncIterator[ClientConnection]:
    async with connect(url, max_size=2**20) as connection:
        yield connection


async def closed_with(connection: ClientConnection) -> int | None:
    """Wait until the server closes ``connection``; the close code it sent."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(connection.recv(), 5)
    return connection.close_code


# -- the envelope ----------------------------------------------------------------


async def test_parse_error_has_null_id(running_server: Running) -> None:
    """A frame that is not JSON is answered -32700 with id null."""
    async with connected(running_server.url) as peer:
        reply = await peer.send_raw('{"jsonrpc": "2.0", "method": "status", "id": 1')
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] is None
    assert reply["error"]["code"] == -32700
    assert "result" not in reply


async def test_empty_batch_is_one_invalid_request(running_server: Running) -> None:
    """An empty batch is answered with a single -32600 object, not an array."""
    async with connected(running_server.url) as peer:
        reply = await peer.send_raw("[]")
    assert isinstance(reply, dict)
    assert reply["id"] is None
    assert reply["error"]["code"] == -32600


async def test_mixed_batch_answers_all_but_notifications(running_server: Running) -> None:
    """A batch gets an array with one reply per request, none for notifications,
    and -32600 (id null) for an item that is not a request (spec section 7)."""
    batch = [
        request("rpc.discover", "a"),
        request("rpc.discover"),  # a notification: no entry
        {"foo": "boo"},  # not a request, even without an id
        request("no.such.method", "b"),
        request("register", "c", user="batcher", password="password1"),
        request("status", "d"),  # not logged in
        1,
    ]
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, batch)
    assert isinstance(reply, list)
    by_id = {entry["id"]: entry for entry in reply if entry["id"] is not None}
    anonymous = [entry for entry in reply if entry["id"] is None]
    assert set(by_id) == {"a", "b", "c", "d"}
    assert len(reply) == 6
    assert by_id["a"]["result"]["openrpc"]
    assert by_id["b"]["error"]["code"] == -32601
    assert by_id["c"]["result"] == {"user": "batcher"}
    assert by_id["d"]["error"]["code"] == -32001
    assert [entry["error"]["code"] for entry in anonymous] == [-32600, -32600]


async def test_all_notification_batch_gets_no_reply(running_server: Running) -> None:
    """A batch of notifications only is not answered at all: the next frame's reply
    is the next thing the client receives."""
    async with raw_connection(running_server.url) as connection:
        batch = [request("rpc.discover"), request("no.such.method"), request("status")]
        await connection.send(orjson.dumps(batch).decode())
        await connection.send(orjson.dumps(request("rpc.discover", 7)).decode())
        reply = orjson.loads(await asyncio.wait_for(connection.recv(), 5))
        assert isinstance(reply, dict)
        assert reply["id"] == 7
        assert "result" in reply
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(connection.recv(), 0.2)


async def test_notification_gets_no_reply(running_server: Running) -> None:
    """A single notification, even one that fails, is not answered."""
    async with raw_connection(running_server.url) as connection:
        await connection.send(orjson.dumps(request("no.such.method")).decode())
        await connection.send(orjson.dumps(request("rpc.discover", "x")).decode())
        reply = orjson.loads(await asyncio.wait_for(connection.recv(), 5))
        assert reply["id"] == "x"


@pytest.mark.parametrize("payload", [1, "status", None, True, [1, 2]])
async def test_non_object_request_is_invalid(running_server: Running, payload: Any) -> None:
    """A request that is not an object is -32600 with id null (one per batch item)."""
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, payload)
    replies = reply if isinstance(payload, list) else [reply]
    assert len(replies) == (len(payload) if isinstance(payload, list) else 1)
    for entry in replies:
        assert entry["id"] is None
        assert entry["error"]["code"] == -32600


@pytest.mark.parametrize("version", ["1.0", 2.0, None])
async def test_wrong_jsonrpc_version_is_invalid(running_server: Running, version: Any) -> None:
    """A request whose jsonrpc member is not exactly "2.0" is -32600, id echoed."""
    payload: dict[str, Any] = {"method": "rpc.discover", "id": 5}
    if version is not None:
        payload["jsonrpc"] = version
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, payload)
    assert reply["id"] == 5
    assert reply["error"]["code"] == -32600


async def test_invalid_request_without_id_is_answered_with_null_id(
    running_server: Running,
) -> None:
    """An invalid request object is not a notification: -32600 with id null
    (spec section 5.1's example ``{"jsonrpc": "2.0", "method": 1, "params": "bar"}``)."""
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, {"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert reply["id"] is None
    assert reply["error"]["code"] == -32600


@pytest.mark.parametrize("method", [1, None, ["status"], {"name": "status"}])
async def test_method_not_string_is_invalid(running_server: Running, method: Any) -> None:
    """A method member that is not a string is -32600."""
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, {"jsonrpc": "2.0", "method": method, "id": 9})
    assert reply["id"] == 9
    assert reply["error"]["code"] == -32600


@pytest.mark.parametrize("request_id", [True, {"a": 1}, [1]])
async def test_unusable_id_is_invalid_with_null_id(
    running_server: Running, request_id: Any
) -> None:
    """An id that is not a string, number or null is -32600 answered with id null."""
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, {"jsonrpc": "2.0", "method": "rpc.discover", "id": request_id})
    assert reply["id"] is None
    assert reply["error"]["code"] == -32600


async def test_unknown_method(running_server: Running) -> None:
    """An unknown method is -32601, before or after login alike."""
    async with connected(running_server.url) as peer:
        assert (await error_of(peer, "no.such.method")).code == -32601
    async with user_device(running_server.url, "alice") as alice:
        assert (await error_of(alice, "no.such.method")).code == -32601


async def test_params_by_position_are_invalid_params(running_server: Running) -> None:
    """Params given as an array are -32602: every method takes them by name."""
    async with connected(running_server.url) as peer:
        reply = await exchange(
            peer, {"jsonrpc": "2.0", "method": "register", "params": ["bob", "pw"], "id": 3}
        )
    assert reply["id"] == 3
    assert reply["error"]["code"] == -32602


async def test_absent_params_mean_no_params(running_server: Running) -> None:
    """A request without params calls the method with none (rpc.discover needs none)."""
    async with connected(running_server.url) as peer:
        reply = await exchange(peer, {"jsonrpc": "2.0", "method": "rpc.discover", "id": 4})
    assert reply["result"]["methods"]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("register", {"user": "carol"}),  # missing
        ("register", {"user": "carol", "password": "password1", "admin": True}),  # extra
        ("register", {"user": 7, "password": "password1"}),  # mistyped
        ("register", {"user": "carol", "password": ["password1"]}),  # mistyped
        ("login", {"user": "carol"}),  # neither password nor token
        ("login", {"user": "carol", "password": "password1", "token": "t"}),  # both
        ("login", {"user": "carol", "token": "t", "since": "5"}),  # mistyped
        ("login", {"user": "carol", "token": "t", "since": True}),  # bool is not an int
        ("login", {"user": "carol", "token": "t", "since": 1.5}),  # not an integer
        ("logout", {"everything": True}),  # extra, checked before login
    ],
)
async def test_bad_session_params(
    running_server: Running, method: str, params: dict[str, Any]
) -> None:
    """Missing, extra and mistyped params are -32602 (a bool is not an integer)."""
    async with connected(running_server.url) as peer:
        if method == "logout":
            await peer.call("register", user="carol", password="password1")
            await peer.login("carol")
        error = await error_of(peer, method, **params)
    assert error.code == -32602


@pytest.mark.parametrize(
    "params",
    [
        {},  # neither chat nor user
        {"chat": "general", "user": "dave"},  # both
        {"chat": "general", "limit": True},  # a bool where an int is expected
        {"chat": "general", "limit": "5"},
        {"chat": "general", "before": -1},
        {"chat": 1},
        {"chat": "general", "colour": "red"},
    ],
)
async def test_bad_history_params(running_server: Running, params: dict[str, Any]) -> None:
    """history checks its params: exactly one of chat/user, integer limit and seqs."""
    async with user_device(running_server.url, "dave") as dave:
        assert (await error_of(dave, "history", **params)).code == -32602


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("history", {"chat": "general", "limit": 0}),
        ("history", {"chat": "general", "limit": 101}),
        ("send", {"chat": "general", "text": "x" * 4097}),
        ("send", {"chat": "general", "text": ""}),
        ("send", {"chat": "general", "text": "hi", "client_id": "c" * 65}),
        ("send", {"user": "bad name!", "text": "hi"}),
        ("read", {"chat": "general", "seq": -1}),
    ],
)
async def test_values_out_of_range(
    running_server: Running, method: str, params: dict[str, Any]
) -> None:
    """Values outside the declared ranges, lengths and patterns are -32602."""
    async with user_device(running_server.url, "erin") as erin:
        assert (await error_of(erin, method, **params)).code == -32602
        # ...and nothing was stored by the refused calls.
        assert (await erin.call("history", chat="general"))["messages"] == []


async def test_in_range_edges_are_accepted(running_server: Running) -> None:
    """The edges of the ranges are inside: limit 1 and 100, 4096-char text, 32-char name."""
    async with user_device(running_server.url, "f" * 32) as frank:
        await frank.call("send", chat="general", text="x" * 4096)
        assert len((await frank.call("history", chat="general", limit=1))["messages"]) == 1
        assert len((await frank.call("history", chat="general", limit=100))["messages"]) == 1


@pytest.mark.parametrize("user", ["", "a" * 33, "white space", "émile", "semi;colon", "slash/"])
async def test_bad_user_names_are_refused(running_server: Running, user: str) -> None:
    """A user name outside 1-32 of A-Z a-z 0-9 _ . - is -32602 at register."""
    async with connected(running_server.url) as peer:
        error = await error_of(peer, "register", user=user, password="password1")
    assert error.code == -32602


@pytest.mark.parametrize("password", ["", "short", "1234567", "p" * 1025])
async def test_bad_passwords_are_refused(running_server: Running, password: str) -> None:
    """A password outside 8-1024 characters is -32602 at register."""
    async with connected(running_server.url) as peer:
        error = await error_of(peer, "register", user="gina", password=password)
    assert error.code == -32602


# -- session -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("status", {}),
        ("send", {"chat": "general", "text": "hi"}),
        ("history", {"chat": "general"}),
        ("read", {"chat": "general", "seq": 0}),
        ("unread", {}),
        ("logout", {}),
    ],
)
async def test_methods_need_login(
    running_server: Running, method: str, params: dict[str, Any]
) -> None:
    """Everything but the session methods is -32001 before login."""
    async with connected(running_server.url) as peer:
        await peer.call("register", user="hank", password="password1")
        assert (await error_of(peer, method, **params)).code == -32001


async def test_wrong_password(running_server: Running) -> None:
    """A wrong password, and an unknown user, are both -32001."""
    async with connected(running_server.url) as peer:
        await peer.call("register", user="ivy", password="password1")
        assert (await error_of(peer, "login", user="ivy", password="password2")).code == -32001
        assert (await error_of(peer, "login", user="ivan", password="password1")).code == -32001
        assert (await error_of(peer, "status")).code == -32001


async def test_unknown_token(running_server: Running) -> None:
    """An unknown token, or one of another user, is -32001."""
    async with user_device(running_server.url, "jack") as jack:
        token = jack.token
    assert token is not None
    async with connected(running_server.url) as peer:
        await peer.call("register", user="jill", password="password1")
        assert (await error_of(peer, "login", user="jack", token="nope" + token)).code == -32001
        assert (await error_of(peer, "login", user="jill", token=token)).code == -32001
        assert (await peer.call("login", user="JACK", token=token))["user"] == "jack"


async def test_taken_name_is_a_conflict_whatever_the_case(running_server: Running) -> None:
    """Registering a name that differs from a taken one only in case is -32007."""
    async with connected(running_server.url) as peer:
        assert await peer.call("register", user="Kim", password="password1") == {"user": "Kim"}
        for name in ("Kim", "kim", "KIM"):
            error = await error_of(peer, "register", user=name, password="password1")
            assert error.code == -32007
        assert (await peer.login("kIm"))["user"] == "Kim"


async def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    """After login_attempts failures, a login is -32004 with data.retry_after > 0,
    even with the right password; other names are not affected."""
    config = config_for_tests(tmp_path, login_attempts=2)
    async with run_server(config) as running, connected(running.url) as peer:
        await peer.call("register", user="lee", password="password1")
        await peer.call("register", user="lou", password="password1")
        for _ in range(config.login_attempts):
            assert (await error_of(peer, "login", user="lee", password="wrong-pass")).code == -32001
        for password in ("wrong-pass", "password1"):
            error = await error_of(peer, "login", user="LEE", password=password)
            assert error.code == -32004
            assert isinstance(error.data["retry_after"], int | float)
            assert error.data["retry_after"] > 0
        assert (await peer.login("lou"))["user"] == "lou"


async def test_login_result(running_server: Running) -> None:
    """A password login answers user, device, token, cursor and the limits."""
    async with connected(running_server.url) as peer:
        await peer.call("register", user="max", password="password1")
        result = await peer.login("max", device_name="laptop")
        assert set(result) >= {"user", "device", "token", "cursor", "limits"}
        assert result["limits"]["history_size"] == 20
        assert result["limits"]["message_ttl"] == 3600
        assert isinstance(result["cursor"], int)
        assert "resumed" not in result
        status = await peer.call("status")
    assert status["device"] == result["device"]
    assert status["devices"] == [{"device": result["device"], "name": "laptop", "online": True}]


async def test_logout_revokes_the_token_and_closes_the_device(running_server: Running) -> None:
    """logout revokes the device's token, logs this connection out and closes the
    device's other connections; the user's other devices stay."""
    url = running_server.url
    async with (
        user_device(url, "nina") as first,
        raw_connection(url) as second,
        user_device(url, "nina", register=False) as other_device,
    ):
        assert first.token is not None
        login = request("login", 1, user="nina", token=first.token)
        await second.send(orjson.dumps(login).decode())
        reply = orjson.loads(await asyncio.wait_for(second.recv(), 5))
        assert reply["result"]["device"] == (await first.call("status"))["device"]

        assert await first.call("logout") == {}

        assert await closed_with(second) == 1008
        assert (await error_of(first, "status")).code == -32001
        await other_device.call("send", chat="general", text="still here")
        status = await other_device.call("status")
        assert [device["device"] for device in status["devices"]] == [status["device"]]
    async with connected(url) as peer:
        error = await error_of(peer, "login", user="nina", token=first.token)
    assert error.code == -32001


async def test_discover_lists_every_method(running_server: Running) -> None:
    """rpc.discover works before login and describes every method by name."""
    async with connected(running_server.url) as peer:
        document = await peer.call("rpc.discover")
    assert document["openrpc"]
    names = {method["name"] for method in document["methods"]}
    assert names >= CORE_METHODS
    assert names == set(running_server.service.registry.methods)
    send = next(method for method in document["methods"] if method["name"] == "send")
    text = next(param for param in send["params"] if param["name"] == "text")
    assert text["schema"]["type"] == "string"
    assert text["schema"]["maxLength"] == 4096


# -- frames ----------------------------------------------------------------------


async def test_frame_over_the_limit_closes_1009(server_config: Config) -> None:
    """A frame larger than frame_limit closes the connection with 1009."""
    config = dataclasses.replace(server_config, frame_limit=4096)
    async with run_server(config) as running:
        async with raw_connection(running.url) as connection:
            small = orjson.dumps(request("rpc.discover", 1, padding="x" * 3000)).decode()
            assert len(small) < 4096
            await connection.send(small)
            assert orjson.loads(await connection.recv())["error"]["code"] == -32602
            await connection.send(orjson.dumps(request("rpc.discover", 2, pad="x" * 5000)).decode())
            assert await closed_with(connection) == 1009
        async with connected(running.url) as peer:  # the server carries on
            assert (await peer.call("rpc.discover"))["methods"]


async def test_binary_frame_closes_1003(running_server: Running) -> None:
    """A binary frame closes the connection with 1003 (text frames only)."""
    async with raw_connection(running_server.url) as connection:
        await connection.send(orjson.dumps(request("rpc.discover", 1)))  # bytes: binary frame
        assert await closed_with(connection) == 1003


# -- plain HTTP on the same port -------------------------------------------------


async def test_healthz(running_server: Running) -> None:
    """GET /healthz is 200 with body "ok"."""
    reply = await http_get(running_server, "/healthz")
    status, body = reply.status, reply.body
    assert (status, body) == (200, b"ok")


async def test_openrpc_document_over_http(running_server: Running) -> None:
    """GET /openrpc.json is the same document rpc.discover returns."""
    reply = await http_get(running_server, "/openrpc.json")
    status, body = reply.status, reply.body
    assert status == 200
    document = orjson.loads(body)
    assert {method["name"] for method in document["methods"]} >= CORE_METHODS
    async with connected(running_server.url) as peer:
        assert document == await peer.call("rpc.discover")


@pytest.mark.parametrize("path", ["/nope", "/healthz/", "/openrpc"])
async def test_unknown_path_is_404(running_server: Running, path: str) -> None:
    """Any other path is 404."""
    status = (await http_get(running_server, path)).status
    assert status == 404
