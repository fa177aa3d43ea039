"""Commands in, events out: each handler asks the rules for events, folds them into
the state, appends them to the log, waits until they are durable, then hands the
encoded events to the hub and answers.

The state is changed only on the event loop's thread, so a command decides against
a state no other command is halfway through; only the log and the KDF are awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Protocol

import orjson

from server import __version__
from server.auth import (
    KdfPool,
    LoginThrottle,
    RegistrationLimit,
    address_of,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from server.config import Config
from server.domain import rules, views
from server.domain.commands import MoveReadMarker, Send
from server.domain.events import (
    DeviceRevoked,
    Event,
    MessageDeleted,
    MessagePosted,
    MessageScheduled,
    to_record,
)
from server.domain.limits import PAGE_MAX, page
from server.domain.model import (
    Chat,
    Device,
    DeviceId,
    Message,
    User,
    UserKey,
    UserName,
    user_key,
)
from server.domain.snapshot import dump
from server.domain.state import State, expired
from server.errors import InvalidParams, NotFound, RateLimited, Unauthenticated
from server.executor import Executor
from server.hub import Hub, Session
from server.rpc import Doc, Length, Pattern, Range, Registry, rpc_method
from server.store import EventStore, Snapshot
from wire import (
    DEVICE_NAME_MAX,
    HISTORY_MAX,
    PASSWORD_MAX,
    PASSWORD_MIN,
    TEXT_MAX,
    USER_NAME_PATTERN,
)

logger = logging.getLogger("messenger.server")

Clock = Callable[[], int]  # milliseconds since the Unix epoch


def system_clock() -> int:
    return time.time_ns() // 1_000_000


# Replies must fit in a frame (the client's limit is the same 1 MiB): lists of
# messages stop at this many bytes of JSON and say has_more.
REPLY_BUDGET = 900_000
UNREAD_PER_CHAT = 1000

UserParam = Annotated[
    str, Pattern(USER_NAME_PATTERN, "1-32 of A-Z a-z 0-9 _ . -"), Doc("a user name")
]
PasswordParam = Annotated[str, Length(PASSWORD_MIN, PASSWORD_MAX), Doc("the password")]
ChatParam = Annotated[str, Length(1, 64), Doc("a chat id")]
SeqParam = Annotated[int, Range(0, None), Doc("a message's position in its chat")]
OffsetParam = Annotated[int, Range(0, None), Doc("items to skip (paging)")]
LimitParam = Annotated[int, Range(1, PAGE_MAX), Doc("items at most (paging)")]


def _log_failure(future: asyncio.Future[None]) -> None:
    if future.exception() is not None:
        logger.error("events were not written: %s", future.exception())


def actor(session: Session) -> tuple[UserName, DeviceId]:
    """Who a command of this session is from (the decision checks the device is still
    logged in: another connection's logout may have gone first)."""
    if session.user is None or session.device is None:
        raise Unauthenticated("This device was logged out; log in again")
    return session.user, session.device


def encode_event(method: str, params: dict[str, Any], cursor: int) -> bytes:
    params["cursor"] = cursor
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})


class LoginFailures(Protocol):
    """Failed password logins by (name, address) and by address: the throttles."""

    async def retry_after(self, pair: str, address: str) -> float: ...

    async def failed(self, pair: str, address: str) -> None: ...

    async def succeeded(self, pair: str) -> None: ...


class CountedHere:
    """``LoginFailures`` counted by this process."""

    def __init__(self, by_pair: LoginThrottle, by_address: LoginThrottle) -> None:
        self.by_pair = by_pair
        self.by_address = by_address

    async def retry_after(self, pair: str, address: str) -> float:
        now = time.monotonic()
        return max(self.by_pair.retry_after(pair, now), self.by_address.retry_after(address, now))

    async def failed(self, pair: str, address: str) -> None:
        self.by_pair.failed(pair, time.monotonic())
        self.by_address.failed(address, time.monotonic())

    async def succeeded(self, pair: str) -> None:
        self.by_pair.succeeded(pair)


