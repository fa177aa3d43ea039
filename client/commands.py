"""The commands: one table of name, arguments, help and handler.

Parsing, ``/help`` and completion are all read off ``COMMANDS``; a command added
there is parsed, documented and completed with no other change.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from client import render, transfer
from client.errors import UsageError
from client.model import GENERAL, FileId, Json, Model
from client.when import parse_when
from wire import HISTORY_MAX, USER_NAME_PATTERN

if TYPE_CHECKING:
    from client.app import App

Values = dict[str, Any]
Handler = Callable[["App", Values], Awaitable[None]]


class Kind(enum.Enum):
    """What an argument is: decides its usage text, its parsing and its completion."""

    COMMAND = "command"
    CHAT = "chat|@user"
    GROUP = "group"
    USER = "@user"
    COUNT = "n"
    MESSAGE = "#seq"
    WHEN = "when"
    SCHEDULED = "id"
    PATH = "path"
    FILE = "#seq|file"
    LINK = "link"
    TEXT = "text"


@dataclasses.dataclass(frozen=True, slots=True)
class Arg:
    key: str
    kind: Kind
    optional: bool = False

    @property
    def usage(self) -> str:
        # Free text is named by what it is for (text, reason); the rest by their kind.
        shown = self.key if self.kind is Kind.TEXT else self.kind.value
        return f"[{shown}]" if self.optional else f"<{shown}>"


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: tuple[Arg, ...]
    help: str
    run: Handler
    example: str = ""

    @property
    def usage(self) -> str:
        return " ".join([f"/{self.name}", *(arg.usage for arg in self.args)])


# -- handlers ---------------------------------------------------------------------


async def _say(app: App, values: Values) -> None:
    await app.send(app.model.current, values["text"])


async def _help(app: App, values: Values) -> None:
    wanted = values["command"]
    if wanted is None:
        app.show_lines(help_lines())
        return
    command = BY_NAME.get(wanted.lower())
    if command is None:
        raise UsageError(f"Expected one of {', '.join(BY_NAME)}, but got {wanted!r}")
    app.show_lines(usage_lines(command))


async def _chats(app: App, values: Values) -> None:
    await app.refresh_status()
    model = app.model
    peers = [chat.title for chat in model.chats.values() if chat.kind == "direct" and chat.title]
    if peers:  # who is online now, not only who was said to be since the start
        result = await app.session.call("presence", {"users": peers[:100]})
        for entry in result["users"]:
            model.presence[entry["user"].casefold()] = entry
    app.show_lines(render.chat_lines(model.chats.values(), model.current.chat, model.is_online))


async def _open(app: App, values: Values) -> None:
    target = await app.find_chat(values["chat"])
    if target.chat is None:
        # Answers no messages for a user not written to yet, -32003 for no such user.
        await app.session.call("history", {**target.params(), "limit": 1})
    app.model.current = target
    app.sink.changed()
    if target.chat is None:
        app.show(render.info(f"Now in @{target.user}; no messages yet."))
        return
    app.show(render.info(f"Now in {app.model.label(target.chat)}."))
    await app.show_history(target.chat, app.history_size, new_line=True)


async def _dm(app: App, values: Values) -> None:
    target = await app.find_chat("@" + values["user"])
    await app.send(target, values["text"])


async def _history(app: App, values: Values) -> None:
    chat = app.model.current.chat
    if chat is None:
        app.show(render.info(f"No messages with {app.model.current_label} yet."))
        return
    await app.show_history(chat, values["n"] or app.history_size)


async def _unread(app: App, values: Values) -> None:
    await app.show_unread()


async def _devices(app: App, values: Values) -> None:
    status = await app.refresh_status()
    app.show_lines(render.device_lines(status["devices"], app.device))


async def _comment(app: App, values: Values) -> None:
    app.check_length(values["text"])
    message = await app.find_message(values["message"])
    # A repeat could post twice (`comment` has no client_id): never retried.
    result = await app.session.call(
        "comment", {"message": message, "text": values["text"]}, retry=False
    )
    app.show_comment(result["comment"], only_new=True)


async def _comments(app: App, values: Values) -> None:
    message = await app.find_message(values["message"])
    result = await app.session.call("comments", {"message": message})
    if not result["comments"]:
        app.show(render.info("No comments."))
    for comment in result["comments"]:
        app.show_comment(comment, only_new=False)


async def _edit(app: App, values: Values) -> None:
    app.check_length(values["text"])
    message = await app.find_message(values["message"])
    # The client_id makes a repeat after a lost reply record nothing twice.
    params = {"message": message, "text": values["text"], "client_id": uuid.uuid4().hex}
    result = await app.session.call("edit", params)
    app.show_edited(result["message"])


async def _delete(app: App, values: Values) -> None:
    message = await app.find_message(values["message"])
    # A repeat after a lost reply would find nothing and fail: not retried.
    await app.session.call("delete", {"message": message}, retry=False)


async def _search(app: App, values: Values) -> None:
    result = await app.session.call("search", {"query": values["words"]})
    found: list[Json] = result["messages"]
    if not found:
        app.show(render.info(f"Nothing found for {values['words']!r}."))
        return
    await app.show_found(found)
    more = ", and older ones" if result["has_more"] else ""
    app.show(render.info(f"{len(found)} found, newest first{more}."))


async def _who(app: App, values: Values) -> None:
    names = [_convert(Arg("user", Kind.USER), word) for word in values["users"].split()]
    result = await app.session.call("presence", {"users": names})
    for entry in result["users"]:
        app.show(
            render.presence_line(
                entry["user"], entry["online"], entry["last_seen"], app.now(), app.tz
            )
        )


async def _report(app: App, values: Values) -> None:
    params = {"user": values["user"]}
    if values["reason"]:
        params["reason"] = values["reason"]
    result = await app.session.call("report", params, retry=False)
    # A report that counted is told by the `reported` event, on every device.
    if result.get("counted") is False:
        app.show(render.info(f"You reported {values['user']} before; this report did not count."))


async def _schedule(app: App, values: Values) -> None:
    send_at = parse_when(values["when"], app.now(), app.tz)
    await app.send(app.model.current, values["text"], send_at=send_at)


async def _scheduled(app: App, values: Values) -> None:
    result = await app.session.call("scheduled", {})
    pending: list[Json] = result["scheduled"]
    app.model.scheduled_listed(pending)
    if not pending:
        app.show(render.info("No scheduled messages."))
    labelled = [(scheduled, await app.chat_label(scheduled["chat"])) for scheduled in pending]
    app.show_lines(render.scheduled_rows(labelled, app.now(), app.tz))


async def _cancel(app: App, values: Values) -> None:
    wanted: str = values["id"]
    result = await app.session.call("scheduled", {})
    app.model.scheduled_listed(result["scheduled"])
    ids = [item["id"] for item in result["scheduled"]]
    matches = [id for id in ids if id == wanted] or [id for id in ids if id.startswith(wanted)]
    if not matches:
        raise UsageError(
            f"No scheduled message {wanted!r} pending (sent or cancelled?); /scheduled lists them"
        )
    if len(matches) > 1:
        raise UsageError(f"{wanted!r} could be any of {', '.join(matches)}; give more of it")
    # A repeat after a lost reply finds nothing to cancel: it is not retried.
    cancelled = await app.session.call("cancel", {"id": matches[0]}, retry=False)
    app.show_cancelled(cancelled["id"])


async def _send_file(app: App, values: Values) -> None:
    target = app.model.current
    stored = await transfer.upload(app.session, values["path"], app.progress)
    await app.send(target, values["text"] or "", file=stored["id"])


async def _get(app: App, values: Values) -> None:
    ref: str = values["file"]
    known: Json | None
    if "#" in ref:
        message = await app.find_message(ref)
        known = app.model.file_of(message)
        if known is None:
            raise UsageError(f"Message {ref} carries no file")
        file_id = known["id"]
    else:
        file_id, known = ref, app.model.files.get(FileId(ref))
    path, size, checked = await transfer.download(
        app.session, file_id, known, values["path"], app.progress
    )
    check = "SHA-256 checked" if checked else "not checked: its SHA-256 is unknown here"
    app.show(render.info(f"Saved {path} ({render.size_text(size)}, {check})."))


async def _create(app: App, values: Values) -> None:
    # Not retried: a repeat would make a second group.
    result = await app.session.call("chat.create", {"title": values["title"]}, retry=False)
    app.show_joined(result["chat"])


async def _group(app: App, name: str) -> str:
    target = await app.find_chat(name)
    if target.chat is None or app.model.chats[target.chat].kind == "direct":
        raise UsageError(f"{name} is a person, not a group")
    if target.chat == GENERAL:
        raise UsageError("general is everyone's chat: it has no owner, and nobody leaves it")
    return target.chat


# The group commands below are not retried either: a repeat after a lost reply would
# fail (already a member, no such request), reporting an action that worked as failed.


async def _invite(app: App, values: Values) -> None:
    chat = await _group(app, values["group"])
    # Told by `chat.member_joined`, on every device of the owner.
    await app.session.call("chat.invite", {"chat": chat, "user": values["user"]}, retry=False)


async def _link(app: App, values: Values) -> None:
    chat = await _group(app, values["group"])
    result = await app.session.call("chat.link", {"chat": chat}, retry=False)
    label = app.model.label(chat)
    app.show(
        render.info(f"Join link for {label} (it replaces the last one): /join {result['link']}")
    )


async def _join(app: App, values: Values) -> None:
    result = await app.session.call("chat.join", {"link": values["link"]}, retry=False)
    group = render.group_label(result.get("chat", {}).get("title"))
    if result["status"] == "member":
        app.show(render.info(f"You are a member of {group} already."))
    else:
        app.show(render.info(f"Asked to join {group}; you will be told when the owner decides."))


async def _requests(app: App, values: Values) -> None:
    chat = await _group(app, values["group"])
    result = await app.session.call("chat.requests", {"chat": chat})
    label = app.model.label(chat)
    if not result["requests"]:
        app.show(render.info(f"No one is asking to join {label}."))
    app.show_lines(render.request_rows(result["requests"], label, app.now(), app.tz))


async def _approve(app: App, values: Values) -> None:
    chat = await _group(app, values["group"])
    # Told by `chat.member_joined`, on every device of the owner.
    await app.session.call("chat.approve", {"chat": chat, "user": values["user"]}, retry=False)


async def _decline(app: App, values: Values) -> None:
    chat = await _group(app, values["group"])
    # Told by `chat.request_declined`, on every device of the owner.
    await app.session.call("chat.decline", {"chat": chat, "user": values["user"]}, retry=False)


async def _members(app: App, values: Values) -> None:
    target = await app.find_chat(values["group"])
    if target.chat is None:
        raise UsageError(f"No messages with @{target.user} yet: no chat to list")
    chat = target.chat
    result = await app.session.call("chat.members", {"chat": chat})
    app.show(render.members_line(app.model.label(chat), result["owner"], result["members"]))


async def _leave(app: App, values: Values) -> None:
    chat = await _group(app, values["group"])
    await app.session.call("chat.leave", {"chat": chat}, retry=False)
    app.show_left(chat)


async def _logout(app: App, values: Values) -> None:
    await app.log_out()


async def _quit(app: App, values: Values) -> None:
    app.quitting = True


COMMANDS: Final[tuple[Command, ...]] = (
    Command(
        "help",
        (Arg("command", Kind.COMMAND, optional=True),),
        "List the commands, or explain one.",
        _help,
        "/help send-file",
    ),
    Command(
        "chats",
        (),
        "List your chats: unread counts, mentions of you, who is online.",
        _chats,
        "/chats",
    ),
    Command(
        "open",
        (Arg("chat", Kind.CHAT),),
        "Make a chat current (general, @bob, +group), show its latest messages.",
        _open,
        "/open @bob",
    ),
    Command(
        "dm",
        (Arg("user", Kind.USER), Arg("text", Kind.TEXT)),
        "Send a direct message without leaving the current chat.",
        _dm,
        "/dm @bob see you at 5",
    ),
    Command(
        "history",
        (Arg("n", Kind.COUNT, optional=True),),
        f"Show the last n messages of the current chat (up to {HISTORY_MAX}).",
        _history,
        "/history 50",
    ),
    Command("unread", (), "Show every unread message, and mark them read.", _unread, "/unread"),
    Command("devices", (), "List your devices and which are online.", _devices, "/devices"),
    Command(
        "comment",
        (Arg("message", Kind.MESSAGE), Arg("text", Kind.TEXT)),
        "Comment on a message: #12 in the current chat, or general#12, @bob#3, +club#2.",
        _comment,
        "/comment #12 agreed",
    ),
    Command(
        "comments",
        (Arg("message", Kind.MESSAGE),),
        "Show the comments on a message.",
        _comments,
        "/comments general#12",
    ),
    Command(
        "edit",
        (Arg("message", Kind.MESSAGE), Arg("text", Kind.TEXT)),
        "Change the text of a message of yours (#12, general#12).",
        _edit,
        "/edit #12 see you at 6, not 5",
    ),
    Command(
        "delete",
        (Arg("message", Kind.MESSAGE),),
        "Remove a message of yours (or any in a group you own), for everyone.",
        _delete,
        "/delete #12",
    ),
    Command(
        "search",
        (Arg("words", Kind.TEXT),),
        "Find messages of your chats holding every word, newest first.",
        _search,
        "/search budget meeting",
    ),
    Command(
        "who",
        (Arg("users", Kind.TEXT),),
        "Whether people you share a chat with are online, or when last seen.",
        _who,
        "/who @bob @carol",
    ),
    Command(
        "report",
        (Arg("user", Kind.USER), Arg("reason", Kind.TEXT, optional=True)),
        "Report a user for abuse; enough reports ban them for a while.",
        _report,
        "/report @mallory spam links",
    ),
    Command(
        "schedule",
        (Arg("when", Kind.WHEN), Arg("text", Kind.TEXT)),
        "Send text to the current chat later: +10m, +2h, 14:30, 2026-11-24T14:30.",
        _schedule,
        "/schedule +2h stand-up in 5 minutes",
    ),
    Command(
        "scheduled", (), "List your scheduled messages not sent yet.", _scheduled, "/scheduled"
    ),
    Command(
        "cancel",
        (Arg("id", Kind.SCHEDULED),),
        "Cancel a scheduled message (its id as /scheduled shows it).",
        _cancel,
        "/cancel 3f9a2c",
    ),
    Command(
        "send-file",
        (Arg("path", Kind.PATH), Arg("text", Kind.TEXT, optional=True)),
        'Send a file to the current chat, with text ("quote" a path with spaces).',
        _send_file,
        '/send-file "~/My Notes.pdf" the minutes',
    ),
    Command(
        "get",
        (Arg("file", Kind.FILE), Arg("path", Kind.PATH, optional=True)),
        "Save a message's file (#12, general#12) here or to path; never overwrites.",
        _get,
        "/get #12 ~/Downloads/",
    ),
    Command(
        "create",
        (Arg("title", Kind.TEXT),),
        "Create a private group you own.",
        _create,
        "/create Book Club",
    ),
    Command(
        "invite",
        (Arg("group", Kind.GROUP), Arg("user", Kind.USER)),
        "Add someone to your group at once.",
        _invite,
        "/invite +Book_Club @bob",
    ),
    Command(
        "link",
        (Arg("group", Kind.GROUP),),
        "Make a join link for your group (the last one stops working).",
        _link,
        "/link +Book_Club",
    ),
    Command(
        "join",
        (Arg("link", Kind.LINK),),
        "Ask to join a group by its link.",
        _join,
        "/join bOE1VSpqaEo5tTIQvTAP_Q",
    ),
    Command(
        "requests",
        (Arg("group", Kind.GROUP),),
        "List who asks to join your group.",
        _requests,
        "/requests +Book_Club",
    ),
    Command(
        "approve",
        (Arg("group", Kind.GROUP), Arg("user", Kind.USER)),
        "Let someone who asked into your group.",
        _approve,
        "/approve +Book_Club @carol",
    ),
    Command(
        "decline",
        (Arg("group", Kind.GROUP), Arg("user", Kind.USER)),
        "Turn down someone's request to join your group.",
        _decline,
        "/decline +Book_Club @carol",
    ),
    Command(
        "members",
        (Arg("group", Kind.GROUP),),
        "List a group's members.",
        _members,
        "/members +Book_Club",
    ),
    Command(
        "leave",
        (Arg("group", Kind.GROUP),),
        "Leave a group (its owner cannot).",
        _leave,
        "/leave +Book_Club",
    ),
    Command(
        "logout",
        (),
        "Sign this device out (its saved token is forgotten) and quit.",
        _logout,
        "/logout",
    ),
    Command("quit", (), "Quit; this device stays signed in.", _quit, "/quit"),
)
BY_NAME: Final = {command.name: command for command in COMMANDS}
SAY: Final = Command("say", (Arg("text", Kind.TEXT),), "Send text to the current chat.", _say)


def usage_lines(command: Command) -> list[render.Line]:
    """``/help CMD``: the full usage, what it does, and an example."""
    lines = [[("class:ref", command.usage), ("", "  " + command.help)]]
    if command.example:
        lines.append(render.info(f"For example: {command.example}"))
    return lines


def help_lines() -> list[render.Line]:
    width = max(len(command.usage) for command in COMMANDS)
    lines = [
        [("class:ref", command.usage.ljust(width)), ("", "  " + command.help)]
        for command in COMMANDS
    ]
    lines.append(render.info("Other text goes to the current chat (start it with // to send a /)."))
    return lines


# -- parsing ------------------------------------------------------------------------


def parse(line: str) -> tuple[Command, Values]:
    """The command a line means and its arguments, or ``UsageError``."""
    if not line.startswith("/") or line.startswith("//"):
        return SAY, {"text": line[1:] if line.startswith("//") else line}
    name, _, rest = line[1:].partition(" ")
    command = BY_NAME.get(name.lower())
    if command is None:
        raise UsageError(f"Unknown command /{name}; /help lists them")
    values: Values = {}
    rest = rest.strip()
    for arg in command.args:
        if arg.kind is Kind.TEXT:
            word, rest = rest, ""
        elif arg.kind is Kind.PATH and rest[:1] in ("'", '"'):
            end = rest.find(rest[0], 1)
            if end < 0:
                raise UsageError(f"Expected a closing {rest[0]} after the path")
            word, rest = rest[1:end], rest[end + 1 :].lstrip()
        else:
            word, _, rest = rest.partition(" ")
            rest = rest.lstrip()
        if not word:
            if not arg.optional:
                raise UsageError(f"Usage: {command.usage}")
            values[arg.key] = None
            continue
        values[arg.key] = _convert(arg, word)
    if rest:
        raise UsageError(f"Usage: {command.usage}")
    return command, values


def _convert(arg: Arg, word: str) -> Any:
    if arg.kind is Kind.COUNT:
        # Not str.isdigit: it takes "²", which int() does not.
        if not re.fullmatch(r"[0-9]{1,9}", word) or not 1 <= int(word) <= HISTORY_MAX:
            raise UsageError(f"Expected a number from 1 to {HISTORY_MAX}, but got {word!r}")
        return int(word)
    if arg.kind is Kind.USER:
        name = word.removeprefix("@")
        if not USER_NAME_PATTERN.fullmatch(name):
            raise UsageError(f"Expected a user name like @bob, but got {word!r}")
        return name
    if arg.kind is Kind.COMMAND:
        return word.removeprefix("/")
    return word


# -- completion -----------------------------------------------------------------------


def words_of(before_cursor: str) -> list[str]:
    """The words typed so far, the last one being the one under the cursor (maybe
    empty); a word begun with a quote runs to its closing quote, spaces and all."""
    words: list[str] = []
    rest = before_cursor
    while True:
        if rest[:1] in ('"', "'"):
            end = rest.find(rest[0], 1)
            if end < 0:
                return [*words, rest]
            word, rest = rest[: end + 1], rest[end + 1 :]
            if not rest:
                return [*words, word]
            rest = rest[1:] if rest[0] == " " else rest
            words.append(word)
            continue
        word, space, rest = rest.partition(" ")
        if not space:
            return [*words, word]
        words.append(word)


def last_word(before_cursor: str) -> str:
    return words_of(before_cursor)[-1]


def kind_at(before_cursor: str) -> Kind | None:
    """What the word being typed is: None for a command's name or an unknown command."""
    if not before_cursor.startswith("/") or before_cursor.startswith("//"):
        return Kind.TEXT
    words = words_of(before_cursor)
    command = BY_NAME.get(words[0][1:].lower())
    if len(words) == 1 or command is None:
        return None
    kinds = [arg.kind for arg in command.args]
    index = len(words) - 2
    if index >= len(kinds) or Kind.TEXT in kinds[:index]:
        return Kind.TEXT
    return kinds[index]


