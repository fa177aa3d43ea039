"""The one executor of commands (websockets' asyncio layer around its sans-I/O core):
it takes ``now`` from the clock, lets the state reclaim what expired by then, asks
the pure decision (server/domain/decisions.py) for the events, records them
(``Service.record``: applied, appended, told once durable), waits until they are
durable, and answers with the reply the decision made of the state after them.

It runs under the ``Pause`` request guard that every handler runs under (the
dispatcher's ``admit``; a cluster writer's ``run_forwarded`` takes it itself).

Cluster mode (server/cluster.py): a follower does not decide; ``forward`` sends the
command, as data, to the writer. A writer whose append was fenced off (the store
says ``NotStored``: none of it was kept) waits until the node has re-read the log
(``recover``) and takes the decision again against that state, or forwards it if
the node is no longer the writer; a few times at most. A refusal, or a reply
without events (a client_id repeat), is given once the events it rests on are
stored: those may be the fenced ones. After a failure whose outcome is unknown it
must not decide again (the events may be stored): -32008, and the client repeats
with its ``client_id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from server.domain import rules
from server.domain.commands import RANDOM_IDS, Command, Ids
from server.domain.decisions import Policy, decide
from server.domain.events import Event, UserBanned
from server.domain.state import State
from server.errors import MessengerError, Unavailable
from server.store import NotStored

if TYPE_CHECKING:
    from server.service import Service

logger = logging.getLogger("messenger.server")

# Decisions taken again after fences in a row: one more writer change than a
# failover makes (a fence, then the next writer's), then -32008.
REDECIDE_MAX: Final = 3

Forward = Callable[[Command], Awaitable[dict[str, Any]]]


class Executor:
    def __init__(self, service: Service, ids: Ids = RANDOM_IDS) -> None:
        self.service = service
        self.ids = ids
        config = service.config
        self.policy = Policy(
            message_ttl_ms=config.message_ttl * 1000,
            rate_limit=config.rate_limit,
            report_threshold=config.report_threshold,
            ban_ms=config.ban_duration * 1000,
        )
        # Cluster mode: set while this node follows (the writer decides).
        self.forward: Forward | None = None
        # Cluster mode: done once the node has re-read the log after a refused append.
        self.recover: Callable[[], Awaitable[None]] | None = None

    async def run(self, command: Command, deadline: float | None = None) -> dict[str, Any]:
        """Decide ``command`` (here, or on the writer) and answer it. ``deadline`` (the
        loop's clock): the asking node's patience; no decision is taken after it."""
        attempt = 0
        while True:
            if self.forward is not None:
                return await self.forward(command)
            _not_past(deadline)
            try:
                return await self._decide_here(command)
            except NotStored as refused:
                attempt += 1
                if self.recover is None or attempt > REDECIDE_MAX:
                    raise
                logger.info(
                    "%s was fenced off; deciding it again (%d)", type(command).__name__, attempt
                )
                # Not for ever: a node that cannot re-read the log (NATS out of reach)
                # answers -32008 as it did before (the re-read goes on, shielded).
                budget = self.service.config.forward_timeout
                if deadline is not None:
                    budget = min(budget, deadline - asyncio.get_running_loop().time())
                try:
                    await asyncio.wait_for(asyncio.shield(self.recover()), max(0.0, budget))
                except TimeoutError:
                    raise refused from None

    async def run_forwarded(self, command: Command, within: float | None = None) -> dict[str, Any]:
        """``run`` for a command another node sent, under the guard a handler runs in.
        ``within``: seconds the asking node waits for the answer. Once they have passed
        it has told its device -32008 ("may or may not have happened"), and a command
        with no ``client_id`` that it repeats would be decided twice: none is taken
        after them (a compaction holding requests, a long re-read after a fence)."""
        deadline = None if within is None else asyncio.get_running_loop().time() + within
        async with self.service.pause.request():
            return await self.run(command, deadline)

    def run_job(self, job: Callable[[State, int], list[Event]]) -> asyncio.Future[None] | None:
        """A decision of the server's own (the timer's due messages, housekeeping's
        unused files), taken as a command is: reclaim, decide at ``now``, record.
        None when it decides nothing; never taken again after a fence (the job runs
        again on whichever node writes next, against its state)."""
        service = self.service
        now = service.clock()
        service.state.expire(now)
        events = job(service.state, now)
        return service.record(events) if events else None

    def post_due(self, state: State, now: int) -> list[Event]:
        """The scheduled messages due by ``now``, posted or cancelled (``rules``)."""
        return rules.post_due(state, now, self.ids.message, self.policy.message_ttl_ms)

    async def _decide_here(self, command: Command) -> dict[str, Any]:
        service = self.service
        now = service.clock()
        state = service.state
        state.expire(now)  # the memory reclaim, a transition of its own: not the decision's
        try:
            decision = decide(state, command, now, self.ids, self.policy)
        except MessengerError:
            await self._settled()
            raise
        if not decision.events:
            reply = decision.reply(state)
            await self._settled()
            return reply
        durable = service.record(list(decision.events))
        refused: MessengerError | None = None
        try:  # the state the events made: a view shows it before anything else changes it
            reply = decision.reply(service.state)
        except MessengerError as error:
            refused = error
        # ``publish`` was added to the future's callbacks before the shield added its
        # own, so the events are out before the reply is; and a request given up (its
        # connection gone) does not cancel what the log was given.
        await asyncio.shield(durable)
        for event in decision.events:
            if isinstance(event, UserBanned):
                logger.info("user %s banned until %d", event.user, event.until)
        if refused is not None:
            raise refused
        return reply

    async def _settled(self) -> None:
        """Wait until what the state holds is stored: a refusal, or a reply without
        events (a client_id repeat), may rest on events still on their way, and if the
        store refuses them (``NotStored``) they never happened: the command is decided
        again (``run``), not answered from them."""
        await asyncio.shield(self.service.log.barrier())


def _not_past(deadline: float | None) -> None:
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        raise Unavailable("The node that asked has stopped waiting: not decided", 1.0)
