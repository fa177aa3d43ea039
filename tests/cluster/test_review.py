"""Reproductions from the cluster-mode review (each fails on main at 33fec60)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.errors import TimeoutError as NatsTimeout

from server.app import Running, run_server
from server.cluster import ClusterNode
from server.store import Snapshot, StoreFailed
from tests.cluster.support import (
    Nats,
    eventually,
    is_writer,
    node_config,
    nodes,
    until,
    wait_for_writer,
)
from tests.wsclient import RpcError, connected, user_device


async def test_group_news_reaches_devices_on_a_follower(tmp_path: Path, nats: Nats) -> None:
    """chat.member_joined / chat.member_left (views.also_told) reach a member's device
    whichever node it is on: on a single server, and on the writer, they do."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as on_writer,
        connected(follower.url) as on_follower,
        user_device(writer.url, "bob") as bob,
    ):
        await on_follower.login("alice")
        group = (await on_writer.call("chat.create", title="team"))["chat"]["id"]
        await on_writer.call("chat.invite", chat=group, user="bob")
        joined = await on_writer.next_event("chat.member_joined")
        assert joined["params"]["user"] == "bob"
        # The same user's device on the follower never hears of it:
        joined = await on_follower.next_event("chat.member_joined")  # TimeoutError on main
        assert joined["params"]["user"] == "bob"
        await bob.call("chat.leave", chat=group)
        await on_follower.next_event("chat.member_left")


def cluster_node(running: Running) -> ClusterNode:
    """The ClusterNode behind a node started in this process."""
    assert running.node is not None
    return running.node


def gate_appends(node: ClusterNode) -> asyncio.Event:
    """Hold this node's appends to the event stream until the event is set (a slow
    JetStream: a stream leader being elected, a replica catching up)."""
    gate = asyncio.Event()
    js = node.shared.js
    publish = js.publish

    async def held(subject: str, *args: Any, **kwargs: Any) -> Any:
        if subject == node.shared.names.subject:
            await gate.wait()
        return await publish(subject, *args, **kwargs)

    js.publish = held  # type: ignore[method-assign]
    return gate


async def texts(peer: Any) -> list[str]:
    history = await peer.call("history", chat="general")
    return [m["text"] for m in history["messages"]]


async def test_a_writer_that_steps_down_with_an_append_in_flight_folds_the_new_writers_events(
    tmp_path: Path, nats: Nats
) -> None:
    """The writer loses its lease (its loop stalled) while an append is on its way; the
    append is then fenced. As a follower it must end up with the stream's state: not
    keep the refused message at the cursor of the new writer's one, and not answer
    every local call with -32008. The fenced send is decided again, by the new writer
    (issue 7): a normal reply, the message stored once."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (first, second),
        user_device(first.url, "alice") as alice,
        user_device(second.url, "bob") as bob,
    ):
        old, new = cluster_node(first), cluster_node(second)
        gate = gate_appends(old)
        assert old._lease is not None
        old._lease.cancel()  # its lease loop stalls: the lease runs out
        sending = asyncio.ensure_future(alice.call("send", chat="general", text="refused"))
        await until(lambda: is_writer(second), 10)
        await bob.call("send", chat="general", text="stored")
        # The old writer's lease loop wakes up: the lease is another's, it steps down.
        old._lease = asyncio.get_running_loop().create_task(old._hold_lease())
        await until(lambda: not old.writer, 5)
        gate.set()  # its append goes on, and is fenced off by JetStream
        sent = await sending  # decided again, on the new writer
        assert sent["message"]["text"] == "refused"
        assert sent["message"]["seq"] == 2
        await bob.call("send", chat="general", text="after")
        await until(lambda: old.position == new.position, 5)
        await asyncio.sleep(0.5)
        assert await texts(bob) == ["stored", "refused", "after"]
        # On main: the old writer keeps "refused" at the cursor of "stored", never
        # tells alice of "stored", and refuses its own reads with -32008 for ever.
        kept = sorted(m.text for m in old.service.state.messages.values())
        assert kept == sorted(m.text for m in new.service.state.messages.values())
        assert await texts(alice) == ["stored", "refused", "after"]


async def test_a_rebuild_keeps_what_the_follow_loop_folded_meanwhile(
    tmp_path: Path, nats: Nats
) -> None:
    """``_rebuild`` run by the lease task (``_step_down``, a broken writer) while the
    follow loop goes on folding into the old state: what was folded meanwhile must
    not be missing from the fresh state."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        js = node.shared.js
        stream_info = js.stream_info
        hold = asyncio.Event()

        async def slow(*args: Any, **kwargs: Any) -> Any:
            found = await stream_info(*args, **kwargs)
            await hold.wait()  # the rebuild has read where the stream ends; it folds
            return found

        js.stream_info = slow  # type: ignore[method-assign]
        rebuilding = asyncio.ensure_future(node._rebuild())
        await asyncio.sleep(0.2)
        await alice.call("send", chat="general", text="during")
        await asyncio.sleep(0.5)  # on main, the follow loop folds it into the old state now
        hold.set()
        await rebuilding
        js.stream_info = stream_info  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        # On main: "during" was folded into the state that the rebuild then replaced.
        assert [m.text for m in node.service.state.messages.values()] == ["during"]


