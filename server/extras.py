"""Comments, scheduled messages and reports: the extras that live in existing chats."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from server.domain import rules, views
from server.domain.commands import AddComment, CancelScheduled, Report
from server.domain.model import CommentId
from server.domain.state import State
from server.errors import NotFound
from server.hub import Session
from server.rpc import Doc, Length, Range, rpc_method
from server.service import Service, UserParam, actor, within_budget
from wire import HISTORY_MAX, TEXT_MAX

logger = logging.getLogger("messenger.server")

MessageParam = Annotated[str, Length(1, 64), Doc("a message id")]


class ExtraMethods:
    def __init__(self, service: Service) -> None:
        self.service = service

    @property
    def state(self) -> State:
        return self.service.state  # replaced when a cluster node re-reads the log

    @rpc_method("comment")
    async def comment(
        self,
        session: Session,
        *,
        message: MessageParam,
        text: Annotated[str, Length(1, TEXT_MAX), Doc("the comment")],
    ) -> dict[str, Any]:
        """Comment on a message of a chat you are in (not on a comment)."""
        return await self.service.executor.run(AddComment(*actor(session), message, text))

    @rpc_method("comments")
    async def comments(
        self,
        session: Session,
        *,
        message: MessageParam,
        limit: Annotated[int, Range(1, HISTORY_MAX), Doc("how many comments")] | None = None,
        before: Annotated[str, Length(1, 64), Doc("a comment id: only older ones")] | None = None,
    ) -> dict[str, Any]:
        """A message's comments, oldest first: the newest ``limit`` (before a comment)."""
        account = self.service.account(session)
        found = rules.find_message(self.state, account, message, self.service.clock())
        end = len(found.comments)
        if before is not None:
            anchor = self.state.comments.get(CommentId(before))
            if anchor is None or anchor.message != found.id:
                raise NotFound(f"No comment {before!r} on message {message!r}")
            end = anchor.position
        start = max(0, end - (limit or self.state.history_size))
        chosen, cut = within_budget([views.comment_view(c) for c in found.comments[start:end]])
        return {"comments": chosen, "has_more": start > 0 or cut}

    @rpc_method("scheduled")
    async def scheduled(self, session: Session) -> dict[str, Any]:
        """Your pending scheduled messages, soonest first."""
        account = self.service.account(session)
        pending = sorted(
            (self.state.scheduled[i] for i in account.scheduled), key=lambda p: p.send_at
        )
        chosen, cut = within_budget(
            [views.scheduled_view(self.state, p) for p in pending], newest_last=False
        )
        return {"scheduled": chosen, "has_more": cut}

    @rpc_method("cancel")
    async def cancel(
        self, session: Session, *, id: Annotated[str, Length(1, 64), Doc("a scheduled id")]
    ) -> dict[str, Any]:
        """Cancel a pending scheduled message; -32003 once it is sent."""
        return await self.service.executor.run(CancelScheduled(*actor(session), id))

    @rpc_method("report")
    async def report(
        self,
        session: Session,
        *,
        user: UserParam,
        reason: Annotated[str, Length(0, 1024), Doc("why")] | None = None,
    ) -> dict[str, Any]:
        """Report a user; at the threshold of distinct reporters they are banned."""
        return await self.service.executor.run(Report(*actor(session), user, reason))
