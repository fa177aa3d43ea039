"""One node of a cluster: several servers on one JetStream log behave as one server
(protocol-contract.md v2, "Cluster").

The roles, and why:
- **One writer at a time**, the holder of the lease (KV ``writer``, renewed every
  third of ``lease_ttl``). It runs exactly what a single server runs: it decides
  against its state, appends, waits until JetStream has stored the batch, tells,
  answers. Its publishes expect the stream's last sequence to be the one it knows,
  so a writer that lost its lease without knowing it is fenced off by JetStream.
  (Many writers doing compare-and-append lost 43-69 % of appends to conflicts
  here; a forwarded request costs ~0.7 ms.)
- **Followers** fold the stream into their state, as a start-up replay does, and
  tell their own devices. A request that decides something is bound and checked
  where the device is, made into a command (server/domain/commands.py) and sent to
  the writer as data over NATS request/reply (op ``command``); the writer's
  executor decides it. The follower answers its device once its own fold has
  passed the cursor the writer answered with, so the events come before the reply
  on every node. Reads, logins and uploads are answered where the device is; what
  they record (a device authorised or revoked, a file stored) goes to the writer
  as events, which it admits only if they still fit its state.
- **Jobs that must run once** (due scheduled messages, snapshots, unused files)
  run on the writer only (``Service.writing``).
- A writer whose append failed does not know whether JetStream stored it: it
  re-reads the stream into a fresh state (``rebuild``), then goes on. A node that
  misses messages (the stream was purged below what it needs) does the same. When
  the append was fenced off (JetStream refused it whole: ``NotStored``), the
  executor decides the command again against the re-read state, here or, once
  this node no longer writes, on the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg

from server.app import replay
from server.domain import commands, rules
from server.domain.commands import Command
from server.domain.events import Event, Unfit, decode_stored, from_record, to_record
from server.errors import InternalError, MessengerError, Unavailable
from server.jetstream import JetStreamStore, Shared
from server.store import Gap

if TYPE_CHECKING:
    from server.rpc import Dispatcher
    from server.service import Service

logger = logging.getLogger("messenger.server.cluster")

# Of a follower's --forward-timeout, the part in which the writer may still decide
# a forwarded command (the rest: the way there and back, and the append).
FORWARD_MARGIN: Final = 0.8

# Calls any node answers from its own state; every other method decides through the
# executor, which sends its command to the writer. A batch holding one of those runs
# in order on a follower (the reads after it must see what the writer decided).
ANSWERED_HERE: Final = frozenset(
    {
        "register",  # the KDF runs here; the name is admitted by the writer
        "login",
        "logout",
        "rpc.discover",
        "status",
        "history",
        "unread",
        "comments",
        "scheduled",
        "chat.members",
        "chat.requests",
        "upload.begin",
        "upload.chunk",
        "upload.finish",
        "upload.abort",
        "download",
        "file.url",
        "presence",
        "search",
    }
)


async def _ended(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has ended. Asked again until it has: on
    Python 3.11 a ``wait_for`` inside nats-py can swallow a cancellation whose inner
    call completed at the same moment, and the follow loop then goes on for ever (a
    node's stop right after a re-read restarted that loop hung so)."""
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if task is not None and not task.cancelled() and task.exception() is not None:
        logger.warning("a cluster task ended with %r", task.exception())


def _command_of(record: dict[str, Any]) -> Command:
    """The command a node sent; -32008 for one this node's version does not know (a
    rolling upgrade: the writer may run an older version for a while), not -32603."""
    kind = record.get("type")
    if kind not in commands.COMMANDS:
        raise Unavailable(
            f"Expected a command the writer knows, but got {kind!r}: the nodes run "
            "different versions",
            1.0,
        )
    try:
        return commands.from_record(record)
    except TypeError as error:
        raise Unavailable(
            f"Expected {kind} as the writer knows it, but got another ({error}): the nodes "
            "run different versions",
            1.0,
        ) from None


