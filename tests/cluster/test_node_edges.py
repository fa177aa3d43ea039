"""A cluster node's edges no other test reaches in this process (each found by a
mutant of server/cluster.py that survived every test, bench/MUTATION.md)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats as nats_client
import orjson
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from server.app import Running, run_server
from server.cluster import ClusterNode
from server.domain.events import UserSeen, to_record
from server.domain.model import UserName
from server.store import Snapshot
from tests.cluster.support import (
    Nats,
    eventually,
    lose_the_next_ack,
    node_config,
    nodes,
    until,
    wait_for_writer,
)
from tests.cluster.test_review import cluster_node, gate_appends
from tests.wsclient import Peer, RpcError, connected, user_device


async def miss_a_message_behind_a_snapshot(node: ClusterNode, writer: Running, alice: Peer) -> None:
    """The follower ``node`` stops folding while alice sends a message and the writer
    compacts it into a snapshot, then follows again: her next send is a gap, and the
    follower re-reads the log."""
    assert node._follow is not None
    node._follow.cancel()  # the follower stops folding for a while
    await alice.call("send", chat="general", text="missed")
    await writer.service.compact()
    node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
    await alice.call("send", chat="general", text="after")  # a gap: a re-read


async def test_without_nats_a_follower_refuses_at_once_and_says_so(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower says on /healthz whom it follows; with NATS gone, it says it cannot
    reach NATS (503) and refuses a send at once with -32008, not after waiting
    ``forward_timeout`` for no writer; once NATS is back it says ``ok`` again."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (_, follower),
        user_device(follower.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        await until(lambda: node.health()[1].startswith("ok node node2 follower of node1 "))
        nats.kill()
        await until(lambda: not node.shared.connected)
        assert node.health() == (False, "unavailable: node node2 cannot reach NATS")
        began = time.monotonic()
        with pytest.raises(RpcError) as refused:
            await alice.call("send", chat="general", text="while NATS is away")
        assert refused.value.code == -32008
        assert "node2 cannot reach the shared log" in str(refused.value)
        assert time.monotonic() - began < 2.0  # forward_timeout is 5 s
        nats.start()
        await until(lambda: node.health()[0], 20)


async def test_a_writer_that_stops_hands_the_lease_over_at_once(tmp_path: Path, nats: Nats) -> None:
    """A writer that stops deletes its lease: a follower takes over at its lease loop's
    next tick (a third of ``lease_ttl``), not once the lease has lived out its ttl."""
    settings = {"lease_ttl": 6.0}
    async with contextlib.AsyncExitStack() as first:
        writer = await first.enter_async_context(
            run_server(node_config(tmp_path, [nats.url], "first", **settings))
        )
        await wait_for_writer(writer)
        config = node_config(tmp_path, [nats.url], "second", **settings)
        async with run_server(config) as second:
            await until(lambda: cluster_node(second).writer_name == "first")
            await first.aclose()
            began = time.monotonic()
            await wait_for_writer(second, within=10)
            assert time.monotonic() - began < 4.0  # a tick is 2 s; the lease lives 6 s


async def test_a_node_that_re_read_past_what_it_told_asks_its_devices_to_log_in_again(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower that missed events a snapshot now covers re-reads the log and closes
    its devices' connections with 1012 (service restart): it cannot tell them what
    they missed, which they learn by logging in again."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob") as bob,
    ):
        node = cluster_node(follower)
        await miss_a_message_behind_a_snapshot(node, writer, alice)
        async with asyncio.timeout(10):
            await bob.connection.wait_closed()
        assert bob.connection.close_code == 1012


async def test_a_follower_answers_a_forwarded_send_only_once_it_has_folded_it(
    tmp_path: Path, nats: Nats
) -> None:
    """The writer has decided and stored a send made through a follower; the follower
    answers its device only once its own fold has the message (a read right after the
    reply sees it), however late that fold is."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (_, follower),
        user_device(follower.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        node._follow.cancel()  # the follower stops folding for a while
        sending = asyncio.ensure_future(alice.call("send", chat="general", text="hello"))
        await asyncio.sleep(1.0)
        assert not sending.done()
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        sent = await sending
        history = await alice.call("history", chat="general")
        assert [m["id"] for m in history["messages"]] == [sent["message"]["id"]]


async def test_catching_up_waits_for_the_cursor_asked_not_for_the_next_fold(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower waiting until its state holds cursor N (before answering a forwarded
    request) goes on waiting while it folds events below N."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        await until(lambda: node.service.state.cursor == writer.service.state.cursor)
        folded = node.service.state.cursor
        waiting = asyncio.ensure_future(node.caught_up(folded + 100))
        try:
            await alice.call("send", chat="general", text="one")
            await until(lambda: node.service.state.cursor > folded)
            await asyncio.sleep(0.2)
            assert not waiting.done()
        finally:
            waiting.cancel()


_GUESSES: dict[str, Any] = {"login_attempts": 2, "login_backoff": 60.0}


async def wrong_guesses(url: str, count: int) -> list[int]:
    """The error codes of ``count`` logins as alice with a wrong password."""
    codes = []
    async with connected(url) as guesser:
        for _ in range(count):
            with pytest.raises(RpcError) as refused:
                await guesser.call("login", user="alice", password="wrong-guess")
            codes.append(refused.value.code)
    return codes


async def test_a_right_password_clears_the_failed_logins_counted_on_the_writer(
    tmp_path: Path, nats: Nats
) -> None:
    """A login with the right password starts the count of its name's failures from
    that address afresh, whether it came through the writer or a follower."""
    async with nodes(tmp_path, [nats.url], 2, **_GUESSES) as (writer, follower):
        async with user_device(writer.url, "alice"):
            pass
        for via in (writer, follower, writer):  # a second failure in a row throttles
            assert await wrong_guesses(via.url, 1) == [-32001]
            async with connected(via.url) as device:
                await device.login("alice")


async def test_a_writer_cut_off_from_nats_counts_failed_logins_itself(
    tmp_path: Path, nats: Nats
) -> None:
    """A writer that cannot reach NATS (its lease not yet lapsed) checks a password and
    counts a failure, or clears the failures on success, itself: it does not ask the
    writer over NATS and answer -32008."""
    async with nodes(tmp_path, [nats.url], 1, lease_ttl=60.0, **_GUESSES) as (writer,):
        async with user_device(writer.url, "alice"):
            pass
        node = cluster_node(writer)
        nats.kill()
        try:
            await until(lambda: not node.shared.connected)
            assert await wrong_guesses(writer.url, 1) == [-32001]
            async with connected(writer.url) as device:
                with pytest.raises(RpcError):  # the right password; the device is not stored
                    await device.login("alice")
        finally:
            nats.start()
        await until(lambda: node.shared.connected and not node.store.broken.is_set(), 20)
        assert node.writer
        assert await wrong_guesses(writer.url, 3) == [-32001, -32001, -32004]


async def test_a_writer_does_not_count_the_failed_logins_another_node_publishes(
    tmp_path: Path, nats: Nats
) -> None:
    """Failed logins published by another node (a writer that lost its lease without
    knowing) are copied by the followers but not counted again by the writer."""
    pair, address = "alice 127.0.0.1", "127.0.0.1"
    async with nodes(tmp_path, [nats.url], 2, **_GUESSES) as (writer, follower):
        node = cluster_node(writer)
        stale = {"op": "throttle", "ask": "failed", "pair": pair, "address": address}
        copy = follower.service.counted_here

        async def copied() -> bool:
            # Published until copied: what is published before the follower's
            # subscription reaches the server is not delivered (NATS core).
            await node.shared.nc.publish(
                node.shared.names.logins, orjson.dumps({**stale, "node": "gone"})
            )
            await node.shared.nc.flush()
            return await copy.retry_after(pair, address) > 0

        await eventually(copied)
        await asyncio.sleep(0.2)
        assert await writer.service.counted_here.retry_after(pair, address) == 0


async def test_a_node_re_reading_the_log_says_so_on_healthz(tmp_path: Path, nats: Nats) -> None:
    """While a follower re-reads the log (here: a slow store), /healthz says so (503)."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
    ):
        node = cluster_node(follower)
        records = node.store.records
        gate = asyncio.Event()

        async def slow(after: Snapshot | None = None) -> AsyncIterator[list[bytes]]:
            await gate.wait()
            async for chunk in records(after):
                yield chunk

        node.store.records = slow  # type: ignore[method-assign]
        await miss_a_message_behind_a_snapshot(node, writer, alice)
        await until(lambda: node.rebuilding)
        assert node.health() == (False, "unavailable: node node2 is re-reading the log")
        gate.set()
        await until(lambda: node.health()[0])


async def test_a_stopped_node_holds_no_lease_task_answer_or_login_copy(
    tmp_path: Path, nats: Nats
) -> None:
    """Once ``stop`` returns, the node no longer writes, its lease and follow loops have
    ended, the requests it was still answering are cancelled, it answers no more, and
    it takes no more copies of failed logins."""
    pair, address = "alice 127.0.0.1", "127.0.0.1"
    # A lease tick is 10 s; three failed logins make a copy throttle.
    settings: dict[str, Any] = {"lease_ttl": 30.0, "forward_timeout": 2.0, **_GUESSES}
    async with (
        nodes(tmp_path, [nats.url], 2, **settings) as (writer, follower),
        user_device(follower.url, "alice") as alice,
    ):
        node = cluster_node(writer)
        gate = gate_appends(node)
        sending = asyncio.ensure_future(alice.call("send", chat="general", text="held"))

        def answering() -> list[asyncio.Task[Any]]:
            return [
                task
                for task in asyncio.all_tasks()
                if getattr(task.get_coro(), "__qualname__", "") == "ClusterNode._answer"
            ]

        await until(lambda: bool(answering()))
        held = answering()
        await node.stop()
        assert node._lease is not None
        assert node._lease.done()
        assert node._follow is not None
        assert node._follow.done()
        assert not node.writer
        assert not writer.service.writing
        await asyncio.sleep(0)
        assert all(task.done() for task in held)
        other = cluster_node(follower).shared.nc
        asked = {"op": "throttle", "ask": "retry_after", "pair": pair, "address": address}
        with pytest.raises(NoRespondersError):  # the follower takes over in 10 s
            await other.request(node.shared.names.rpc, orjson.dumps(asked), timeout=1.0)
        stale = {"op": "throttle", "ask": "failed", "pair": pair, "address": address}
        for _ in range(3):
            await other.publish(node.shared.names.logins, orjson.dumps({**stale, "node": "gone"}))
        copy = follower.service.counted_here

        async def copied() -> bool:
            return await copy.retry_after(pair, address) > 0

        await eventually(copied)
        await asyncio.sleep(0.2)
        assert await writer.service.counted_here.retry_after(pair, address) == 0
        gate.set()
        with pytest.raises(RpcError):
            await sending


def failing_reads(calls: list[float], error: Exception) -> Any:
    """A read of the log that fails with ``error`` each time, after a turn of the
    event loop; each call's time in ``calls``."""

    async def read(*_: Any) -> AsyncIterator[Any]:
        calls.append(time.monotonic())
        await asyncio.sleep(0)
        if calls:  # always: the read fails before its first record
            raise error
        yield

    return read


@pytest.mark.parametrize(
    "error", [OSError("the network is down"), ValueError("not a record")], ids=["os", "other"]
)
async def test_a_failed_read_of_the_log_is_tried_again_after_half_a_second(
    tmp_path: Path, nats: Nats, error: Exception
) -> None:
    """The follow loop tries a failed read of the stream again after half a second
    (after a re-read, for a failure of no known kind), not at once in a tight loop."""
    async with nodes(tmp_path, [nats.url], 1) as (writer,):
        node = cluster_node(writer)
        assert node._follow is not None
        node._follow.cancel()
        await asyncio.wait({node._follow})
        calls: list[float] = []
        node.store.tail = failing_reads(calls, error)  # type: ignore[method-assign]
        node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
        await asyncio.sleep(1.2)
        assert 2 <= len(calls) <= 4, calls  # at 0, 0.5 and 1.0 s


async def test_a_failed_re_read_is_tried_again_after_half_a_second(
    tmp_path: Path, nats: Nats
) -> None:
    """A re-read of the log that fails for NATS or the network is tried again after
    half a second, not at once in a tight loop."""
    async with nodes(tmp_path, [nats.url], 1) as (writer,):
        node = cluster_node(writer)
        records = node.store.records
        calls: list[float] = []
        node.store.records = failing_reads(calls, OSError("the network is down"))  # type: ignore[method-assign]
        rebuilding = asyncio.ensure_future(node._rebuild())
        try:
            await asyncio.sleep(1.2)
            assert 2 <= len(calls) <= 4, calls  # at 0, 0.5 and 1.0 s
        finally:
            node.store.records = records  # type: ignore[method-assign]
            async with asyncio.timeout(10):
                await rebuilding


def renewals(node: ClusterNode, failing: set[int]) -> list[tuple[float, bool]]:
    """From now on, (when, writing then) of each renewal of ``node``'s lease; the
    renewals numbered in ``failing`` (1 the first) fail as a NATS hiccup would."""
    lease = node.shared.lease
    update = lease.update
    seen: list[tuple[float, bool]] = []

    async def renew(*args: Any, **kwargs: Any) -> Any:
        seen.append((time.monotonic(), node.writer))
        if len(seen) in failing:
            raise NatsTimeout
        return await update(*args, **kwargs)

    lease.update = renew  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("failing", [1, 2], ids=["first", "second"])
async def test_a_writer_whose_lease_renewal_fails_once_goes_on_writing(
    tmp_path: Path, nats: Nats, failing: int
) -> None:
    """A renewal of the lease that fails once, the first after taking over or a later
    one, leaves the writer writing: the lease it holds lives on."""
    settings: dict[str, Any] = {"lease_ttl": 1.5}  # a renewal every 0.5 s
    async with nodes(tmp_path, [nats.url], 2, **settings) as (first, second):
        node = cluster_node(second)
        seen = renewals(node, {failing})
        await cluster_node(first).stop()  # hands the lease over
        await wait_for_writer(second)
        with pytest.raises(TimeoutError):  # through the failed renewal and a few more
            await until(lambda: not node.writer, 3.0)
        assert len(seen) >= failing + 2


async def test_a_writer_that_cannot_renew_its_lease_stops_writing_before_it_lapses(
    tmp_path: Path, nats: Nats
) -> None:
    """A writer whose renewals keep failing stops writing once two thirds of the lease
    have gone by since the last renewal, before another node may take it over."""
    async with nodes(tmp_path, [nats.url], 1, lease_ttl=3.0) as (writer,):  # ticks of 1 s
        node = cluster_node(writer)
        seen = renewals(node, set(range(1, 1000)))
        await until(lambda: bool(seen))
        lapses = node._lease_deadline  # a lease ttl after its last renewal
        await until(lambda: not node.writer, 10)
        assert time.monotonic() < lapses


async def test_a_writer_renews_its_lease_every_third_of_its_ttl(tmp_path: Path, nats: Nats) -> None:
    """The writer renews its lease every third of ``lease_ttl``: often enough to
    outlive a failed renewal, not more (each is a write to the KV store)."""
    async with nodes(tmp_path, [nats.url], 1, lease_ttl=3.0) as (writer,):
        seen = renewals(cluster_node(writer), set())
        await until(lambda: len(seen) >= 4)
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(seen)]
        assert all(0.95 <= gap < 1.5 for gap in gaps), gaps


async def test_a_re_read_that_missed_nothing_keeps_the_devices_and_repeats_nothing(
    tmp_path: Path, nats: Nats
) -> None:
    """A follower that re-reads a log whose every event it has told (from a snapshot
    at the last of them, or with that event among those read) keeps its devices
    connected and tells them no event a second time; one follow loop runs after."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob") as bob,
    ):
        node = cluster_node(follower)
        await alice.call("send", chat="general", text="before")
        await bob.next_event("message")
        await writer.service.compact()
        await until(lambda: node.service.state.cursor == writer.service.state.cursor)
        await node._rebuild()  # from the snapshot at the last event told
        await alice.call("send", chat="general", text="after")
        await bob.next_event("message")
        await node._rebuild()  # that message among the events read after the snapshot
        following = [task for task in asyncio.all_tasks() if task.get_name() == "messenger-follow"]
        assert len(following) == 2  # one a node: each re-read ended the loop it restarted
        await bob.no_event(0.5)
        assert bob.connection.close_code is None


@pytest.mark.parametrize("skip", [None, 2], ids=["no-integer-cursor", "cursor-gap"])
async def test_a_node_folds_nothing_past_a_record_it_cannot_fold(
    tmp_path: Path, nats: Nats, skip: int | None
) -> None:
    """A record in the stream no writer of this version wrote (a cursor that is no
    integer, or one past the next) stops the node's fold there: it is neither skipped
    nor folded as the next event."""
    async with nodes(tmp_path, [nats.url], 1) as (writer,):
        async with user_device(writer.url, "alice"):  # the record is hers: it would fit
            pass
        node = cluster_node(writer)
        cursor = "7" if skip is None else writer.service.state.cursor + skip
        record = {**to_record(UserSeen(UserName("alice"), 1)), "c": cursor}
        other = await nats_client.connect(nats.url)
        try:
            stored = await other.jetstream().publish(
                node.shared.names.subject, orjson.dumps([record])
            )
        finally:
            await other.close()
        await asyncio.sleep(1.0)
        assert node.position < stored.seq


async def test_an_event_stored_though_its_append_timed_out_is_told_after_the_re_read(
    tmp_path: Path, nats: Nats
) -> None:
    """JetStream stored an append whose answer never came: the writer re-reads the
    stream, finds the event it never told, and tells its devices then."""
    async with (
        nodes(tmp_path, [nats.url], 1) as (writer,),
        user_device(writer.url, "alice") as alice,
        user_device(writer.url, "bob") as bob,
    ):
        node = cluster_node(writer)
        lose_the_next_ack(node.shared.js)
        with pytest.raises(RpcError) as caught:
            await alice.call("send", chat="general", text="maybe")
        assert caught.value.code == -32008
        told = await bob.next_event("message")
        assert told["params"]["message"]["text"] == "maybe"


async def test_a_writer_keeps_nothing_of_the_requests_it_has_answered(
    tmp_path: Path, nats: Nats
) -> None:
    """The task answering a forwarded request is let go once it has answered: a
    writer's memory does not grow with the requests it serves."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(follower.url, "alice") as alice,
    ):
        for index in range(3):
            await alice.call("send", chat="general", text=f"number {index}")
        node = cluster_node(writer)
        await until(lambda: not node._tasks, 2)


