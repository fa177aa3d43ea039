"""Private group chats: created by an owner, joined by invitation or by a link
whose requests the owner approves or declines."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from server.auth import token_hash
from server.domain import rules, views
from server.domain.model import ChatId, user_key
from server.domain.state import State
from server.hub import Session
from server.rpc import Doc, Length, rpc_method
from server.service import ChatParam, Service, UserParam


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
        account = self.service.account(session)
        chat_id = ChatId("g" + secrets.token_hex(8))
        await self.service.commit(
            [rules.create_group(account, title, chat_id, self.service.clock())]
        )
        return {
            "chat": views.chat_view(self.state, self.state.chats[chat_id], user_key(account.name))
        }

    @rpc_method("chat.invite")
    async def invite(self, session: Session, *, chat: ChatParam, user: UserParam) -> dict[str, Any]:
        """Owner only: the user joins at once."""
        account = self.service.account(session)
        event = rules.invite(self.state, account, chat, user, self.service.clock())
        await self.service.commit([event])
        return {}

    @rpc_method("chat.link")
    async def link(self, session: Session, *, chat: ChatParam) -> dict[str, Any]:
        """Owner only: a fresh join link (128 random bits); the previous one stops working."""
        account = self.service.account(session)
        link = secrets.token_urlsafe(16)
        event = rules.create_link(self.state, account, chat, token_hash(link), self.service.clock())
        await self.service.commit([event])
        return {"link": link}

    @rpc_method("chat.join")
    async def join(
        self, session: Session, *, link: Annotated[str, Length(1, 128), Doc("a join link")]
    ) -> dict[str, Any]:
        """Ask to join by link: pending until the owner decides."""
        account = self.service.account(session)
        group, status, events = rules.join(
            self.state, account, token_hash(link), self.service.clock()
        )
        await self.service.commit(events)
        # The link's holder may know what they asked to join, nothing more.
        return {"status": status, "chat": {"id": group.id, "title": group.title}}

    @rpc_method("chat.requests")
    async def requests(self, session: Session, *, chat: ChatParam) -> dict[str, Any]:
        """Owner only: pending join requests, oldest first."""
        group = rules.owned_group(self.state, self.service.account(session), chat)
        return {
            "requests": [
                {"user": self.state.users[key].name, "ts": at}
                for key, at in sorted(group.requests.items(), key=lambda item: item[1])
            ]
        }

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
        account = self.service.account(session)
        event = rules.decide(
            self.state, account, chat, user, approve=approve, now=self.service.clock()
        )
        await self.service.commit([event])
        return {}

    @rpc_method("chat.members")
    async def members(self, session: Session, *, chat: ChatParam) -> dict[str, Any]:
        """Members only: the owner and every member."""
        group = rules.find_chat(self.state, self.service.account(session), chat)
        return {
            "owner": group.owner,
            "members": [self.state.users[key].name for key in group.read_markers],
        }

    @rpc_method("chat.leave")
    async def leave(self, session: Session, *, chat: ChatParam) -> dict[str, Any]:
        """Leave a group (its owner cannot)."""
        account = self.service.account(session)
        await self.service.commit([rules.leave(self.state, account, chat, self.service.clock())])
        return {}