async def test_a_follower_behind_a_purge_does_not_silently_drop_events(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower that could not follow for a while (NATS out of its reach) while the
    writer took a snapshot and purged the stream re-reads from the snapshot. Its
    connected devices must get every event they missed, or be cut off so that they
    come back with ``since`` (and learn ``resumed: false``): never a silent hole."""
    async with (
        nodes(tmp_path, [nats.url], 2, resume_window=5, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob") as bob,
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        since = follower.service.hub.published
        node._follow.cancel()  # it cannot follow for a while
        for index in range(20):
            await alice.call("send", chat="general", text=f"m{index}")
        await writer.service.compact()  # snapshot, then the stream is purged below it
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        await alice.call("send", chat="general", text="m20")  # the follower sees the gap
        await until(lambda: node.service.state.cursor == writer.service.state.cursor, 10)
        await asyncio.sleep(0.5)
        got = []
        while not bob.events.empty():
            got.append(bob.events.get_nowait()["params"]["message"]["text"])
        # On main bob, still connected, got only ['m20']: the rebuild from the
        # snapshot tells nothing of what the snapshot covers.
        hole = got != [f"m{i}" for i in range(21)] and not bob.reader.done()
        # A device coming back to that node from before the hole must not be told
        # ``resumed: true`` with only m20 (main: it is, the hub's Recent has a hole).
        async with connected(follower.url) as again:
            back = await again.call("login", user="bob", token=bob.token, since=since)
            await asyncio.sleep(0.3)
            resumed = []
            while not again.events.empty():
                resumed.append(again.events.get_nowait()["params"]["message"]["text"])
            assert not back["resumed"] or resumed == [f"m{i}" for i in range(21)], resumed
        assert not hole, got


async def test_a_follower_behind_a_purge_catches_up_on_a_quiet_stream(
    tmp_path: Path, nats: Nats
) -> None:
    """The same follower, when nothing is appended after the purge: the stream holds no
    message at all (purged below ``seq + 1``), so its tail waits for ever. It serves
    a stale state, and cannot take over from a writer that stops: ``_become_writer``
    waits for a message that will never come, gives the lease back, again and again."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        node._follow.cancel()
        for index in range(3):
            await alice.call("send", chat="general", text=f"m{index}")
        await writer.service.compact()
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        await cluster_node(writer).stop()  # the writer goes away, and frees its lease
        # On main: TimeoutError, "node node2 is behind the log: not taking the lease"
        # every lease_ttl / 3 + forward_timeout, and no writer.
        await until(lambda: is_writer(follower), 15)
        assert len(node.service.state.messages) == 3


async def test_reading_the_snapshot_while_the_writer_replaces_it_does_not_hang(
    tmp_path: Path, nats: Nats
) -> None:
    """nats-py's ObjectStore.get reads the object's meta, then subscribes to the chunks
    of that version; ObjectStore.put of a new version purges those chunks. A node that
    reads the snapshot (starting, or re-reading the log) while the writer stores the
    next one waits for chunks that are gone: for ever, with no timeout."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
    ):
        await alice.call("send", chat="general", text="one")
        await writer.service.compact()  # a snapshot exists
        node = cluster_node(follower)
        snapshots = node.shared.snapshots
        get_info = snapshots.get_info
        replaced = False

        async def then_replaced(name: str, *args: Any, **kwargs: Any) -> Any:
            nonlocal replaced
            info = await get_info(name, *args, **kwargs)
            if not replaced:  # the writer takes its next snapshot right now
                replaced = True
                await alice.call("send", chat="general", text="two")
                await writer.service.compact()
            return info

        snapshots.get_info = then_replaced  # type: ignore[method-assign]
        # On main: TimeoutError (the node reports 503 "re-reading the log" for ever;
        # at start-up, run_server never returns).
        await asyncio.wait_for(node._rebuild(), 10)
        assert sorted(m.text for m in node.service.state.messages.values()) == ["one", "two"]


async def test_status_shows_a_device_online_on_another_node(tmp_path: Path, nats: Nats) -> None:
    """status's ``online`` is the hub of the node answering: a device connected to
    another node shows offline (on one server it shows online)."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as here,
        connected(follower.url) as there,
    ):
        other = (await there.login("alice"))["device"]
        seen: dict[str, bool] = {}

        async def shown_online() -> bool:
            status = await here.call("status")
            seen.update({d["device"]: d["online"] for d in status["devices"]})
            return seen[other]

        await eventually(shown_online, 3)  # main: False, for ever
        await there.close()

        async def shown_offline() -> bool:
            return not await shown_online()

        await eventually(shown_offline, 3)


