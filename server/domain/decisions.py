"""The decisions: ``decide(state, command, now, ids, policy) -> Decision``, one pure
function per command (websockets' sans-I/O protocol: no socket, no clock, no await).

A decision reads the state and never changes it; it raises a ``MessengerError``
for a refused command, before any event. The same command decided twice against
the same state, at the same ``now`` and with the same ``ids``, gives the same
events: that is what lets a cluster's writer decide a command again after its
append was fenced off (server/executor.py). The rules it applies are in ``rules``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

from server.auth import token_hash
from server.domain import rules, views
from server.domain.commands import (
    AddComment,
    CancelScheduled,
    Command,
    CreateGroup,
    CreateLink,
    DecideRequest,
    Decision,
    Delete,
    Edit,
    Ids,
    Invite,
    Join,
    Leave,
    MoveReadMarker,
    Report,
    Send,
    answer,
)
from server.domain.events import Event
from server.domain.model import (
    Chat,
    ChatId,
    Device,
    DeviceId,
    MessageId,
    ScheduledId,
    User,
    user_key,
)
from server.domain.state import State
from server.errors import InvalidParams, NotFound, Unauthenticated
from wire import TEXT_MAX


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """The server's settings a decision needs besides the state's quotas. No defaults:
    the executor gives each from the config, whose defaults are the server's."""

    message_ttl_ms: int  # 0: messages never expire
    rate_limit: int  # sends to the general chat per period
    report_threshold: int
    ban_ms: int


def decide(state: State, command: Command, now: int, ids: Ids, policy: Policy) -> Decision:
    """What ``command`` makes happen at ``now``: its events and its reply."""
    decision: Callable[[State, Any, int, Ids, Policy], Decision] = _DECISIONS[type(command)]
    return decision(state, command, now, ids, policy)


def acting(state: State, command: Command) -> tuple[User, Device]:
    """The command's user and device; -32001 once the device was logged out (by a
    request of another connection that went first)."""
    account = state.users.get(user_key(command.user))
    device = None if account is None else account.devices.get(command.device)
    if account is None or device is None:
        raise Unauthenticated("This device was logged out; log in again")
    return account, device


def first_result(state: State, device: DeviceId, client_id: str) -> dict[str, Any] | None:
    """What the first ``send`` (or ``edit``) with this client_id answered, if it was made."""
    first = state.client_ids.get(device, {}).get(client_id)
    if first is None:
        return None
    message = state.messages.get(MessageId(first))
    if message is not None:
        return {"message": views.message_view(state, message)}
    pending = state.scheduled.get(ScheduledId(first))
    if pending is not None:
        return {"scheduled": views.scheduled_view(state, pending)}
    raise NotFound(f"The message sent with client_id {client_id!r} expired or was cancelled")


def _repeat(state: State, device: Device, client_id: str | None) -> Decision | None:
    repeat = None if client_id is None else first_result(state, device.id, client_id)
    return None if repeat is None else Decision((), answer(repeat))


def send(state: State, command: Send, now: int, ids: Ids, policy: Policy) -> Decision:
    account, device = acting(state, command)
    if not command.text and command.file is None:
        raise InvalidParams(f"Expected text of 1 to {TEXT_MAX} characters, but got none")
    repeat = _repeat(state, device, command.client_id)
    if repeat is not None:
        return repeat
    events: list[Event] = []
    target: Chat | None
    if command.chat is not None:
        target = rules.find_chat(state, account, command.chat)
        chat_id = ChatId(command.chat)
    else:
        assert command.to is not None
        chat_id = ids.chat()
        target, events = rules.direct_chat(state, account, command.to, chat_id, now)
        if target is not None:
            chat_id = target.id
    rules.check_not_banned(account, now)
    file_id = (
        None if command.file is None else rules.find_file(state, account, command.file, now).id
    )
    rules.check_rate(state, account, chat_id, now, policy.rate_limit)
    if command.send_at is not None and command.send_at > now:
        scheduled = rules.schedule_message(
            state,
            account,
            chat_id,
            text=command.text,
            file=file_id,
            send_at=command.send_at,
            now=now,
            scheduled_id=ids.scheduled(),
            device=device.id,
            client_id=command.client_id,
        )
        # The view is taken at once: the message may fall due, and go, while on disk.
        return Decision(
            (*events, scheduled),
            lambda after: {
                "scheduled": views.scheduled_view(after, after.scheduled[scheduled.scheduled])
            },
        )
    posted = rules.post_message(
        state,
        account,
        target,
        chat_id,
        text=command.text,
        now=now,
        message_id=ids.message(),
        ttl_ms=policy.message_ttl_ms,
        device=device,
        client_id=command.client_id,
        file=file_id,
    )
    return Decision(
        (*events, posted),
        lambda after: {"message": views.message_view(after, after.messages[posted.message])},
    )


