"""Messaging beyond the seed (protocol.md section 14): edit, delete, search and
presence. Mentions are decided where messages are posted and edited
(``rules.mentions_in``); their counts are part of every ``chat``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Final

from server.domain import rules, views
from server.domain.commands import Delete, Edit
from server.domain.events import UserSeen
from server.domain.model import ChatId, Message, UserKey, user_key
from server.domain.search import QUERY_WORDS_MAX, words
from server.domain.state import State, expired
from server.errors import Forbidden, InvalidParams, NotFound
from server.hub import Session
from server.presence import NatsPresence, Presence
from server.rpc import Doc, Length, Range, rpc_method
from server.service import ChatParam, Service, actor, encode_event, within_budget
from wire import HISTORY_MAX, TEXT_MAX, USER_NAME_PATTERN

logger = logging.getLogger("messenger.server")

MessageParam = Annotated[str, Length(1, 64), Doc("a message id")]
PRESENCE_MAX: Final = 100
INDEX_SLICE: Final = 2000  # messages indexed at a time: about 20 ms
INDEX_POLL: Final = 0.5  # seconds between looks for an index to build
SEARCH_DEFAULT: Final = 20


class MessagingMethods:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.presence: Presence = Presence(
            service.config.presence_grace, service.clock, self.presence_changed
        )
        self._persisted: dict[UserKey, int] = {}  # when each user's last_seen was recorded
        self._indexing: asyncio.Task[None] | None = None

    @property
    def state(self) -> State:
        return self.service.state  # replaced when a cluster node re-reads the log

    async def start(self) -> None:
        await self.presence.start()
        self._indexing = asyncio.get_running_loop().create_task(
            self._index(), name="messenger-search-index"
        )

    async def stop(self) -> None:
        if self._indexing is not None:
            self._indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexing
        await self.presence.stop()

    async def _index(self) -> None:
        """Build the search index a start (or a cluster node's re-read) deferred, in
        slices with the event loop free between them."""
        while True:
            try:
                await self.index_built()
            except Exception:  # a task boundary: log it, try again later
                logger.exception("building the search index failed")
            await asyncio.sleep(INDEX_POLL)

    async def index_built(self) -> None:
        # Not an Event to wait on: this loop is what builds, a slice per turn.
        while not self.state.search.build(INDEX_SLICE):  # noqa: ASYNC110
            await asyncio.sleep(0)

    def watch(self, presence: Presence) -> None:
        """Take presence from ``presence`` (the hub's arrivals and departures)."""
        self.presence = presence
        self.service.hub.arrived = presence.arrived
        self.service.hub.left = presence.left
        presence.left_here = self.left_here
        if isinstance(presence, NatsPresence):  # ``status`` shows devices on every node
            hub = self.service.hub
            presence.local_devices = lambda key: {str(d) for d in hub.online_devices(key)}
            hub.devices_changed = presence.devices_changed
            self.service.online_elsewhere = presence.devices_elsewhere

    # -- edit, delete --------------------------------------------------------------

    @rpc_method("edit")
    async def edit(
        self,
        session: Session,
        *,
        message: MessageParam,
        text: Annotated[str, Length(0, TEXT_MAX), Doc("the new text")],
        client_id: Annotated[str, Length(1, 64), Doc("makes a repeat harmless")] | None = None,
    ) -> dict[str, Any]:
        """Change the text of a live message of yours; everyone who sees it is told."""
        return await self.service.executor.run(Edit(*actor(session), message, text, client_id))

    @rpc_method("delete")
    async def delete(self, session: Session, *, message: MessageParam) -> dict[str, Any]:
        """Remove a message of yours (or of a group you own) and its comments for good."""
        return await self.service.executor.run(Delete(*actor(session), message))

    # -- search ------------------------------------------------------------------

    @rpc_method("search")
    async def search(
        self,
        session: Session,
        *,
        query: Annotated[str, Length(1, 256), Doc("words that must all be in the text")],
        chat: ChatParam | None = None,
        limit: Annotated[int, Range(1, HISTORY_MAX), Doc("how many messages")] | None = None,
        before: MessageParam | None = None,
    ) -> dict[str, Any]:
        """Live messages you can see containing every word of query, newest first."""
        account = self.service.account(session)
        await self.index_built()  # only for a few seconds after a start
        now = self.service.clock()
        mine = account.chats
        within = None
        if chat is not None:
            narrowed = rules.find_chat(self.state, account, chat)
            only, within = narrowed.id, narrowed.messages

            def visible(found: Message) -> bool:
                return found.chat == only and not expired(found, now)
        else:

            def visible(found: Message) -> bool:
                return found.chat in mine and not expired(found, now)

        order = None
        if before is not None:
            order = rules.find_message(self.state, account, before, now).order
        if len(words(query)) > QUERY_WORDS_MAX:
            raise InvalidParams(f"Expected at most {QUERY_WORDS_MAX} words in the query")
        limit = limit or SEARCH_DEFAULT
        chosen: list[dict[str, Any]] = []
        more = False
        for found in self.state.search.search(query, visible, order, within):
            if len(chosen) == limit:
                more = True
                break
            chosen.append(views.message_view(self.state, found))
        kept, cut = within_budget(chosen, newest_last=False)
        return {"messages": kept, "has_more": more or cut}

    # -- presence ------------------------------------------------------------------

    @rpc_method("presence")
    async def presence_of(
        self,
        session: Session,
        *,
        users: Annotated[list[Any], Length(1, PRESENCE_MAX), Doc("up to 100 user names")],
    ) -> dict[str, Any]:
        """Whether each user is online, and when they were last seen: users you share a
        direct chat or a group with (-32002 for others, -32003 for no such user)."""
        account = self.service.account(session)
        me = user_key(account.name)
        shared = self.contacts(me) | {me}
        answer = []
        for name in users:
            if not isinstance(name, str) or not USER_NAME_PATTERN.fullmatch(name):
                raise InvalidParams(f"Expected user names in 'users', but got {name!r}")
            user = self.state.user(name)
            if user is None:
                raise NotFound(f"No user {name!r}")
            key = user_key(user.name)
            if key not in shared:
                raise Forbidden(f"You share no direct chat or group with {user.name!r}")
            online = self.presence.online(key)
            answer.append(
                {
                    "user": user.name,
                    "online": online,
                    "last_seen": None if online else self.last_seen(key),
                }
            )
        return {"users": answer}

    def last_seen(self, key: UserKey) -> int | None:
        seen = self.presence.last_seen.get(key)
        return seen if seen is not None else self.state.users[key].last_seen

    def contacts(self, key: UserKey) -> set[UserKey]:
        """Who shares a direct chat or a group with ``key`` (not the general chat)."""
        user = self.state.users.get(key)
        found: set[UserKey] = set()
        if user is None:
            return found
        for chat_id in user.chats:
            chat = self.state.chats[ChatId(chat_id)]
            if chat.kind != "general":
                found.update(chat.read_markers)
        found.discard(key)
        return found

    def presence_changed(
        self, key: UserKey, online: bool, last_seen: int | None, here: bool
    ) -> None:
        """Tell the user's contacts connected to this node; make ``last_seen`` durable
        where the last device left (rate-limited per user)."""
        user = self.state.users.get(key)
        if user is None:
            return
        hub = self.service.hub
        params = {"user": user.name, "online": online, "last_seen": last_seen}
        # Not in the log: the cursor of the last event told (wire.UNLOGGED_EVENTS).
        frame = encode_event("presence", params, hub.published)
        targets = [s for contact in self.contacts(key) for s in hub.sessions_of(contact)]
        hub.deliver(targets, frame)

    def left_here(self, key: UserKey, at: int) -> None:
        """Make ``last_seen`` durable where a user's last device on a node went (each
        node whose last device of the user went records it: the fold keeps the
        latest), at most once per user per ``presence_persist_every``."""
        user = self.state.users.get(key)
        if user is None:
            return
        every = int(self.service.config.presence_persist_every * 1000)
        if at - self._persisted.get(key, -every) < every and not self.presence.stopping:
            return
        self._persisted[key] = at
        self._record_seen(UserSeen(user.name, at))

    def _record_seen(self, event: UserSeen) -> None:
        if not self.service.pause.open.is_set():  # a compaction is reading the state
            asyncio.get_running_loop().call_later(0.05, self._record_seen, event)
            return
        self.service.record([event]).add_done_callback(_logged)


def _logged(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.info("last_seen was not recorded: %s", future.exception())