async def test_the_login_throttle_counts_guesses_through_every_node(
    tmp_path: Path, nats: Nats
) -> None:
    """Issue 7: the login throttle is cluster-wide, not N times the guesses with N nodes.
    Each node keeps its own LoginThrottle: after ``login_attempts`` failures on one
    node, the next guess through another node is checked as if none had failed."""
    async with (
        nodes(tmp_path, [nats.url], 2, login_attempts=2, login_backoff=60.0) as (one, two),
        user_device(one.url, "alice"),
        connected(one.url) as guesser,
        connected(two.url) as elsewhere,
    ):
        for _ in range(3):
            with pytest.raises(RpcError):
                await guesser.call("login", user="alice", password="wrong-guess")
        with pytest.raises(RpcError) as here:
            await guesser.call("login", user="alice", password="wrong-guess")
        assert here.value.code == -32004  # throttled on this node
        with pytest.raises(RpcError) as there:
            await elsewhere.call("login", user="alice", password="wrong-guess")
        assert there.value.code == -32004  # main: -32001, the guess was checked


async def test_a_new_writer_goes_on_counting_failed_logins(tmp_path: Path, nats: Nats) -> None:
    """A node that takes over as writer keeps the count of failed logins: the writer
    counts them, every node keeps a copy. Before, the new writer started from
    nothing, and a guesser went on at full speed after every change of writer."""
    config = node_config(tmp_path, [nats.url], "node1", **_THROTTLE)
    first = contextlib.AsyncExitStack()
    one = await first.enter_async_context(run_server(config))
    try:
        await wait_for_writer(one)
        async with contextlib.AsyncExitStack() as stack:
            two = await stack.enter_async_context(
                run_server(node_config(tmp_path, [nats.url], "node2", **_THROTTLE))
            )
            async with user_device(one.url, "alice"), connected(two.url) as guesser:
                for _ in range(3):
                    with pytest.raises(RpcError):
                        await guesser.call("login", user="alice", password="wrong-guess")
            copy = two.service.counted_here

            async def mirrored() -> bool:
                return await copy.retry_after("alice 127.0.0.1", "127.0.0.1") > 0

            await eventually(mirrored)
            await first.aclose()  # the writer leaves; node2 takes over
            await wait_for_writer(two)
            async with connected(two.url) as again:
                with pytest.raises(RpcError) as refused:
                    await again.call("login", user="alice", password="wrong-guess")
            assert refused.value.code == -32004  # before: -32001, the guess was checked
    finally:
        await first.aclose()


_THROTTLE = {"login_attempts": 2, "login_backoff": 60.0}


