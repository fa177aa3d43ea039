"""Who is online: a user is online while any device of theirs is connected on any
node; ``last_seen`` is when the last one went away.

Connections come and go far more often than anything else happens, so presence
is kept out of the event log: ``Presence`` (one server) holds it in memory, and
``NatsPresence`` (a cluster) tells the other nodes of its own users' changes on
the subject ``<cluster-name>.presence``, with a heartbeat of its whole set every
``heartbeat`` seconds, so that a node that dies takes its users offline within
three heartbeats. Every node works out the same cluster-wide changes from the same
messages and tells its own devices; nobody is told twice.

A user whose last device leaves stays online for ``grace`` seconds: a connection
that drops and comes back (a phone changing networks) makes no pair of events.
The durable part is ``last_seen`` only: the node where the last device left
records a ``UserSeen`` event, at most once per user per ``persist_every`` seconds
(a flapping user would otherwise write one per flap), so after a restart
``last_seen`` is at most that much older than the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from server.domain.model import UserKey

logger = logging.getLogger("messenger.server.presence")

# (user, online, last_seen, here): ``here`` when this node's last device went,
# so this node is the one to make ``last_seen`` durable.
Changed = Callable[[UserKey, bool, int | None, bool], None]


class Presence:
    """One server's presence; the base of the cluster's."""

    def __init__(self, grace: float, clock: Callable[[], int], changed: Changed) -> None:
        self.grace = grace
        self.clock = clock
        self.changed = changed
        self.here: set[UserKey] = set()  # a device connected here, or within the grace
        self.leaving: dict[UserKey, tuple[asyncio.TimerHandle, int]] = {}  # timer, left at
        self.stopping = False
        self.last_seen: dict[UserKey, int] = {}  # this run's, fresher than the log's
        # The user's last device on this node went (after the grace), at that time.
        self.left_here: Callable[[UserKey, int], None] | None = None

    def online(self, key: UserKey) -> bool:
        return key in self.here

    def arrived(self, key: UserKey) -> None:
        """The first of the user's devices on this node logged in."""
        leaving = self.leaving.pop(key, None)
        if leaving is not None:  # back within the grace: nothing happened
            leaving[0].cancel()
            return
        self._update(key, self.here, True, None, here=True)

    def left(self, key: UserKey) -> None:
        """The last of the user's devices on this node went away."""
        if key in self.leaving:
            return
        at = self.clock()
        loop = asyncio.get_running_loop()
        self.leaving[key] = (loop.call_later(self.grace, self._gone, key, at), at)

    def _gone(self, key: UserKey, at: int) -> None:
        del self.leaving[key]
        self._update(key, self.here, False, at, here=True)
        # Whether or not the user is still online on another node: when the last
        # devices on two nodes go at once, each sees the other's still there, and
        # neither would record last_seen (the fold keeps the latest).
        if self.left_here is not None:
            self.left_here(key, at)

    def _update(
        self, key: UserKey, users: set[UserKey], online: bool, at: int | None, here: bool
    ) -> None:
        """``key`` joins or leaves ``users`` (this node's or another's); tell of it if
        that turned the user on or off line."""
        was = self.online(key)
        if online:
            users.add(key)
        else:
            users.discard(key)
        if here:
            self._publish(key, key in self.here, at)
        now = self.online(key)
        if now == was:
            return
        if not now:
            self.last_seen[key] = at if at is not None else self.clock()
        try:
            self.changed(key, now, None if now else self.last_seen[key], here)
        except Exception:  # a task boundary (a timer's callback)
            logger.exception("telling of %s's presence failed", key)

    def _publish(self, key: UserKey, online: bool, at: int | None) -> None:
        """One server has nobody to tell."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        """The server stops (its connections are closed by now): whoever is leaving has
        gone, at the moment they left, and ``last_seen`` is recorded for each."""
        self.stopping = True
        for key, (timer, at) in list(self.leaving.items()):
            timer.cancel()
            self._gone(key, at)


class NatsPresence(Presence):
    """A cluster node's presence: its own users, and every other node's."""

    def __init__(
        self,
        grace: float,
        clock: Callable[[], int],
        changed: Changed,
        *,
        nc: Any,
        cluster: str,
        node: str,
        heartbeat: float,
    ) -> None:
        super().__init__(grace, clock, changed)
        self.nc = nc
        self.subject = f"{cluster}.presence"
        self.node = node
        self.heartbeat = heartbeat
        self.others: dict[str, set[UserKey]] = {}  # node -> its users online
        # node -> user -> devices connected there, for ``status`` (no events of its own)
        self.devices: dict[str, dict[UserKey, set[str]]] = {}
        self.local_devices: Callable[[UserKey], set[str]] = lambda key: set()
        self.heard: dict[str, float] = {}  # node -> when it last spoke (monotonic)
        self._subscription: Any = None
        self._beating: asyncio.Task[None] | None = None

    def online(self, key: UserKey) -> bool:
        return key in self.here or any(key in users for users in self.others.values())

    def _publish(self, key: UserKey, online: bool, at: int | None) -> None:
        self._send({"node": self.node, "user": key, "online": online, "at": at})

    def devices_changed(self, key: UserKey) -> None:
        """A device of ``key`` connected or went here: tell the others which are here."""
        self._send({"node": self.node, "user": key, "devices": sorted(self.local_devices(key))})

    def devices_elsewhere(self, key: UserKey) -> set[str]:
        found: set[str] = set()
        for users in self.devices.values():
            found |= users.get(key, set())
        return found

    def _all_devices(self) -> dict[str, list[str]]:
        return {key: sorted(self.local_devices(key)) for key in self.here}

    def _send(self, message: dict[str, Any]) -> None:
        if not self.nc.is_connected:
            return  # the next heartbeat after the reconnection says it all

        async def send() -> None:
            with contextlib.suppress(Exception):
                await self.nc.publish(self.subject, orjson.dumps(message))

        asyncio.get_running_loop().create_task(send())

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(self.subject, cb=self._heard)
        self._beating = asyncio.get_running_loop().create_task(self._beat(), name="presence")

    async def stop(self) -> None:
        # The others hear at once that this node's users are gone (not after three
        # silent heartbeats); ``last_seen`` is theirs to show, not to record: this
        # node has handed the log over by now.
        for timer, _ in self.leaving.values():
            timer.cancel()
        self.leaving.clear()
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.publish(self.subject, orjson.dumps({"node": self.node, "users": []}))
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _beat(self) -> None:
        while True:
            self._send({"node": self.node, "users": sorted(self.here), "all": self._all_devices()})
            await asyncio.sleep(self.heartbeat)
            silent = time.monotonic() - 3 * self.heartbeat
            for node in [n for n, heard in self.heard.items() if heard < silent]:
                logger.info("presence: node %s is silent; its users are offline", node)
                self._replace(node, set())
                del self.others[node], self.heard[node]
                self.devices.pop(node, None)

    async def _heard(self, message: Any) -> None:
        try:
            said = orjson.loads(message.data)
            node = said["node"]
            if node == self.node:
                return
            self.heard[node] = time.monotonic()
            if "users" in said:
                all_devices = said.get("all", {})
                self.devices[node] = {UserKey(k): set(v) for k, v in all_devices.items()}
                self._replace(node, {UserKey(user) for user in said["users"]})
                return
            key = UserKey(said["user"])
            if "devices" in said:
                held = self.devices.setdefault(node, {})
                if said["devices"]:
                    held[key] = set(said["devices"])
                else:
                    held.pop(key, None)
                return
            users = self.others.setdefault(node, set())
            self._update(key, users, bool(said["online"]), said.get("at"), here=False)
        except Exception:  # a task boundary: a bad message must not stop the subscription
            logger.exception("presence: a message could not be read")

    def _replace(self, node: str, users: set[UserKey]) -> None:
        held = self.others.setdefault(node, set())
        for key in held ^ users:
            self._update(key, held, key in users, None, here=False)
