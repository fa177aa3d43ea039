"""The commands: one table of name, arguments, help and handler.

Parsing, ``/help`` and completion are all read off ``COMMANDS``; a command added
there is parsed, documented and completed with no other change.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from client import render
from client.errors import UsageError
from client.model import Model
from wire import HISTORY_MAX, USER_NAME_PATTERN

if TYPE_CHECKING:
    from client.app import App

Values = dict[str, Any]
Handler = Callable[["App", Values], Awaitable[None]]


class Kind(enum.Enum):
    """What an argument is: decides its usage text, its parsing and its completion."""

    COMMAND = "command"
    CHAT = "chat|@user"
    USER = "@user"
    COUNT = "n"
    MESSAGE = "#seq"
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
    app.show(render.info(f"{command.usage}  {command.help}"))


async def _chats(app: App, values: Values) -> None:
    await app.refresh_status()
    app.show_lines(render.chat_lines(app.model.chats.values(), app.model.current.chat))


async def _open(app: App, values: Values) -> None:
    target = await app.find_chat(values["chat"])
    if target.chat is None:
        # Answers no messages for a user not written to yet, -32003 for no such user.
        await app.session.call("history", {**target.params(), "limit": 1})
    app.model.current = target
    if target.chat is None:
        app.show(render.info(f"Now in @{target.user}; no messages yet."))
        return
    app.show(render.info(f"Now in {app.model.label(target.chat)}."))
    await app.show_history(target.chat, app.history_size)


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


async def _report(app: App, values: Values) -> None:
    params = {"user": values["user"]}
    if values["reason"]:
        params["reason"] = values["reason"]
    await app.session.call("report", params)
    app.show(render.info(f"Reported {values['user']}."))


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
    ),
    Command("chats", (), "List your chats and their unread counts.", _chats),
    Command(
        "open",
        (Arg("chat", Kind.CHAT),),
        "Make a chat current (plain text goes there), show its latest messages.",
        _open,
    ),
    Command(
        "dm",
        (Arg("user", Kind.USER), Arg("text", Kind.TEXT)),
        "Send a direct message without leaving the current chat.",
        _dm,
    ),
    Command(
        "history",
        (Arg("n", Kind.COUNT, optional=True),),
        f"Show the last n messages of the current chat (up to {HISTORY_MAX}).",
        _history,
    ),
    Command("unread", (), "Show every unread message, and mark them read.", _unread),
    Command("devices", (), "List your devices and which are online.", _devices),
    Command(
        "comment",
        (Arg("message", Kind.MESSAGE), Arg("text", Kind.TEXT)),
        "Comment on a message: #12 in the current chat, or general#12, @bob#3.",
        _comment,
    ),
    Command(
        "comments", (Arg("message", Kind.MESSAGE),), "Show the comments on a message.", _comments
    ),
    Command(
        "report",
        (Arg("user", Kind.USER), Arg("reason", Kind.TEXT, optional=True)),
        "Report a user for abuse; enough reports ban them for a while.",
        _report,
    ),
    Command("logout", (), "Sign this device out (its saved token is forgotten) and quit.", _logout),
    Command("quit", (), "Quit; this device stays signed in.", _quit),
)
BY_NAME: Final = {command.name: command for command in COMMANDS}
SAY: Final = Command("say", (Arg("text", Kind.TEXT),), "Send text to the current chat.", _say)


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
        if not word.isdigit() or not 1 <= int(word) <= HISTORY_MAX:
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


def complete(before_cursor: str, model: Model) -> tuple[str, list[str]]:
    """The word being typed and what it could become: commands, chats or @users."""
    words = before_cursor.split(" ")
    word = words[-1]
    kind = Kind.TEXT
    if before_cursor.startswith("/") and not before_cursor.startswith("//"):
        if len(words) == 1:
            return word, [f"/{name}" for name in BY_NAME if f"/{name}".startswith(word.lower())]
        command = BY_NAME.get(words[0][1:].lower())
        if command is None:
            return word, []
        kinds = [arg.kind for arg in command.args]
        index = len(words) - 2
        kind = kinds[index] if index < len(kinds) else Kind.TEXT
        if Kind.TEXT in kinds[:index]:
            kind = Kind.TEXT
    users = sorted(f"@{user}" for user in model.users)
    candidates = {
        Kind.COMMAND: list(BY_NAME),
        Kind.CHAT: [*model.labels(), *(user for user in users if user not in model.labels())],
        Kind.USER: users,
        Kind.TEXT: users if word.startswith("@") else [],
    }.get(kind, [])
    folded = word.casefold()
    return word, [candidate for candidate in candidates if candidate.casefold().startswith(folded)]
