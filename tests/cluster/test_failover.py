"""Failures of a cluster: the writer killed, NATS gone and back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server import jetstream
from tests.cluster.support import Nats, NodeProcess, eventually, free_port, start_node
from tests.server.extras_support import http_get
from tests.wsclient import Peer, RpcError, connected, user_device


@contextlib.contextmanager
def node_processes(tmp_path: Path, urls: list[str], *names: str) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        for name in names:
            started.append(start_node(tmp_path, urls, name, "--rate-limit", "100000"))
        yield started
    finally:
        for node in started:
            node.stop()


async def health(node: NodeProcess) -> tuple[int, str]:
    try:
        reply = await http_get(node, "/healthz")
    except OSError:
        return 0, ""
    return reply.status, reply.body.decode()


async def wait_until_writer(node: NodeProcess, within: float = 10.0) -> None:
    async def writing() -> bool:
        return " writer " in (await health(node))[1]

    await eventually(writing, within)


async def send_until_acknowledged(peer: Peer, text: str) -> dict[str, Any]:
    """A send retried with its client_id while the cluster answers -32008."""
    while True:
        try:
            message: dict[str, Any] = (
                await peer.call("send", chat="general", text=text, client_id=text)
            )["message"]
            return message
        except RpcError as error:
            if error.code != -32008 or not error.data["retry_after"] > 0:
                raise
            await asyncio.sleep(0.1)


async def whole_history(peer: Peer) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    params: dict[str, int] = {}
    while True:
        page = await peer.call("history", chat="general", limit=100, **params)
        history = page["messages"] + history
        if not page["has_more"]:
            return history
        params = {"before": page["messages"][0]["seq"]}


async def test_writer_killed_another_takes_over_nothing_lost(tmp_path: Path, nats: Nats) -> None:
    """SIGKILL of the writer while devices send through every node: another node takes
    over, no acknowledged message is lost, seqs stay contiguous, and a device of the
    killed node resumes on another node with no gap and no duplicate."""
    with node_processes(tmp_path, [nats.url], "n1") as (n1,):
        await wait_until_writer(n1)
        with node_processes(tmp_path, [nats.url], "n2", "n3") as (n2, n3):
            acknowledged: list[str] = []

            async def sender(peer: Peer, count: int) -> None:
                for index in range(count):
                    message = await send_until_acknowledged(peer, f"{peer.user}-{index}")
                    acknowledged.append(message["id"])
                    await asyncio.sleep(0.01)

            async with (
                user_device(n2.url, "bob") as bob,
                user_device(n3.url, "carol") as carol,
            ):
                async with connected(n1.url) as watcher:
                    await watcher.call("register", user="alice", password="password1")
                    login = await watcher.login("alice")
                    senders = asyncio.gather(sender(bob, 40), sender(carol, 40))
                    seen = [(await watcher.next_event("message"))["params"] for _ in range(10)]
                    n1.kill()
                    with contextlib.suppress(Exception):
                        await watcher.reader
                async with connected(n2.url) as again:
                    resumed = await again.call(
                        "login", user="alice", token=login["token"], since=watcher.cursor
                    )
                    assert resumed["resumed"] is True
                    await senders
                    history = await whole_history(again)
                    assert [m["seq"] for m in history] == list(range(1, 81))
                    assert set(acknowledged) == {m["id"] for m in history}
                    while len(seen) < len(history):
                        seen.append((await again.next_event("message"))["params"])
                    ids = [e["message"]["id"] for e in seen]
                    assert ids == [m["id"] for m in history]  # no gap, no duplicate, in order
            status, said = await health(n2)
            assert status == 200
            assert said.startswith("ok")


async def test_nats_unreachable_writes_unavailable_then_recovers(
    tmp_path: Path, nats: Nats
) -> None:
    """NATS down: writes answer -32008 with retry_after and /healthz 503; nothing
    crashes, and the node recovers by itself when NATS is back."""
    with node_processes(tmp_path, [nats.url], "n1") as (n1,):
        await wait_until_writer(n1)
        async with user_device(n1.url, "alice") as alice:
            await alice.call("send", chat="general", text="before")
            nats.stop()

            async def refusing() -> bool:
                return (await health(n1))[0] == 503

            await eventually(refusing)
            assert "unavailable" in (await health(n1))[1]
            history = await alice.call("history", chat="general")  # reads still answer
            assert [m["text"] for m in history["messages"]] == ["before"]
            refused: RpcError | None = None
            try:
                await alice.call("send", chat="general", text="during", client_id="during")
            except RpcError as error:
                refused = error
            assert refused is not None
            assert refused.code == -32008
            assert refused.data["retry_after"] > 0
            nats.start()
            await wait_until_writer(n1, within=20)
            # Whether or not the refused send reached the log, its retry is safe.
            await send_until_acknowledged(alice, "during")
            await send_until_acknowledged(alice, "after")
            history = await alice.call("history", chat="general")
            assert [m["text"] for m in history["messages"]] == ["before", "during", "after"]
        assert n1.process.poll() is None


async def test_a_jetstream_cluster_loses_its_stream_leader(tmp_path: Path) -> None:
    """Three JetStream servers, the stream replicated on all three: its leader killed,
    writes pause, then go on; nothing acknowledged is lost."""
    ports = [free_port() for _ in range(3)]
    servers = [
        Nats(tmp_path / f"js{index}", name=f"js{index}", cluster_port=port, routes=ports)
        for index, port in enumerate(ports)
    ]
    for server in servers:
        server.start()
    try:
        urls = [server.url for server in servers]
        with node_processes(tmp_path, urls, "n1") as (n1,):
            await wait_until_writer(n1, within=30)
            async with user_device(n1.url, "alice") as alice:
                acknowledged = [await send_until_acknowledged(alice, f"m{i}") for i in range(5)]
                shared = await jetstream.connect(urls, "test", 1.0, "probe")
                try:
                    info = await shared.js.stream_info(shared.names.stream)
                    assert info.config.num_replicas == 3
                    assert info.cluster is not None
                    leader = info.cluster.leader
                finally:
                    await shared.close()
                next(server for server in servers if server.name == leader).kill()
                for index in range(5, 10):
                    acknowledged.append(await send_until_acknowledged(alice, f"m{index}"))
                history = await alice.call("history", chat="general")
                assert [m["id"] for m in history["messages"]] == [m["id"] for m in acknowledged]
    finally:
        for server in servers:
            server.stop()