def more_args_after(before_cursor: str) -> bool:
    """Whether something follows the word being completed: a command's name, or an
    argument that is not its command's last."""
    if not before_cursor.startswith("/") or before_cursor.startswith("//"):
        return False
    words = words_of(before_cursor)
    if len(words) == 1:
        return True
    command = BY_NAME.get(words[0][1:].lower())
    return command is not None and len(words) - 1 < len(command.args)


def is_quit(line: str) -> bool:
    """``/quit``: acted on at once, never queued behind commands waiting for the server."""
    return line.strip().lower() == "/quit"


def complete(before_cursor: str, model: Model) -> tuple[str, list[str]]:
    """The word being typed and what it could become: commands, chats, groups, @users,
    scheduled ids (paths are the console's to complete, from the disk)."""
    word = last_word(before_cursor)
    kind = kind_at(before_cursor)
    if kind is None:
        if " " in before_cursor:
            return word, []
        return word, [f"/{name}" for name in BY_NAME if f"/{name}".startswith(word.lower())]
    users = sorted(f"@{user}" for user in model.users)
    candidates = {
        Kind.COMMAND: list(BY_NAME),
        Kind.CHAT: [*model.labels(), *(user for user in users if user not in model.labels())],
        Kind.GROUP: model.group_labels(),
        Kind.USER: users,
        Kind.SCHEDULED: sorted({render.short_id(id) for id in model.scheduled}),
        Kind.TEXT: users if word.startswith("@") else [],
    }.get(kind, [])
    folded = word.casefold()
    return word, [candidate for candidate in candidates if candidate.casefold().startswith(folded)]