class Pause:
    """Requests run together; ``paused`` waits for the running ones to finish, holds
    new ones meanwhile, and lets them go after. A compaction reads the state in
    slices, the event loop free between them, while nothing may change it."""

    def __init__(self) -> None:
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.open = asyncio.Event()
        self.open.set()

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        while not self.open.is_set():
            await self.open.wait()
        self.running += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.running -= 1
            if not self.running:
                self.idle.set()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        self.open.clear()
        try:
            await self.idle.wait()
            yield
        finally:
            self.open.set()


class Service:
    def __init__(
        self, config: Config, state: State, log: EventStore, hub: Hub, clock: Clock = system_clock
    ) -> None:
        self.config = config
        self.state = state
        self.log = log
        self.hub = hub
        self.clock = clock
        self.throttle = LoginThrottle(config.login_attempts, config.login_backoff)
        self.address_throttle = LoginThrottle(config.address_login_attempts, config.login_backoff)
        self.registrations = RegistrationLimit(config.register_limit)
        # Where failed logins are counted: here, or (a cluster's follower) on the writer.
        self.counted_here = CountedHere(self.throttle, self.address_throttle)
        self.login_failures: LoginFailures = self.counted_here
        self.kdf = KdfPool(config.kdf_threads, config.kdf_queue)
        self.registry = Registry(self, title="messenger", version=__version__)
        # One hash to verify against when the user does not exist, so that a
        # wrong name costs as much time as a wrong password.
        self._decoy_hash = hash_password(secrets.token_urlsafe(16), config.scrypt_n)
        self._timer: asyncio.TimerHandle | None = None
        self._compacted_at = clock()
        self._housekeeping: asyncio.Task[None] | None = None
        self.housekeeping_hooks: list[Callable[[], None]] = []
        # Cluster mode (server/cluster.py): a follower neither decides nor runs the
        # jobs that must run once; what it records goes to the writer instead.
        self.writing = True
        self.pause = Pause()
        # A cluster's devices of a user connected to other nodes (server/presence.py).
        self.online_elsewhere: Callable[[UserKey], set[str]] = lambda key: set()
        self.forward: Callable[[list[Event]], asyncio.Future[None]] | None = None
        self.executor = Executor(self)  # every command is decided through it

    # -- the one way state changes -----------------------------------------------

    def record(self, events: list[Event]) -> asyncio.Future[None]:
        """Apply ``events`` now, and tell everyone concerned once they are durable.

        The state changes before this returns, so the next command, even one that
        runs before these events reach the disk, decides against it; what is told
        is told only after the disk has it, in cursor order (the log's futures
        complete in order, and so do their callbacks).
        """
        if self.forward is not None:
            return self.forward(events)
        told: list[tuple[int, views.Audience, bytes, int | None, str | None]] = []
        records = []
        for event in events:
            cursor = self.state.apply(event)
            self._react(event)
            record = to_record(event)
            record["c"] = cursor
            records.append(record)
            for audience, method, params in views.notifications(self.state, event):
                frame = encode_event(method, params, cursor)
                until = views.told_until(self.state, event)
                told.append((cursor, audience, frame, until, views.told_about(event)))
        durable = self.log.append(records)
        if any(isinstance(event, MessageScheduled) for event in events):
            self.arm_schedule()

        last = self.state.cursor

        def publish(_: asyncio.Future[None]) -> None:
            if not durable.cancelled() and durable.exception() is None:
                for cursor, audience, frame, expires_at, about in told:
                    self.hub.publish(cursor, audience, frame, expires_at, about)
                self.hub.advance(last)

        durable.add_done_callback(publish)
        return durable

    def told(self, event: Event) -> None:
        """Fold an event that is durable already (a follower's, from the shared log)
        and tell everyone concerned at once."""
        cursor = self.state.apply(event)
        self._react(event)
        for audience, method, params in views.notifications(self.state, event):
            frame = encode_event(method, params, cursor)
            until = views.told_until(self.state, event)
            self.hub.publish(cursor, audience, frame, until, views.told_about(event))
        self.hub.advance(cursor)

    def _react(self, event: Event) -> None:
        """What an event does to this node's connections, whichever node decided it:
        a revoked device is disconnected wherever it is connected; a deleted
        message's events are not resumed any more."""
        if isinstance(event, MessageDeleted):
            self.hub.recent.retract(event.message)
        if isinstance(event, DeviceRevoked):
            for session in list(self.hub.sessions_of(user_key(event.user))):
                if session.device == event.device:
                    self.hub.detach(session)
                    session.peer.close(1008, "device logged out")
                    session.user = session.key = session.device = None

    def new_state(self) -> State:
        state = State(self.config.history_size, self.config.rate_period * 1000, self.config.quotas)
        state.search.defer()  # to re-read a log: the index is built afterwards
        return state

    async def commit(self, events: list[Event]) -> None:
        """``record``, and wait until it is durable (and told)."""
        # ``publish`` was added to the future's callbacks before the shield added
        # its own, so the events are out before the reply is; and a request given
        # up (its connection gone) does not cancel what the log was given.
        await asyncio.shield(self.record(events))

    # -- time: scheduled messages, expiry, compaction --------------------------------

    def start(self) -> None:
        """Start the timers; posts at once what fell due while the server was down."""
        self.arm_schedule()
        self._housekeeping = asyncio.get_running_loop().create_task(
            self._keep_house(), name="messenger-housekeeping"
        )

    def disarm_schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        self.kdf.close()
        self.disarm_schedule()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping

    def arm_schedule(self) -> None:
        """One timer for all pending messages: it wakes for the earliest."""
        self.disarm_schedule()
        due = self.state.next_due() if self.writing else None
        if due is None:
            return
        delay = max(0.0, (due - self.clock()) / 1000)
        # Capped, so that an injected clock that jumps ahead is noticed soon.
        delay = min(delay, self.config.timer_resolution)
        self._timer = asyncio.get_running_loop().call_later(delay, self._post_due)

    def _post_due(self) -> None:
        self._timer = None
        if not self.pause.open.is_set():  # a compaction is reading the state
            self._timer = asyncio.get_running_loop().call_later(0.05, self._post_due)
            return
        try:
            durable = self.executor.run_job(self._due)
            if durable is not None:
                durable.add_done_callback(_log_failure)
        except Exception:  # a task boundary: log it, and keep the timer going
            logger.exception("posting scheduled messages failed")
        finally:
            self.arm_schedule()

    def _due(self, state: State, now: int) -> list[Event]:
        events = self.executor.post_due(state, now)
        if events:
            posted = sum(isinstance(e, MessagePosted) for e in events)
            logger.info(
                "posting %d scheduled messages (%d cancelled)", posted, len(events) - posted
            )
        return events

    async def _keep_house(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                now = self.clock()
                self.state.expire(now)
                for hook in self.housekeeping_hooks:
                    hook()
                if not self.writing:  # the jobs below run once, on the writer
                    continue
                if self.log.wants_compaction(self.config.compact_bytes):
                    await self.compact()
                elif (
                    self.state.expired_since_snapshot
                    and now - self._compacted_at >= self.config.expired_compaction_delay * 1000
                ):
                    # Expired messages must leave the disk too, also on a quiet server.
                    await self.compact()
            except Exception:
                logger.exception("housekeeping failed")

    async def compact(self) -> None:
        """Save a snapshot of the live state (expired messages dropped) in the store's
        snapshot store, in place of the records it covers.

        The snapshot is read while requests are held (``Pause``), in slices with the
        event loop free between them: pushes, pings and HTTP go on (a snapshot of
        a million live messages held the loop for 1.7 s in one piece)."""
        async with self.pause.paused():
            began = time.perf_counter()
            state, cursor = self.state, self.state.cursor
            state.expire(self.clock())
            pieces: list[bytes] = []
            for piece in dump(state):  # a slice of a few thousand objects
                pieces.append(piece)
                await asyncio.sleep(0)
            if self.state is not state or state.cursor != cursor or not self.writing:
                # A cluster node re-read the log (or stopped writing) meanwhile: what
                # was read is not the state at ``cursor`` any more. The next one will do.
                logger.info("compaction abandoned: the state changed while it was read")
                return
            state.compacted()
            self._compacted_at = self.clock()
            data = b"".join(pieces)
            written = self.log.compact(Snapshot(data, cursor))
            held = time.perf_counter() - began
        await written
        logger.info(
            "compacted the log to a snapshot of %d bytes (requests held %.2f s)", len(data), held
        )

    # -- session -----------------------------------------------------------------

    @rpc_method("register", anonymous=True)
    async def register(
        self, session: Session, *, user: UserParam, password: PasswordParam
    ) -> dict[str, Any]:
        """Create an account; it joins the general chat."""
        rules.check_name_free(self.state, user)  # before the KDF's cost; again after it
        self.registrations.take(address_of(session.remote), self.clock())
        password_hash = await self.kdf.run(hash_password, password, self.config.scrypt_n)
        event = rules.register(self.state, user, password_hash, self.clock())
        await self.commit([event])
        logger.info("registered user %s", event.user)
        return {"user": event.user}

    @rpc_method("login", anonymous=True, exclusive=(("password", "token"),))
    async def login(
        self,
        session: Session,
        *,
        user: UserParam,
        password: PasswordParam | None = None,
        token: Annotated[str, Length(1, 128), Doc("a device token")] | None = None,
        since: Annotated[int, Range(0, None), Doc("the last cursor this device saw")] | None = None,
        device_name: Annotated[str, Length(1, DEVICE_NAME_MAX), Doc("a name for a new device")]
        | None = None,
    ) -> dict[str, Any]:
        """Log in with a password (a new device) or a device token (that device)."""
        if token is not None:
            device = self.state.devices_by_token.get(token_hash(token))
            if device is None or user_key(device.user) != user_key(user):
                raise Unauthenticated("Unknown or revoked token for this user")
            account = self.state.users[user_key(device.user)]
            device_id = device.id
        else:
            assert password is not None
            account, device_id, token = await self._password_login(
                session, user, password, device_name
            )
        # From here to the reply nothing is awaited: no live event can slip in
        # between the events resumed and the ones that follow.
        self.hub.detach(session)
        session.user, session.key, session.device = account.name, user_key(account.name), device_id
        self.hub.attach(session)
        result: dict[str, Any] = {
            "user": account.name,
            "device": device_id,
            "token": token,
            "cursor": self.hub.published,
            "limits": self.limits(),
        }
        if since is not None:
            result["resumed"] = self.hub.resume(session, since)
        logger.info(
            "user %s logged in on device %s from %s", account.name, device_id, session.remote
        )
        return result

    async def _password_login(
        self, session: Session, name: str, password: str, device_name: str | None
    ) -> tuple[User, DeviceId, str]:
        key = user_key(name)
        address = address_of(session.remote)
        pair = f"{key} {address}"  # no name has a space
        retry_after = await self.login_failures.retry_after(pair, address)
        if retry_after > 0:
            raise RateLimited("Too many failed logins; try again later", retry_after)
        account = self.state.users.get(key)
        stored = self._decoy_hash if account is None else account.password_hash
        with self.throttle.checking(pair), self.address_throttle.checking(address):
            ok = await self.kdf.run(verify_password, password, stored)
        account = self.state.users.get(key)
        if account is None or not ok:
            await self.login_failures.failed(pair, address)
            logger.info("failed login for %r from %s", name, session.remote)
            raise Unauthenticated("Wrong user name or password")
        await self.login_failures.succeeded(pair)
        device_id = DeviceId(secrets.token_hex(4))
        while device_id in account.devices:
            device_id = DeviceId(secrets.token_hex(4))
        token, stored_hash = new_token()
        now = self.clock()
        events: list[Event] = [
            *rules.make_room_for_device(
                account, self.connected_devices(account), self.config.max_devices, now
            ),
            rules.authorize_device(account, device_id, device_name or device_id, stored_hash, now),
        ]
        await self.commit(events)
        return account, device_id, token

    def connected_devices(self, account: User) -> set[str]:
        """The user's devices connected to this node or, in a cluster, another."""
        key = user_key(account.name)
        return {*self.hub.online_devices(key), *self.online_elsewhere(key)}

    @rpc_method("logout", ordered=True)
    async def logout(self, session: Session) -> dict[str, Any]:
        """Revoke this device's token; every connection of this device is logged out."""
        account = self.account(session)
        device = self.device(session)
        # This connection stays open for its reply; the device's others are closed
        # when the revocation is folded (``_react``), on every node, before anything
        # else they sent is decided as that device.
        self.hub.detach(session)
        session.user = session.key = session.device = None
        await asyncio.shield(self.record([rules.revoke_device(device, self.clock())]))
        logger.info("user %s logged out device %s", account.name, device.id)
        return {}

    @rpc_method("rpc.discover", anonymous=True)
    async def discover(self, session: Session) -> dict[str, Any]:
        """The OpenRPC document of every method."""
        return self.registry.openrpc()

    # -- reading and writing -----------------------------------------------------

    @rpc_method("status")
    async def status(
        self, session: Session, *, offset: OffsetParam = 0, limit: LimitParam = PAGE_MAX
    ) -> dict[str, Any]:
        """Who you are, your devices and your chats with their unread counts (a page of
        them: ``has_more`` says whether more chats follow)."""
        account = self.account(session)
        key = user_key(account.name)
        online = {str(device) for device in self.hub.online_devices(key)}
        online |= self.online_elsewhere(key)
        now = self.clock()
        lapsed = self.state.lapsed(now)  # gone, if not reclaimed yet: a read changes nothing
        devices = [
            {"device": d.id, "name": d.name, "online": d.id in online}
            for d in account.devices.values()
        ]
        chats, more = page(
            list(account.chats),
            offset,
            limit,
            lambda chat_id: views.chat_view(
                self.state, self.state.chats[chat_id], key, lapsed.get(chat_id, ())
            ),
            REPLY_BUDGET - len(orjson.dumps(devices)),
        )
        return {
            "user": account.name,
            "device": session.device,
            "devices": devices,
            "chats": chats,
            "banned_until": account.banned_until if account.banned_until > now else None,
            "has_more": more,
            "server": {"version": __version__},
        }

    @rpc_method("send", exclusive=(("chat", "user"),))
    async def send(
        self,
        session: Session,
        *,
        text: Annotated[str, Length(0, TEXT_MAX), Doc("the message; empty only with a file")],
        chat: ChatParam | None = None,
        user: UserParam | None = None,
        file: Annotated[str, Length(1, 64), Doc("a file id from upload.finish")] | None = None,
        send_at: Annotated[int, Range(0, None), Doc("post later, at this time (ms)")] | None = None,
        client_id: Annotated[str, Length(1, 64), Doc("makes a repeat harmless")] | None = None,
    ) -> dict[str, Any]:
        """Post a message to a chat, or to the 1-to-1 chat with a user; now or later."""
        return await self.executor.run(
            Send(*actor(session), text, chat, user, file, send_at, client_id)
        )

    @rpc_method("history", exclusive=(("chat", "user"),))
    async def history(
        self,
        session: Session,
        *,
        chat: ChatParam | None = None,
        user: UserParam | None = None,
        limit: Annotated[int, Range(1, HISTORY_MAX), Doc("how many messages")] | None = None,
        before: SeqParam | None = None,
        after: SeqParam | None = None,
    ) -> dict[str, Any]:
        """Messages of a chat by seq: the newest, or those before or after a seq."""
        account = self.account(session)
        target = self._readable_chat(account, chat, user)
        if target is None:  # a user you have not written to yet: an empty chat
            return {"messages": [], "has_more": False}
        now = self.clock()
        limit = limit or self.state.history_size
        messages = target.messages
        first = target.first_seq
        end = len(messages) if before is None else max(0, min(len(messages), before - first))
        if after is None:
            chosen, more = _pick(self.state, now, messages, range(end - 1, -1, -1), limit)
            chosen.reverse()
        else:
            start = max(0, after + 1 - first)
            chosen, more = _pick(self.state, now, messages, range(start, end), limit)
        return {"messages": chosen, "has_more": more}

    @rpc_method("read")
    async def read(self, session: Session, *, chat: ChatParam, seq: SeqParam) -> dict[str, Any]:
        """Move your read marker forward to seq; all your devices hear of it."""
        return await self.executor.run(MoveReadMarker(*actor(session), chat, seq))

    @rpc_method("unread")
    async def unread(self, session: Session) -> dict[str, Any]:
        """Every message after your read marker, per chat (chats with none are left out)."""
        account = self.account(session)
        key = user_key(account.name)
        now = self.clock()
        budget = REPLY_BUDGET
        chats = []
        for chat_id in account.chats:
            chat = self.state.chats[chat_id]
            read_seq = chat.read_markers[key]
            start = max(0, read_seq + 1 - chat.first_seq)
            indexes = range(start, len(chat.messages))
            chosen, more = _pick(
                self.state, now, chat.messages, indexes, UNREAD_PER_CHAT, budget=budget
            )
            if chosen or more:  # a chat that did not fit is there, with has_more
                budget -= sum(_size(m) for m in chosen)
                chats.append(
                    {"chat": chat.id, "read_seq": read_seq, "messages": chosen, "has_more": more}
                )
        return {"chats": chats}

    # -- helpers -----------------------------------------------------------------

    def limits(self) -> dict[str, Any]:
        c = self.config
        return {
            "history_size": c.history_size,
            "message_ttl": c.message_ttl,
            "rate_limit": c.rate_limit,
            "rate_period": c.rate_period,
            "report_threshold": c.report_threshold,
            "ban_duration": c.ban_duration,
            "max_file_size": c.max_file_size,
            "frame_limit": c.frame_limit,
            "text_max": TEXT_MAX,
            "flood_rate": c.flood_rate,
            "flood_burst": c.flood_burst,
            "max_live_bytes": c.max_live_bytes,
        }

    def account(self, session: Session) -> User:
        """The session's user; -32001 once its device was logged out (by a request of
        another connection that went first)."""
        account = None if session.key is None else self.state.users.get(session.key)
        if account is None or session.device not in account.devices:
            raise Unauthenticated("This device was logged out; log in again")
        return account

    def device(self, session: Session) -> Device:
        device_id = session.device
        assert device_id is not None  # account() has checked it is one of the user's
        return self.account(session).devices[device_id]

    def _readable_chat(self, account: User, chat: str | None, user: str | None) -> Chat | None:
        if chat is not None:
            return rules.find_chat(self.state, account, chat)
        assert user is not None
        peer = self.state.user(user)
        if peer is None:
            raise NotFound(f"No user {user!r}")
        if peer is account:
            raise InvalidParams("Expected another user for a direct chat, but got yourself")
        return self.state.direct_chat_between(account.name, peer.name)

    async def off_loop(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def _size(message: dict[str, Any]) -> int:
    # A bound, not an estimate: JSON escapes a character in at most 6 bytes.
    return 6 * len(message["text"]) + 256


def within_budget(
    items: list[dict[str, Any]], newest_last: bool = True, budget: int = REPLY_BUDGET
) -> tuple[list[dict[str, Any]], bool]:
    """As many of ``items`` (things with a ``text``) as fit ``budget`` bytes: the
    newest, at the end, or the first ones; and whether any were left out."""
    order = reversed(items) if newest_last else iter(items)
    kept = 0
    for item in order:
        budget -= _size(item)
        if budget < 0:
            break
        kept += 1
    if kept == len(items):
        return items, False
    return (items[len(items) - kept :] if newest_last else items[:kept]), True


def _pick(
    state: State,
    now: int,
    messages: list[Message | None],
    indexes: range,
    limit: int,
    *,
    budget: int = REPLY_BUDGET,
) -> tuple[list[dict[str, Any]], bool]:
    """The views of the messages at ``indexes`` live at ``now``, in that order, until
    ``limit`` of them or ``budget`` bytes; and whether a live one was left out."""
    chosen: list[dict[str, Any]] = []
    for index in indexes:
        message = messages[index]
        if message is None or expired(message, now):
            continue
        if len(chosen) == limit:
            return chosen, True
        view = views.message_view(state, message)
        budget -= _size(view)
        if budget < 0:
            return chosen, True
        chosen.append(view)
    return chosen, False