async def lease_holder(node: ClusterNode) -> str | None:
    """The node named in the cluster's lease, None while nobody holds it."""
    try:
        entry = await node.shared.lease.get("writer")
    except (KeyDeletedError, KeyNotFoundError):
        return None
    return (entry.value or b"").decode() or None


@pytest.mark.parametrize("catches_up", [True, False], ids=["catches-up", "stays-behind"])
async def test_a_node_takes_the_lease_only_once_it_has_folded_the_whole_log(
    tmp_path: Path, nats: Nats, catches_up: bool
) -> None:
    """A node that wins the lease while behind the log writes only once it has folded
    all of it, and appends after it unfenced; if it cannot within ``forward_timeout``
    it lets the lease go at once (another node may take it), not when it lapses."""
    settings: dict[str, Any] = {"lease_ttl": 6.0, "forward_timeout": 1.5}  # ticks of 2 s
    async with (
        nodes(tmp_path, [nats.url], 2, **settings) as (first, second),
        user_device(first.url, "alice") as alice,
    ):
        node = cluster_node(second)
        assert node._follow is not None
        node._follow.cancel()  # the follower stops folding for a while
        await asyncio.wait({node._follow})
        await alice.call("send", chat="general", text="not yet folded")
        await cluster_node(first).stop()  # hands the lease over

        async def held() -> bool:
            return await lease_holder(node) == "node2"

        await eventually(held, 5)
        began = time.monotonic()
        if catches_up:
            rebuilds = node._rebuilds
            node._follow = asyncio.get_running_loop().create_task(node._follow_stream())
            await wait_for_writer(second, within=1.0)
            async with user_device(second.url, "bob") as bob:  # its first append
                await bob.call("send", chat="general", text="from the new writer")
            assert node._rebuilds == rebuilds  # appended after what it folded: not fenced
            return

        async def let_go() -> bool:
            return await lease_holder(node) is None

        await eventually(let_go, 3)
        assert time.monotonic() - began < 2.5  # forward_timeout; the lease lives 6 s
        assert not node.writer