def move_read_marker(
    state: State, command: MoveReadMarker, now: int, ids: Ids, policy: Policy
) -> Decision:
    account, _ = acting(state, command)
    target = rules.find_chat(state, account, command.chat)
    event = rules.move_read_marker(state, account, target, command.seq, now)
    if event is None:
        read_seq = target.read_markers[user_key(account.name)]
        return Decision((), answer({"chat": target.id, "read_seq": read_seq}))
    return Decision((event,), answer({"chat": target.id, "read_seq": event.seq}))


def edit(state: State, command: Edit, now: int, ids: Ids, policy: Policy) -> Decision:
    account, device = acting(state, command)
    repeat = _repeat(state, device, command.client_id)
    if repeat is not None:
        return repeat
    event = rules.edit_message(
        state,
        account,
        command.message,
        text=command.text,
        now=now,
        device=device.id,
        client_id=command.client_id,
    )

    def reply(after: State) -> dict[str, Any]:
        edited = after.messages.get(event.message)
        if edited is None:
            raise NotFound(f"Message {command.message!r} expired or was deleted")
        return {"message": views.message_view(after, edited)}

    return Decision((event,), reply)


def delete(state: State, command: Delete, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    return Decision((rules.delete_message(state, account, command.message, now),), answer({}))


def add_comment(state: State, command: AddComment, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    event = rules.add_comment(
        state, account, command.message, text=command.text, now=now, comment_id=ids.comment()
    )

    def reply(after: State) -> dict[str, Any]:
        comment = after.comments.get(event.comment)
        if comment is None:
            raise NotFound(f"Message {command.message!r} expired")
        return {"comment": views.comment_view(comment)}

    return Decision((event,), reply)


def cancel_scheduled(
    state: State, command: CancelScheduled, now: int, ids: Ids, policy: Policy
) -> Decision:
    account, _ = acting(state, command)
    event = rules.cancel_scheduled(state, account, command.scheduled, now)
    return Decision((event,), answer({"id": event.scheduled}))


def report(state: State, command: Report, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    events = rules.report(
        state,
        account,
        command.target,
        reason=command.reason,
        now=now,
        threshold=policy.report_threshold,
        ban_ms=policy.ban_ms,
    )
    return Decision(tuple(events), answer({"counted": bool(events)}))


def create_group(
    state: State, command: CreateGroup, now: int, ids: Ids, policy: Policy
) -> Decision:
    account, _ = acting(state, command)
    event = rules.create_group(state, account, command.title, ids.group(), now)
    key = user_key(account.name)
    return Decision(
        (event,), lambda after: {"chat": views.chat_view(after, after.chats[event.chat], key)}
    )


def invite(state: State, command: Invite, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    return Decision((rules.invite(state, account, command.chat, command.invitee, now),), answer({}))


def create_link(state: State, command: CreateLink, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    link = ids.link()
    event = rules.create_link(state, account, command.chat, token_hash(link), now)
    return Decision((event,), answer({"link": link}))


def join(state: State, command: Join, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    group, status, events = rules.join(state, account, token_hash(command.link), now)
    # The link's holder may know what they asked to join, nothing more.
    result = {"status": status, "chat": {"id": group.id, "title": group.title}}
    return Decision(tuple(events), answer(result))


def decide_request(
    state: State, command: DecideRequest, now: int, ids: Ids, policy: Policy
) -> Decision:
    account, _ = acting(state, command)
    event = rules.decide(
        state, account, command.chat, command.requester, approve=command.approve, now=now
    )
    return Decision((event,), answer({}))


def leave(state: State, command: Leave, now: int, ids: Ids, policy: Policy) -> Decision:
    account, _ = acting(state, command)
    return Decision((rules.leave(state, account, command.chat, now),), answer({}))


_DECISIONS: Final[dict[type[Command], Callable[[State, Any, int, Ids, Policy], Decision]]] = {
    Send: send,
    MoveReadMarker: move_read_marker,
    Edit: edit,
    Delete: delete,
    AddComment: add_comment,
    CancelScheduled: cancel_scheduled,
    Report: report,
    CreateGroup: create_group,
    Invite: invite,
    CreateLink: create_link,
    Join: join,
    DecideRequest: decide_request,
    Leave: leave,
}
