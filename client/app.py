"""The client itself, whatever its face: a signed-in session, its commands and events.

Script mode (``cli``) feeds it lines from stdin and prints plain lines; the console
(``console``) feeds it what is typed and prints above the prompt. Both see the same
lines, through a ``Sink``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

from client import commands, render, transfer
from client.connection import (
    ConnectionAbandoned,
    ConnectionDropped,
    ConnectionResumed,
    EventReceived,
    Session,
    SessionEvent,
)
from client.errors import ClientError, ConnectionLost, RpcError, SignedOut, UsageError
from client.model import GENERAL, ChatId, Json, Model, Target
from wire import TEXT_MAX

log = logging.getLogger("messenger.client")


class Sink(Protocol):
    def show(self, line: render.Line) -> None:
        """A result or an event: what the user asked for, or what happened."""

    def notice(self, text: str) -> None:
        """News of the client itself: signed in, connection lost, reconnected."""

    def error(self, text: str) -> None:
        """One line saying what failed and, where it helps, what to do."""

    def progress(self, title: str, total: int) -> transfer.Progress:
        """A bar for a transfer of ``total`` bytes, or nothing where none is wanted."""

    def changed(self) -> None:
        """Unread counts, the open chat or the connection changed: redraw what shows them."""

    def alert(self) -> None:
        """A mention or a direct message came: ring, where ringing is wanted."""

    # What the face wants of the app: a script moves no read marker and shows no start
    # unless asked; the console shows one chat at a time (the others count unread).
    marks_read: bool
    shows_start: bool
    one_view: bool


class NoProgress:
    """Where there is nobody to watch a bar (a script)."""

    def advance(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


class App:
    def __init__(
        self,
        session: Session,
        sink: Sink,
        login: Json,
        *,
        forget_token: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        tz: datetime.tzinfo | None = None,
    ) -> None:
        self.session = session
        self.sink = sink
        self.model = Model(login["user"])
        self.device: str = login["device"]
        limits: Json = login.get("limits", {})
        self.history_size: int = limits.get("history_size", 20)
        self.text_max: int = limits.get("text_max", TEXT_MAX)
        self.quitting = False
        self.on_quit: Callable[[], None] = lambda: None
        self._forget_token = forget_token
        self._clock = clock
        self._tz = tz
        self._read_wanted: dict[ChatId, int] = {}
        self._marker: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._failure_reported = False
        self.connected = True
        self.banned_until: int | None = None

    @property
    def failure(self) -> ClientError | None:
        """Why the session gave up (unreachable, signed out), or None."""
        return self.session.failure

    def now(self) -> float:
        return self._clock()

    def error_text(self, error: RpcError) -> str:
        """The server's error as one line, with the ids it quotes named as labels."""
        return self.model.readable(render.error_text(error, self.now(), self._tz))

    def show(self, line: render.Line) -> None:
        self.sink.show(line)

    def show_lines(self, lines: Iterable[render.Line]) -> None:
        for line in lines:
            self.sink.show(line)

    def quit(self) -> None:
        self.quitting = True
        self.on_quit()

    # -- the session's life ---------------------------------------------------------

    async def start(self) -> None:
        """What one sees first: unread counts, the general chat's latest, then events."""
        status = await self.refresh_status()
        self.banned_until = status.get("banned_until")
        if self.sink.shows_start:
            self.show(render.unread_summary(self.model.chats.values()))
            await self.show_history(
                GENERAL, self.history_size, only_new=True, new_line=self.sink.one_view
            )
        self._follower = asyncio.create_task(self._follow_events(), name="messenger-events")

    def tell_ban(self) -> None:
        """Say so at sign-in when the user is banned: sends would fail without warning."""
        if self.banned_until is not None and self.banned_until > self.now() * 1000:
            self.show(render.banned_line(self.banned_until, self.now(), self._tz))

    async def execute(self, line: str) -> bool:
        """Run one command line; False (and one line on the error sink) when it failed."""
        try:
            _check_text(line)
            command, values = commands.parse(line)
            await command.run(self, values)
        except RpcError as exc:
            self.sink.error(self.error_text(exc))
            return False
        except ConnectionLost as exc:  # a call not safe to repeat (retry=False)
            self.sink.error(f"{exc}; the command may or may not have been done")
            return False
        except ClientError as exc:
            self._report(exc)
            return False
        except Exception as exc:  # a bug: one line, never a traceback on the terminal
            log.debug("The command %.80r failed", line, exc_info=True)
            self.sink.error(f"Internal error in the client: {type(exc).__name__}: {exc}")
            return False
        return True

    async def drain(self) -> None:
        """Let what is under way finish: the events received so far, the read markers."""
        if self._follower is not None and not self._follower.done():
            await self.session.events.join()
        await self._flush_reads()

    async def close(self) -> None:
        for task in (self._follower, self._marker):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])

    # -- what commands use ------------------------------------------------------------

    async def refresh_status(self) -> Json:
        await self._flush_reads()  # so that the counts include this client's reading
        status: Json = await self.session.call("status", {})
        self.model.load_status(status)
        return status

    async def send(
        self, target: Target, text: str, *, file: str | None = None, send_at: int | None = None
    ) -> None:
        self.check_length(text)
        # The client_id makes a send repeated after a reconnection store nothing twice.
        params = {**target.params(), "text": text, "client_id": uuid.uuid4().hex}
        if file is not None:
            params["file"] = file
        if send_at is not None:
            params["send_at"] = send_at
        result = await self.session.call("send", params)
        if "scheduled" in result:
            await self.show_scheduled(result["scheduled"])
            return
        # Sent at once: no send_at, or its time came while on the way.
        message: Json = result["message"]
        await self._message_arrived(message)
        if not self.in_view(message["chat"]):  # a /dm from another chat: say it went
            label = self.model.label(message["chat"])
            self.show(render.message_line(message, label, self.now(), self._tz))

    def check_length(self, text: str) -> None:
        """``UsageError`` for a text longer than the server takes."""
        if len(text) > self.text_max:
            raise UsageError(
                f"Expected at most {self.text_max} characters, but the text has {len(text)}"
            )

    async def show_scheduled(self, scheduled: Json) -> None:
        """A scheduled message: told once per device, whether by reply or by event."""
        if self.model.scheduled_seen(scheduled):
            label = await self.chat_label(scheduled["chat"])
            self.show(render.scheduled_line(scheduled, label, self.now(), self._tz))

    def show_cancelled(self, scheduled_id: str) -> None:
        if self.model.scheduled_cancelled(scheduled_id):
            self.show(render.cancelled_line(scheduled_id))

    def show_joined(self, chat: Json) -> None:
        """A group joined or created: the model learns it (for /open and completion)."""
        if self.model.chat_joined(chat):
            label = self.model.label(chat["id"])
            self.show(render.joined_line(label, chat.get("owner"), self.model.me))

    def show_left(self, chat: str) -> None:
        label = self.model.label(chat)
        was_open = self.model.current.chat == chat
        if self.model.chat_left(chat):
            now_in = self.model.current_label if was_open else None
            self.show(render.left_line(label, now_in))
            self.sink.changed()

    async def chat_label(self, chat: str) -> str:
        """What to call a chat, learning it first when it is new (a direct chat opened
        by a scheduled message, a group joined on another device)."""
        if not self.model.is_known(chat):
            await self.refresh_status()
        return self.model.label(chat)

    def progress(self, title: str, total: int) -> transfer.Progress:
        return self.sink.progress(title, total)

    @property
    def tz(self) -> datetime.tzinfo | None:
        """The time zone times are shown and read in; None: the system's."""
        return self._tz

    def show_edited(self, message: Json) -> None:
        """An edit (the reply, or the event on every device): the message as it is now."""
        self.model.message_edited(message)
        if self.in_view(message["chat"]):
            label = self.model.label(message["chat"])
            marked = self.model.wants_attention(message)
            self.show(render.message_line(message, label, self.now(), self._tz, marked))
        self.sink.changed()

    async def show_found(self, messages: list[Json]) -> None:
        """Search results, from every chat: each labelled with its chat."""
        if any(not self.model.is_known(message["chat"]) for message in messages):
            await self.refresh_status()
        for message in messages:
            label = self.model.label(message["chat"])
            marked = self.model.wants_attention(message)
            self.show(render.message_line(message, label, self.now(), self._tz, marked))

    def show_comment(self, comment: Json, *, only_new: bool) -> None:
        if self.model.comment_seen(comment) or not only_new:
            label = self.model.label(comment["chat"])
            seq = self.model.seq_of(comment["message"])
            ref = label if seq is None else render.message_ref(label, seq)
            self.show(render.comment_line(comment, ref, self.now(), self._tz))

    async def show_history(
        self, chat: ChatId, limit: int, *, only_new: bool = False, new_line: bool = False
    ) -> None:
        """The latest ``limit`` messages of ``chat``; with ``new_line``, a line where the
        unread ones begin, and a word when there are none at all."""
        result = await self.session.call("history", {"chat": chat, "limit": limit})
        messages: list[Json] = result["messages"]
        known = self.model.chats.get(chat)
        read_seq = known.read_seq if known is not None else 0
        if not messages:
            if not only_new:
                self.show(render.info(f"No messages in {self.model.label(chat)} yet."))
            return
        if new_line and messages[-1]["seq"] > read_seq:
            older = [message for message in messages if message["seq"] <= read_seq]
            await self._show_messages(older, only_new=only_new)
            self.show(render.new_messages_line())
            await self._show_messages(messages[len(older) :], only_new=only_new)
        else:
            await self._show_messages(messages, only_new=only_new)
        # Marked read only when nothing unread came before the page: the marker
        # covers every message up to it, shown or not.
        skipped = messages[0]["seq"] - read_seq - 1
        if skipped <= 0:
            self.want_read(chat, messages[-1]["seq"])
        elif messages[-1]["seq"] > read_seq:
            self.show(render.info(f"{skipped} earlier unread messages: /unread to see them"))

    async def show_unread(self) -> None:
        await self._flush_reads()
        result = await self.session.call("unread", {})
        entries = [entry for entry in result["chats"] if entry["messages"]]
        if not entries:
            self.show(render.info("No unread messages."))
        if any(not self.model.is_known(entry["chat"]) for entry in entries):
            await self.refresh_status()
        for entry in entries:
            messages: list[Json] = entry["messages"]
            more = " (and more; /open it for the rest)" if entry.get("has_more") else ""
            label = self.model.label(entry["chat"])
            self.show(render.info(f"{label}: {len(messages)} unread{more}"))
            await self._show_messages(messages, only_new=False)
            self.want_read(ChatId(entry["chat"]), messages[-1]["seq"])

    async def find_chat(self, name: str) -> Target:
        target = self.model.find_chat(name)
        if target is None or target.chat is None:
            await self.refresh_status()  # a chat may have come since the last status
            target = self.model.find_chat(name)
        if target is None:
            raise UsageError(f"No chat {name!r} among yours; /chats lists them")
        return target

    async def find_message(self, ref: str) -> str:
        """The id of the message ``ref`` names: ``#12``, ``general#12``, ``@bob#3`` or an id."""
        label, hash_sign, seq_text = ref.rpartition("#")
        if not hash_sign or not re.fullmatch(r"[0-9]+", seq_text):
            return ref  # a message id as the server wrote it
        chat = (await self.find_chat(label)).chat if label else self.model.current.chat
        if chat is None:
            raise UsageError(f"No messages in {label or self.model.current_label} yet")
        # More digits than the wire's 64-bit ints hold, or #0: no such message.
        if len(seq_text) > 18 or int(seq_text) < 1:
            raise UsageError(f"No message {self.model.label(chat)}#{seq_text}")
        seq = int(seq_text)
        found = self.model.message_at(chat, seq)
        if found is not None:
            return found
        result = await self.session.call("history", {"chat": chat, "after": seq - 1, "limit": 1})
        for message in result["messages"]:
            if message["seq"] == seq:
                self.model.message_seen(message)
                return str(message["id"])
        raise UsageError(
            f"No message {render.message_ref(self.model.label(chat), seq)} "
            "(expired, or not there yet)"
        )

    async def log_out(self) -> None:
        # SignedOut: the logout went through, then the connection dropped before the reply.
        with contextlib.suppress(SignedOut):
            await self.session.call("logout", {})
        self._forget_token()
        self.sink.notice("Signed out; this device's token is forgotten.")
        self.quit()

    def want_read(self, chat: ChatId, seq: int) -> None:
        """Move the read marker to ``seq``, soon; several moves go as one ``read``."""
        if not self.sink.marks_read:
            return
        # Moved here first, so that the server's echo (a `read` event) is no news.
        self.model.read_moved(chat, seq)
        self._read_wanted[chat] = max(seq, self._read_wanted.get(chat, 0))
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._move_read_markers(), name="messenger-read")

    # -- events ----------------------------------------------------------------------

    async def _follow_events(self) -> None:
        events = self.session.events
        while True:
            event = await events.get()
            try:
                await self._handle(event)
            except RpcError as exc:
                self.sink.error(self.error_text(exc))
            except ClientError as exc:
                self._report(exc)
            except Exception:  # a bug; keep following the events
                log.exception("Handling %s failed", event)
            finally:
                events.task_done()

    async def _handle(self, event: SessionEvent) -> None:
        match event:
            case EventReceived("message", params):
                await self._message_arrived(params["message"])
            case EventReceived("comment", params):
                comment = params["comment"]
                if self.in_view(comment["chat"]):
                    self.show_comment(comment, only_new=True)
                elif self.model.comment_wants_attention(comment, params.get("message_author")):
                    # Another chat's: shown here all the same, its line says where
                    # ("re general#12"), and it rings, as a mention does.
                    self.show_comment(comment, only_new=True)
                    self.sink.alert()
            case EventReceived("message.edited", params):
                self.show_edited(params["message"])
            case EventReceived("message.deleted", params):
                self.model.message_deleted(params["chat"], params["seq"], params["id"])
                if self.in_view(params["chat"]):
                    ref = render.message_ref(self.model.label(params["chat"]), params["seq"])
                    self.show(render.removed_line(ref))
                self.sink.changed()
            case EventReceived("presence", params):
                self.model.presence[params["user"].casefold()] = params
                self.sink.changed()
                direct = self.model.find_chat("@" + params["user"])
                if not self.sink.one_view or (
                    direct is not None and direct.chat == self.model.current.chat
                ):
                    line = render.presence_line(
                        params["user"], params["online"], params["last_seen"], self.now(), self._tz
                    )
                    self.show(line)
            case EventReceived("read", params):
                if self.model.read_moved(params["chat"], params["read_seq"]):
                    self.sink.changed()
                    if not self.sink.one_view:  # the console's status line shows it
                        self.show(render.read_line(self.model.chats[ChatId(params["chat"])]))
            case EventReceived("scheduled", params):
                await self.show_scheduled(params["scheduled"])
            case EventReceived("scheduled.cancelled", params):
                self.show_cancelled(params["id"])
            case EventReceived("chat.joined", params):
                self.show_joined(params["chat"])
            case EventReceived("chat.join_request", params):
                label = await self.chat_label(params["chat"])
                self.show(render.join_request_line(label, params["user"]))
            case EventReceived("chat.declined", params):
                # Not a member: the group is known by the title the server tells.
                self.show(render.declined_line(render.group_label(params.get("title"))))
            case EventReceived("chat.left", params):
                self.show_left(params["chat"])
            case EventReceived("chat.member_joined" | "chat.member_left" as method, params):
                label = await self.chat_label(params["chat"])
                joined = method == "chat.member_joined"
                self.show(render.member_line(label, params["user"], joined))
            case EventReceived("chat.request_declined", params):
                label = await self.chat_label(params["chat"])
                self.show(render.info(f"Declined {params['user']}'s request to join {label}."))
            case EventReceived("reported", params):
                self.show(render.info(f"Reported {params['user']}."))
            case EventReceived("banned", params):
                self.show(render.banned_line(params["until"], self.now(), self._tz))
            case EventReceived(method, params):
                self.show(render.event_line(method, params))
            case ConnectionDropped():
                self.connected = False
                self.sink.changed()
                self.sink.notice("Connection lost; reconnecting...")
            case ConnectionResumed(resumed=True):
                self.connected = True
                self.sink.changed()
                self.sink.notice("Reconnected; nothing was missed.")
            case ConnectionResumed(resumed=False):
                self.connected = True
                self.sink.changed()
                self.sink.notice(
                    "Reconnected, but the server could not replay what was missed; "
                    "here is what is unread."
                )
                await self.refresh_status()
                result = await self.session.call("unread", {})
                for entry in result["chats"]:
                    for message in entry["messages"]:
                        await self._message_arrived(message)
            case ConnectionAbandoned(error):
                self._report(error)
                self.quit()

    def in_view(self, chat: str) -> bool:
        """Whether what happens in ``chat`` is shown now (the console shows the open chat
        only; a script, every chat)."""
        return not self.sink.one_view or chat == self.model.current.chat

    async def _message_arrived(self, message: Json) -> None:
        """A message from the stream (an event, a send's result): shown once only, and
        in the console only in its chat's view; elsewhere it counts as unread."""
        chat = message["chat"]
        if not self.model.is_known(chat):
            await self.refresh_status()  # a chat new to us: learn its kind and name
        if not self.model.message_seen(message):
            return  # told before: a send's reply and its event are one message
        marked = self.model.wants_attention(message)
        if self.in_view(chat):
            label = self.model.label(chat)
            self.show(render.message_line(message, label, self.now(), self._tz, marked))
        if marked and not self.model.is_mine(message):
            self.sink.alert()
        seq = self.model.read_up_to(message)
        if seq is not None:
            self.want_read(ChatId(message["chat"]), seq)
        self.sink.changed()

    async def _show_messages(self, messages: list[Json], *, only_new: bool) -> None:
        if any(not self.model.is_known(message["chat"]) for message in messages):
            await self.refresh_status()  # a chat new to us: learn its kind and name
        for message in messages:
            if self.model.message_seen(message) or not only_new:
                label = self.model.label(message["chat"])
                marked = self.model.wants_attention(message)
                self.show(render.message_line(message, label, self.now(), self._tz, marked))

    async def _flush_reads(self) -> None:
        if self._marker is not None:
            await asyncio.wait([self._marker])

    async def _move_read_markers(self) -> None:
        while self._read_wanted:
            chat, seq = self._read_wanted.popitem()
            try:
                await self.session.call("read", {"chat": chat, "seq": seq})
            except RpcError as exc:
                error = self.error_text(exc)
                self.sink.error(f"Could not mark {self.model.label(chat)} read: {error}")
            except ClientError as exc:
                self._report(exc)
                return

    def _report(self, error: ClientError) -> None:
        # A session that gave up fails every call with the same error: say it once.
        if error is self.session.failure:
            if self._failure_reported:
                return
            self._failure_reported = True
        self.sink.error(str(error))


def _check_text(line: str) -> None:
    """``UsageError`` for what cannot go on the wire: lone surrogates (bytes that were
    not UTF-8, decoded with surrogateescape)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("Expected UTF-8 text, but the line holds bytes that are not") from None