async def test_a_batch_through_a_follower_decides_in_order(tmp_path: Path, nats: Nats) -> None:
    """A batch [send, history]: on one server (and on the writer) the history shows the
    message sent before it in the batch; through a follower the send is forwarded
    while the history is read at once from a state that does not hold it yet."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (_, follower),
        user_device(follower.url, "alice") as alice,
    ):
        batch = orjson.dumps(
            [
                {
                    "jsonrpc": "2.0",
                    "id": 101,
                    "method": "send",
                    "params": {"chat": "general", "text": "first"},
                },
                {"jsonrpc": "2.0", "id": 102, "method": "history", "params": {"chat": "general"}},
            ]
        ).decode()
        replies = {r["id"]: r for r in await alice.send_raw(batch)}
        texts_seen = [m["text"] for m in replies[102]["result"]["messages"]]
        assert texts_seen == ["first"]  # main: []


async def test_concurrent_downloads_of_a_file_not_yet_cached_on_a_node(
    tmp_path: Path, nats: Nats
) -> None:
    """ObjectBlobs.fetch: every concurrent fetch of one file writes the same
    ``<sha>.part`` and renames it; the later renames find no ``.part`` any more
    (FileNotFoundError: -32603), and a write truncating the inode just renamed into
    place can be read half-written."""
    content = bytes(range(256)) * 4096 * 4  # 4 MiB
    chunk = 256 * 2**10
    async with (
        nodes(tmp_path, [nats.url], 2, max_file_size=2**23) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        connected(follower.url) as there,
    ):
        begun = await alice.call("upload.begin", name="big.bin", size=len(content))
        for start in range(0, len(content), chunk):
            piece = base64.b64encode(content[start : start + chunk]).decode()
            await alice.call("upload.chunk", upload=begun["upload"], data=piece)
        file = (await alice.call("upload.finish", upload=begun["upload"]))["file"]
        await there.login("alice")
        await asyncio.sleep(0.3)
        results = await asyncio.gather(
            *(there.call("download", file=file["id"], offset=0) for _ in range(12)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, failed  # main: RpcError -32603 Internal error
        for result in results:
            assert not isinstance(result, BaseException)
            assert base64.b64decode(result["data"]) == content[:chunk]


async def test_the_follow_loop_survives_a_failed_re_read(tmp_path: Path, nats: Nats) -> None:
    """``_follow_stream`` calls ``_rebuild`` inside its ``except`` clauses: anything
    ``_rebuild`` lets through (StoreFailed for a damaged snapshot record, LogCorrupted
    from replay, a KeyError) ends the follow task for good, silently; the node still
    says ``ok`` on /healthz and never folds again."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        records = node.store.records
        failures = [StoreFailed("a damaged record (once)")]

        def flaky(after: Snapshot | None = None) -> Any:
            if failures:
                raise failures.pop()
            return records(after)

        node.store.records = flaky  # type: ignore[method-assign]
        assert node._follow is not None
        node._follow.cancel()
        await alice.call("send", chat="general", text="before")
        await writer.service.compact()
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        await alice.call("send", chat="general", text="after")  # a gap: re-read, which fails
        await asyncio.sleep(1.0)
        follow = node._follow
        if follow.done():  # node.stop() would raise its StoreFailed: the report is below
            node._follow = None
        assert node.health()[0]  # "ok", while:
        assert not follow.done(), follow  # main: done, StoreFailed
        # main: the follow task is done (StoreFailed), nothing is folded any more.
        await alice.call("send", chat="general", text="later")
        await until(lambda: len(node.service.state.messages) == 3, 5)