async def test_a_writer_losing_its_lease_after_an_append_of_unknown_outcome_re_reads(
    tmp_path: Path, nats: Nats
) -> None:
    """A writer whose append got no answer (stored or not, it cannot tell) and which
    then finds its lease taken re-reads the log as it steps down: it is a healthy
    follower again, not one that says for ever it cannot append."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (first, second),
        user_device(first.url, "alice") as alice,
    ):
        old = cluster_node(first)
        assert old._lease is not None
        old._lease.cancel()  # its lease loop stalls: the lease runs out
        await asyncio.wait({old._lease})
        lose_the_next_ack(old.shared.js)
        with pytest.raises(RpcError):
            await alice.call("send", chat="general", text="maybe")
        assert old.store.broken.is_set()
        await wait_for_writer(second)
        old._lease = asyncio.get_running_loop().create_task(old._hold_lease())
        await until(lambda: not old.writer, 5)
        await until(lambda: old.health()[0], 5)


async def test_the_devices_a_re_read_cut_off_are_let_go_at_once(tmp_path: Path, nats: Nats) -> None:
    """A node that re-read past what it told detaches the devices it asks to log in
    again as it closes them: nothing it tells after is written to those connections."""
    async with (
        nodes(tmp_path, [nats.url], 2, rate_limit=1000) as (writer, follower),
        user_device(writer.url, "alice") as alice,
        user_device(follower.url, "bob"),
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        node._follow.cancel()  # the follower stops folding for a while
        await asyncio.wait({node._follow})
        await alice.call("send", chat="general", text="missed")
        await writer.service.compact()
        await node._rebuild()
        assert not follower.service.hub.sessions


async def test_a_writer_losing_its_lease_with_everything_told_does_not_re_read(
    tmp_path: Path, nats: Nats
) -> None:
    """A writer that finds its lease taken while everything it applied is stored and
    told steps down without re-reading the log: its state is the stream's already."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (first, second),
        user_device(first.url, "alice") as alice,
    ):
        await alice.call("send", chat="general", text="stored and told")
        old = cluster_node(first)
        assert old._lease is not None
        old._lease.cancel()  # its lease loop stalls: the lease runs out
        await asyncio.wait({old._lease})
        await wait_for_writer(second)
        rebuilds = old._rebuilds
        old._lease = asyncio.get_running_loop().create_task(old._hold_lease())
        await until(lambda: not old.writer, 5)
        await asyncio.sleep(1.0)  # a re-read of this log takes milliseconds
        assert old._rebuilds == rebuilds


async def test_a_re_read_counts_the_events_that_concern_nobody_as_told(
    tmp_path: Path, nats: Nats
) -> None:
    """Events a re-read finds that concern nobody (a login, a device gone) count as
    told: a later re-read from a snapshot at them does not take the node for one that
    missed events and close its devices."""
    async with (
        nodes(tmp_path, [nats.url], 2) as (writer, follower),
        user_device(writer.url, "alice"),
        user_device(follower.url, "bob") as bob,
    ):
        node = cluster_node(follower)
        assert node._follow is not None
        node._follow.cancel()  # the follower stops folding for a while
        await asyncio.wait({node._follow})
        before = writer.service.state.cursor
        async with connected(writer.url) as again:
            await again.login("alice")  # told to nobody
        await until(lambda: writer.service.state.cursor > before)
        await node._rebuild()  # reads the login, tells nobody
        await writer.service.compact()  # a snapshot at the login
        await node._rebuild()  # from that snapshot: nothing missed
        assert follower.service.hub.sessions  # bob's device, still told
        async with asyncio.timeout(5):  # a device closed with 1012 gets no reply
            await bob.call("history", chat="general")