def _events_of(records: list[dict[str, Any]]) -> list[Event]:
    """The events a node sent to be appended; -32008 at once for one this node's
    version does not know (not an answer never sent, and the asker's timeout)."""
    try:
        return [from_record(record) for record in records]
    except (KeyError, TypeError, ValueError) as error:
        raise Unavailable(
            f"Expected events the writer knows, but got another ({error}): the nodes run "
            "different versions",
            1.0,
        ) from None


class Forwarded(MessengerError):
    """An error the writer answered a forwarded request with, passed on as it came."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")), error.get("data"))
        self.error = error

    def to_wire(self) -> dict[str, Any]:
        return self.error


class ClusterNode:
    def __init__(
        self,
        shared: Shared,
        store: JetStreamStore,
        service: Service,
        dispatcher: Dispatcher,
        *,
        node: str,
        lease_ttl: float,
        forward_timeout: float,
    ) -> None:
        self.shared = shared
        self.store = store
        self.service = service
        self.dispatcher = dispatcher
        self.node = node
        self.lease_ttl = lease_ttl
        self.forward_timeout = forward_timeout
        self.writer = False
        self.writer_name: str | None = None
        self.position = store.position  # stream sequence folded so far
        self.rebuilding = False
        self._lease_revision = 0
        self._lease_deadline = 0.0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rpc: Any = None  # the writer's subscription to forwarded requests
        self._logins: Any = None  # the mirror of the writer's count of failed logins
        self._follow: asyncio.Task[None] | None = None
        self._lease: asyncio.Task[None] | None = None
        # Set by ``stop``: the loops end on it too, for a cancellation can be lost
        # (Python 3.11's ``asyncio.wait_for``, in nats-py's request, drops one that
        # comes with the reply; the lease task then renewed for ever).
        self._stopping = False
        self._caught_up = asyncio.Event()
        self._rebuild_lock = asyncio.Lock()  # one re-read at a time, whoever asks
        self._rebuilds = 0
        self._following(True)
        service.login_failures = self
        service.executor.recover = self.recovered
        dispatcher.forwards = lambda name: not self.writer and name not in ANSWERED_HERE

    def _following(self, following: bool) -> None:
        """What this node records and decides goes to the writer while it follows."""
        self.service.writing = not following
        self.service.forward = self.forward_events if following else None
        self.service.executor.forward = self.forward_command if following else None

    # -- life ------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._logins = await self.shared.nc.subscribe(
            self.shared.names.logins, cb=self._mirror_login
        )
        self._follow = loop.create_task(self._follow_stream(), name="messenger-follow")
        self._lease = loop.create_task(self._hold_lease(), name="messenger-lease")

    async def stop(self) -> None:
        self._stopping = True  # the loops end on it too, should a cancellation be lost
        await _ended(self._lease)
        await _ended(self._follow)  # read after: a re-read the lease task ran restarts it
        if self.writer:
            # No re-read: the state is dropped with the process, and with NATS away
            # a re-read would retry, and the stop wait, for as long as it stays away.
            await self._step_down("stopping", reread=False)
            with contextlib.suppress(Exception):
                await self.shared.lease.delete("writer", last=self._lease_revision)
        for task in list(self._tasks):
            task.cancel()
        if self._logins is not None:
            with contextlib.suppress(Exception):
                await self._logins.unsubscribe()

    def health(self) -> tuple[bool, str]:
        """(healthy, what to say): a node that cannot write takes no devices."""
        if not self.shared.connected:
            return False, f"unavailable: node {self.node} cannot reach NATS"
        if self.rebuilding:
            return False, f"unavailable: node {self.node} is re-reading the log"
        if self.store.broken.is_set():
            return False, f"unavailable: node {self.node} cannot append to the log"
        role = "writer" if self.writer else f"follower of {self.writer_name or '?'}"
        return True, f"ok node {self.node} {role} cursor {self.service.state.cursor}"

    # -- following the stream ------------------------------------------------------

    async def _follow_stream(self) -> None:
        """Fold the stream as it grows, for as long as the node runs: a failure of
        any kind is logged and followed by a pause, a re-read, or both."""
        reread = False
        while not self._stopping:
            try:
                if reread:
                    await self._rebuild()
                    reread = False
                async for seq, records in self.store.tail(self.position + 1):
                    self._fold(seq, records)
            except asyncio.CancelledError:
                raise
            except Gap as gap:
                logger.warning("node %s missed messages (%s): re-reading the log", self.node, gap)
                reread = True
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError) as exc:
                logger.info("node %s: following the log paused: %r", self.node, exc)
                await asyncio.sleep(0.5)
            except Exception:
                logger.exception("node %s: following the log failed; re-reading it", self.node)
                reread = True
                await asyncio.sleep(0.5)

    def _fold(self, seq: int, records: list[msgspec.Raw]) -> None:
        state = self.service.state
        for record in records:
            cursor, event = decode_stored(bytes(record))
            if isinstance(event, Unfit):  # no writer of this version wrote it
                raise ValueError(f"stream message {seq}, cursor {cursor}: {event.error}")
            if cursor is None or cursor <= state.cursor:
                continue  # this node wrote it (as the writer), and folded it then
            if cursor != state.cursor + 1:
                raise Gap(state.cursor + 1, cursor)
            self.service.told(event)
        self.position = seq
        self._release()

    async def recovered(self) -> None:
        """Done once this node has re-read the stream after an append that JetStream
        refused (the executor then decides again): by this call, or by whoever
        re-read it meanwhile (the lease task, a step-down)."""
        seen = self._rebuilds
        async with self._rebuild_lock:
            if self._rebuilds == seen and self.store.broken.is_set():
                await self._rebuild_now()

    async def _rebuild(self) -> None:
        """Fold the stream into a fresh state, then go on from there."""
        async with self._rebuild_lock:
            await self._rebuild_now()

    async def _rebuild_now(self) -> None:
        # Only one task folds: the follow loop must not fold into the old state
        # while the fresh one is read (what it folded would be missing from it).
        follow = self._follow
        restart = follow is not None and follow is not asyncio.current_task() and not follow.done()
        if restart:
            await _ended(follow)
        self.rebuilding = True
        began = time.perf_counter()
        try:
            while True:
                try:
                    fresh = self.service.new_state()
                    recent, count = await replay(
                        self.store, fresh, self.service.hub.recent.capacity
                    )
                    break
                except Gap:
                    continue  # a snapshot was taken meanwhile: from it
                except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError) as exc:
                    logger.info("node %s: re-reading the log paused: %r", self.node, exc)
                    await asyncio.sleep(0.5)
            hub = self.service.hub
            if recent.floor > hub.published:
                # Events this node never told are gone from the window (a snapshot
                # covers them): its devices cannot be told them; they come back with
                # ``since`` and learn ``resumed: false``.
                hub.recent = recent
                hub.published = fresh.cursor
                for session in list(hub.sessions):
                    hub.detach(session)
                    session.peer.close(1012, "this node re-read the log: log in again")
            for cursor, audience, frame, expires_at in recent.events:
                if cursor > hub.published:  # stored, but never told: a publish that timed out
                    hub.publish(cursor, audience, frame, expires_at, recent.about.get(cursor))
            hub.advance(fresh.cursor)
            self.service.state = fresh
            self.service.arm_schedule()  # the old state's timer (or none) is not the fresh one's
            self.position = self.store.position
            self.store.reset(self.store.position, fresh.cursor)
            self._rebuilds += 1
            logger.info(
                "node %s re-read %d events in %.2f s; cursor %d",
                self.node,
                count,
                time.perf_counter() - began,
                fresh.cursor,
            )
        finally:
            self.rebuilding = False
            if restart:
                self._follow = asyncio.get_running_loop().create_task(
                    self._follow_stream(), name="messenger-follow"
                )
        self._release()

    async def caught_up(self, cursor: int) -> None:
        """Wait until this node's state holds every event up to ``cursor``."""
        if self.service.state.cursor >= cursor:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (cursor, next(self._order), future))
        try:
            await asyncio.wait_for(future, self.forward_timeout)
        except TimeoutError:
            raise Unavailable(
                f"Node {self.node} is behind the shared log; try again", 1.0
            ) from None

    def _release(self) -> None:
        cursor = self.service.state.cursor
        while self._waiters and self._waiters[0][0] <= cursor:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    # -- forwarding (follower) -----------------------------------------------------

    async def _ask_writer(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.shared.connected:
            raise Unavailable(f"Node {self.node} cannot reach the shared log", 1.0)
        try:
            answer = await self.shared.nc.request(
                self.shared.names.rpc, orjson.dumps(request), timeout=self.forward_timeout
            )
        except nats.errors.NoRespondersError:
            raise Unavailable("No writer is serving the cluster right now", 1.0) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"The writer did not answer: {exc!r}", 1.0) from None
        found: dict[str, Any] = orjson.loads(answer.data)
        await self.caught_up(found["cursor"])
        return found

    async def forward_command(self, command: Command) -> dict[str, Any]:
        """The executor on a follower: the writer decides ``command`` and answers."""
        found = await self._ask_writer(
            {
                "op": "command",
                "command": commands.to_record(command),
                # The writer decides nothing once this node has stopped waiting (a
                # margin for the way there and the append).
                "within": self.forward_timeout * FORWARD_MARGIN,
            }
        )
        if "error" in found:
            raise Forwarded(found["error"])
        reply: dict[str, Any] = found["reply"]
        return reply

    def forward_events(self, events: list[Event]) -> asyncio.Future[None]:
        """``Service.record`` on a follower: the writer admits and appends ``events``;
        done once this node has folded them."""
        return asyncio.ensure_future(self._forward_events(events))

    async def _forward_events(self, events: list[Event]) -> None:
        found = await self._ask_writer({"op": "append", "events": [to_record(e) for e in events]})
        if "error" in found:
            raise Forwarded(found["error"])

    # -- failed logins, counted by the writer for the whole cluster ---------------

    async def retry_after(self, pair: str, address: str) -> float:
        if self.writer:
            return await self.service.counted_here.retry_after(pair, address)
        found = await self._ask_writer(
            {"op": "throttle", "ask": "retry_after", "pair": pair, "address": address}
        )
        return float(found["retry_after"])

    async def failed(self, pair: str, address: str) -> None:
        asked = {"op": "throttle", "ask": "failed", "pair": pair, "address": address}
        if self.writer:
            await self._count_login(asked)
        else:
            await self._ask_writer(asked)

    async def succeeded(self, pair: str) -> None:
        asked = {"op": "throttle", "ask": "succeeded", "pair": pair}
        if self.writer:
            await self._count_login(asked)
        else:
            await self._ask_writer(asked)

    async def _count_login(self, asked: dict[str, Any]) -> dict[str, Any]:
        """The writer counts; every other node keeps a copy (``_mirror_login``), so
        that a node taking over as writer goes on from the same counts instead of
        giving every guesser a fresh start."""
        if asked["ask"] == "retry_after":
            here = self.service.counted_here
            return {"retry_after": await here.retry_after(asked["pair"], asked["address"])}
        await self._count_here(asked)
        with contextlib.suppress(Exception):  # a copy: the count itself is kept here
            await self.shared.nc.publish(
                self.shared.names.logins, orjson.dumps({**asked, "node": self.node})
            )
        return {}

    async def _count_here(self, asked: dict[str, Any]) -> None:
        here = self.service.counted_here
        if asked["ask"] == "failed":
            await here.failed(asked["pair"], asked["address"])
        elif asked["ask"] == "succeeded":
            await here.succeeded(asked["pair"])

    async def _mirror_login(self, message: Msg) -> None:
        try:
            asked = orjson.loads(message.data)
            if asked.get("node") != self.node and not self.writer:
                await self._count_here(asked)
        except Exception:
            logger.exception("node %s: a mirrored login count was not understood", self.node)

    # -- the writer ----------------------------------------------------------------

    async def _answer(self, message: Msg) -> None:
        service = self.service
        try:
            asked = orjson.loads(message.data)
            answer: dict[str, Any]
            if asked["op"] == "command":
                try:
                    command = _command_of(asked["command"])
                    reply = await service.executor.run_forwarded(command, asked.get("within"))
                    answer = {"reply": reply}
                except MessengerError as error:
                    answer = {"error": error.to_wire()}
                except Exception:  # a bug: answered at once, as the dispatcher would
                    logger.exception("node %s: a forwarded command failed", self.node)
                    answer = {"error": InternalError("Internal error").to_wire()}
            elif asked["op"] == "throttle":
                answer = await self._count_login(asked)
            else:
                try:
                    async with service.pause.request():  # as the dispatcher's calls do
                        now = service.clock()
                        events = rules.admit_all(
                            service.state,
                            _events_of(asked["events"]),
                            now,
                            service.connected_devices,
                            service.config.max_devices,
                        )
                        await service.commit(events)
                    answer = {}
                except MessengerError as error:
                    answer = {"error": error.to_wire()}
            # What the answer was decided against is made durable and told first (a
            # refusal may rest on events still on their way to the log); the asking
            # node answers its device once it has folded this far.
            with contextlib.suppress(Exception):
                await service.log.barrier()
            answer["cursor"] = service.hub.published
            await message.respond(orjson.dumps(answer))
        except Exception:
            logger.exception("node %s: a forwarded request failed", self.node)

    async def _serve(self, message: Msg) -> None:
        # One task per request: a request waiting for the disk must not hold up the
        # ones behind it (they are group-committed together).
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hold_lease(self) -> None:
        lease = self.shared.lease
        while not self._stopping:
            try:
                if self.writer:
                    self._lease_revision = await lease.update(
                        "writer", self.node.encode(), last=self._lease_revision
                    )
                    self._lease_deadline = time.monotonic() + self.lease_ttl
                    if self.store.broken.is_set() and not self.rebuilding:
                        await self._rebuild()
                else:
                    try:
                        revision = await lease.create("writer", self.node.encode())
                    except nats.js.errors.KeyWrongLastSequenceError:
                        entry = await lease.get("writer")
                        self.writer_name = (entry.value or b"").decode() or None
                    else:
                        await self._become_writer(revision)
            except asyncio.CancelledError:
                raise
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._step_down("another node holds the lease")
            except Exception as exc:
                if self.writer and time.monotonic() > self._lease_deadline - self.lease_ttl / 3:
                    await self._step_down(f"the lease could not be renewed: {exc!r}")
                else:
                    logger.debug("node %s: lease: %r", self.node, exc)
            await asyncio.sleep(self.lease_ttl / 3)

    async def _become_writer(self, revision: int) -> None:
        self._lease_revision = revision
        self._lease_deadline = time.monotonic() + self.lease_ttl
        info = await self.shared.js.stream_info(self.shared.names.stream)
        last = info.state.last_seq
        deadline = time.monotonic() + self.forward_timeout
        while self.position < last:  # fold everything written before taking over
            if time.monotonic() > deadline:
                logger.warning("node %s is behind the log: not taking the lease", self.node)
                with contextlib.suppress(Exception):
                    await self.shared.lease.delete("writer", last=revision)
                return
            await asyncio.sleep(0.01)
        self.store.reset(self.position, self.service.state.cursor)
        self.store.start()
        self.writer = True
        self.writer_name = self.node
        self._rpc = await self.shared.nc.subscribe(
            self.shared.names.rpc, queue="writer", cb=self._serve
        )
        self._following(False)
        self.service.arm_schedule()
        logger.info("node %s is the writer from stream sequence %d", self.node, last)

    async def _step_down(self, why: str, *, reread: bool = True) -> None:
        if not self.writer:
            return
        logger.warning("node %s stops writing: %s", self.node, why)
        self.writer = False
        self.writer_name = None
        self._following(True)
        self.service.disarm_schedule()
        if self._rpc is not None:
            with contextlib.suppress(Exception):
                await self._rpc.unsubscribe()
            self._rpc = None
        # Appends still on their way may yet be stored or fenced: wait for them, and
        # re-read the stream unless everything this node applied is known stored.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.store.barrier(), self.store.publish_timeout)
        if not reread:
            return
        if self.store.broken.is_set() or self.service.state.cursor > self.service.hub.published:
            await self._rebuild()