async def test_a_scheduled_message_due_while_the_writer_is_broken_is_posted(
    tmp_path: Path, nats: Nats
) -> None:
    """An append whose ack is lost (stored, but the writer cannot know) leaves the store
    broken until the lease loop's next tick re-reads the stream. A scheduled message
    that comes due in between is "posted" into the old state (the append is refused),
    which drops it from that state's schedule; the fresh state still holds it, but no
    timer is armed for it: it is never posted (until some later schedule or handover)."""
    async with (
        nodes(tmp_path, [nats.url], 1, lease_ttl=3.0) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        js = node.shared.js
        publish = js.publish
        lose_ack = [True]

        async def ack_lost(subject: str, *args: Any, **kwargs: Any) -> Any:
            ack = await publish(subject, *args, **kwargs)
            if subject == node.shared.names.subject and lose_ack:
                lose_ack.pop()
                raise NatsTimeout
            return ack

        renewed = node._lease_deadline
        await until(lambda: node._lease_deadline != renewed, 5)  # the next tick is ~1 s away
        now = writer.service.clock()
        await alice.call("send", chat="general", text="later", send_at=now + 300)
        js.publish = ack_lost  # type: ignore[method-assign]
        with pytest.raises(RpcError) as caught:
            await alice.call("send", chat="general", text="now")
        assert caught.value.code == -32008
        await asyncio.sleep(3.0)
        assert set(await texts(alice)) == {"now", "later"}  # main: {"now"}
        assert (await alice.call("scheduled"))["scheduled"] == []  # main: "later", overdue


async def test_an_unexpected_error_in_the_append_task_answers_not_hangs(
    tmp_path: Path, nats: Nats
) -> None:
    """``JetStreamStore._write_queue`` catches only nats/Timeout/OS errors: anything else
    (here a RuntimeError from the client) ends the task silently. Every append after
    that waits for ever: no -32008, /healthz still ``ok``."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        js = node.shared.js
        publish = js.publish
        once = [RuntimeError("unexpected")]

        async def odd(subject: str, *args: Any, **kwargs: Any) -> Any:
            if subject == node.shared.names.subject and once:
                raise once.pop()
            return await publish(subject, *args, **kwargs)

        js.publish = odd  # type: ignore[method-assign]
        append = node.store.append
        given: list[asyncio.Future[None]] = []

        def kept(records: Any) -> asyncio.Future[None]:
            given.append(append(records))
            return given[-1]

        node.store.append = kept  # type: ignore[method-assign]
        answered = []
        for text in ("one", "two"):
            try:
                await asyncio.wait_for(alice.call("send", chat="general", text=text), 3)
                answered.append(text)
            except RpcError as error:
                answered.append(str(error.code))
            except TimeoutError:
                answered.append("no answer")
        writer_task = node.store._writer
        assert writer_task is not None
        if writer_task.done():  # let the test's teardown finish: the report is below
            for future in given:
                if not future.done():
                    future.set_exception(StoreFailed("test cleanup"))
            node.store._fail_all(StoreFailed("test cleanup"))
            node.store._writer = None
            node.store.start()
        # main: ['no answer', 'no answer'], the task ended with RuntimeError
        assert "no answer" not in answered, (answered, writer_task)
        await until(lambda: node.health()[0])  # the writer re-reads the log and goes on
        sent = await alice.call("send", chat="general", text="three")
        assert sent["message"]["text"] == "three"


async def test_a_writer_stopping_while_nats_is_down_stops(tmp_path: Path, nats: Nats) -> None:
    """A writer told to stop while NATS is out of reach, with an append that failed:
    stepping down re-read the log into a fresh state for a process about to exit,
    retrying every 0.5 s for as long as NATS stayed away, so the stop (SIGTERM, a
    test's teardown) never ended. A stopping node re-reads nothing."""
    config = node_config(tmp_path, [nats.url], "node1")
    stack = contextlib.AsyncExitStack()
    running = await stack.enter_async_context(run_server(config))
    try:
        await wait_for_writer(running)
        async with user_device(running.url, "alice") as alice:
            nats.stop()
            with pytest.raises(RpcError) as refused:
                await alice.call("send", chat="general", text="lost")
            assert refused.value.code == -32008
            node = cluster_node(running)
            assert node.writer
            assert node.store.broken.is_set()
            async with asyncio.timeout(30):  # on main: for as long as NATS is away
                await stack.aclose()
    finally:
        nats.start()
        await stack.aclose()


async def test_a_node_stops_though_its_lease_task_swallowed_the_cancellation(
    tmp_path: Path, nats: Nats
) -> None:
    """Python 3.11's ``asyncio.wait_for`` (in nats-py's request) drops a cancellation
    that comes with the reply: the lease task, cancelled by ``stop`` while renewing,
    renewed for ever and the stop never ended (the full suite hung in a teardown,
    e.g. test_a_rebuild_keeps_what_the_follow_loop_folded_meanwhile). The node's
    loops end on its own flag as well."""
    stack = contextlib.AsyncExitStack()
    running = await stack.enter_async_context(
        run_server(node_config(tmp_path, [nats.url], "node1"))
    )
    try:
        await wait_for_writer(running)
        lease = cluster_node(running).shared.lease
        update = lease.update
        renewing = asyncio.Event()

        async def swallowing(*args: Any, **kwargs: Any) -> Any:
            renewing.set()
            with contextlib.suppress(asyncio.CancelledError):  # as 3.11's wait_for may
                await asyncio.Event().wait()
            return await update(*args, **kwargs)

        lease.update = swallowing  # type: ignore[method-assign]
        await renewing.wait()
        async with asyncio.timeout(30):  # on main: for ever
            await stack.aclose()
    finally:
        await stack.aclose()
