"""Private group chats: created by an owner, joined by invitation or by a link
whose requests the owner approves or declines."""

from __future__ import annotations

from typing import Annotated, Any

from server.domain import rules
from server.domain.commands import CreateGroup, CreateLink, DecideRequest, Invite, Join, Leave
from server.domain.limits import PAGE_MAX, page
from server.domain.state import State
from server.hub import Session
from server.rpc import Doc, Length, rpc_method
from server.service import (
    REPLY_BUDGET,
    ChatParam,
    LimitParam,
    OffsetParam,
    Service,
    UserParam,
    actor,
)


class GroupMethods:
    def __init__(self, service: Service) -> None:
        self.service = service

    @property
    def state(self) -> State:
        return self.service.state  # replaced when a cluster node re-reads the log

    @rpc_method("chat.create")
    async def create(
        self, session: Session, *, title: Annotated[str, Length(1, 100), Doc("the group's title")]
    ) -> dict[str, Any]:
        """Create a private group; you are its owner and first member."""
        return await self.service.executor.run(CreateGroup(*actor(session), title))

    @rpc_method("chat.invite")
    async def invite(self, session: Session, *, chat: ChatParam, user: UserParam) -> dict[str, Any]:
        """Owner only: the user joins at once."""
        return await self.service.executor.run(Invite(*actor(session), chat, user))

    @rpc_method("chat.link")
    async def link(self, session: Session, *, chat: ChatParam) -> dict[str, Any]:
        """Owner only: a fresh join link (128 random bits); the previous one stops working."""
        return await self.service.executor.run(CreateLink(*actor(session), chat))

    @rpc_method("chat.join")
    async def join(
        self, session: Session, *, link: Annotated[str, Length(1, 128), Doc("a join link")]
    ) -> dict[str, Any]:
        """Ask to join by link: pending until the owner decides."""
        return await self.service.executor.run(Join(*actor(session), link))

    @rpc_method("chat.requests")
    async def requests(
        self,
        session: Session,
        *,
        chat: ChatParam,
        offset: OffsetParam = 0,
        limit: LimitParam = PAGE_MAX,
    ) -> dict[str, Any]:
        """Owner only: pending join requests, oldest first (a page of them)."""
        group = rules.owned_group(self.state, self.service.account(session), chat)
        oldest_first = sorted(group.requests.items(), key=lambda item: item[1])
        requests, more = page(
            oldest_first,
            offset,
            limit,
            lambda request: {"user": self.state.users[request[0]].name, "ts": request[1]},
            REPLY_BUDGET,
        )
        return {"requests": requests, "has_more": more}

    @rpc_method("chat.approve")
    async def approve(
        self, session: Session, *, chat: ChatParam, user: UserParam
    ) -> dict[str, Any]:
        """Owner only: the user becomes a member."""
        return await self._decide(session, chat, user, approve=True)

    @rpc_method("chat.decline")
    async def decline(
        self, session: Session, *, chat: ChatParam, user: UserParam
    ) -> dict[str, Any]:
        """Owner only: the request is refused; the user is told."""
        return await self._decide(session, chat, user, approve=False)

    async def _decide(
        self, session: Session, chat: str, user: str, approve: bool
    ) -> dict[str, Any]:
        return await self.service.executor.run(DecideRequest(*actor(session), chat, user, approve))

    @rpc_method("chat.members")
    async def members(
        self,
        session: Session,
        *,
        chat: ChatParam,
        offset: OffsetParam = 0,
        limit: LimitParam = PAGE_MAX,
    ) -> dict[str, Any]:
        """Members only: the owner and the members, in the order they joined (a page)."""
        group = rules.find_chat(self.state, self.service.account(session), chat)
        members, more = page(
            list(group.read_markers),
            offset,
            limit,
            lambda key: self.state.users[key].name,
            REPLY_BUDGET,
        )
        return {"owner": group.owner, "members": members, "has_more": more}

    @rpc_method("chat.leave")
    async def leave(self, session: Session, *, chat: ChatParam) -> dict[str, Any]:
        """Leave a group (its owner cannot)."""
        return await self.service.executor.run(Leave(*actor(session), chat))
