"""``messenger-client --user NAME [--host] [--port] [--device NAME] [--register]``.

Interactive on a terminal; with stdin not a terminal, a script: the same commands
read line by line, each run to its reply, results and events printed as plain lines,
errors on stderr, exit status 0 when every command succeeded and 1 otherwise. A
script moves no read marker and shows no history unless asked (``--history``,
``--mark-read``): a cron job must not eat a person's unread messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Final, Protocol, TextIO

from client import render, transfer
from client.app import App, NoProgress, Sink
from client.connection import Backoff, Session
from client.console import Console
from client.errors import ClientError, RpcError
from client.settings import URL_VARIABLE, BadSetting, Settings, parse_url
from client.settings import default_path as config_path
from client.settings import load as load_settings
from client.signin import Device, Prompter, sign_in
from client.tokens import TokenStore, default_path
from wire import DEFAULT_HOST, DEFAULT_PORT, USER_NAME_PATTERN

log = logging.getLogger("messenger.client")

PASSWORD_VARIABLE: Final = "MESSENGER_PASSWORD"
# A script has nobody to wait for it: past this long without a server, it fails.
SCRIPT_GIVE_UP: Final = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    user: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    device: str | None = None
    register: bool = False
    password: str | None = None
    bell: bool = True  # the console rings on mentions and direct messages
    tokens: Path = dataclasses.field(default_factory=default_path)
    backoff: Backoff = dataclasses.field(default_factory=Backoff)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    @property
    def this_device(self) -> Device:
        name = self.device or socket.gethostname()[:64] or "console"
        return Device(f"{self.host}:{self.port}", self.user, name)


def _user_name(text: str) -> str:
    if not USER_NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected 1-32 of A-Z a-z 0-9 _ . -, but got {text!r}")
    return text


def _port(text: str) -> int:
    port = int(text) if re.fullmatch(r"[0-9]{1,5}", text) else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, but got {text!r}")
    return port


def _device_name(text: str) -> str:
    if not 1 <= len(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected 1-64 characters, but got {len(text)}")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="messenger-client",
        description="Console client of the messenger. With stdin not a terminal it runs "
        "the commands it reads as a script. The password comes from a prompt or from "
        f"${PASSWORD_VARIABLE}.",
    )
    parser.add_argument(
        "--user", type=_user_name, help="who to sign in as (default: user in the config file)"
    )
    parser.add_argument(
        "--host",
        help=f"server host (default: from ${URL_VARIABLE}, the config file, or {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        help=f"server port (default: from ${URL_VARIABLE}, the config file, or {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--device",
        type=_device_name,
        help="name of this device (default: the host name); another name is another "
        "device, with its own saved token",
    )
    parser.add_argument(
        "--register", action="store_true", help="create the user first if it does not exist"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="script: show the unread counts and the latest messages at the start",
    )
    parser.add_argument(
        "--mark-read",
        action="store_true",
        help="script: move read markers over what it shows (by default it moves none)",
    )
    parser.add_argument(
        "--no-bell", action="store_true", help="console: no bell on mentions and direct messages"
    )
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace, environ: dict[str, str], settings: Settings) -> Options:
    """The run's options: a flag beats ``MESSENGER_URL``, which beats the config file."""
    host, port = settings.host, settings.port
    url = environ.get(URL_VARIABLE, "")
    if url:
        host, port = parse_url(url)
    user = args.user or settings.user
    if user is None:
        raise BadSetting(f'Expected --user NAME (or user = "NAME" in {config_path()})')
    return Options(
        user=user,
        host=args.host or host or DEFAULT_HOST,
        port=args.port or port or DEFAULT_PORT,
        device=args.device or settings.device,
        register=args.register,
        password=environ.get(PASSWORD_VARIABLE) or None,
        bell=settings.bell and not args.no_bell,
    )


class Face(Sink, Prompter, Protocol):
    """The client as a person or a script meets it."""

    async def run(self, app: App) -> int:
        """Take commands until the end; the exit status."""


async def run(options: Options, face: Face) -> int:
    """Sign in, show the start, hand over to ``face``; the exit status."""
    session = Session(options.url, options.backoff)
    tokens = TokenStore(options.tokens)
    device = options.this_device
    app: App | None = None
    try:
        await session.connect()
        login = await sign_in(
            session,
            device,
            tokens,
            face,
            face.notice,
            password=options.password,
            register=options.register,
        )
        app = App(
            session,
            face,
            login,
            forget_token=lambda: tokens.forget(device.server, device.user, device.name),
        )
        await app.start()
        face.notice(
            f"Signed in as {login['user']} on {options.url} (device {device.name}); "
            "/help lists the commands."
        )
        app.tell_ban()
        return await face.run(app)
    except RpcError as exc:
        face.error(render.error_text(exc, time.time()))
        return 1
    except ClientError as exc:
        face.error(str(exc))
        return 1
    except Exception as exc:  # a bug: one line, never a traceback on the terminal
        log.debug("The client failed", exc_info=True)
        face.error(f"Internal error in the client: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if app is not None:
            await app.close()
        await session.close()


class ScriptFace:
    """Plain lines: results and events on stdout, the client's own news on stderr."""

    def __init__(
        self,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
        *,
        history: bool = False,
        mark_read: bool = False,
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self.shows_start = history
        self.marks_read = mark_read
        self.one_view = False  # every chat's messages, as they come

    def show(self, line: render.Line) -> None:
        print(render.plain(line), file=self._stdout, flush=True)

    def notice(self, text: str) -> None:
        print(text, file=self._stderr, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self._stderr, flush=True)

    def progress(self, title: str, total: int) -> transfer.Progress:
        return NoProgress()  # a script's output is its results, not bars

    def changed(self) -> None:
        pass  # no status line: counts show where asked for (/chats)

    def alert(self) -> None:
        pass  # nobody to ring for

    async def ask_password(self, prompt: str) -> str | None:
        return None  # stdin is the script; the password comes from the environment

    async def confirm(self, question: str) -> bool:
        return False

    async def run(self, app: App) -> int:
        lines: asyncio.Queue[str | Exception | None] = asyncio.Queue()  # None: the end
        app.on_quit = lambda: lines.put_nowait(None)  # e.g. signed out elsewhere
        _read_lines(self._stdin, lines)
        ok = True
        while not app.quitting and (line := await lines.get()) is not None:
            if isinstance(line, Exception):  # stdin cannot be read on (not UTF-8, say)
                self.error(f"Cannot read the script: {line}")
                ok = False
                break
            if line.strip():
                ok = await app.execute(line.rstrip("\r\n")) and ok
        await app.drain()
        return 0 if ok and app.failure is None else 1


def _read_lines(stream: TextIO, lines: asyncio.Queue[str | Exception | None]) -> None:
    """Put the stream's lines, then None, on ``lines`` from a daemon thread: a read
    that blocks never holds up the exit. A read that fails puts its error, then None."""
    loop = asyncio.get_running_loop()

    def put(item: str | Exception | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed first: the client is done
            loop.call_soon_threadsafe(lines.put_nowait, item)

    def pump() -> None:
        try:
            for line in stream:
                put(line)
        except Exception as exc:  # e.g. UnicodeDecodeError: the end all the same
            put(exc)
        put(None)

    threading.Thread(target=pump, name="messenger-stdin", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interactive = sys.stdin.isatty()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        options = options_from(args, dict(os.environ), load_settings(config_path()))
    except BadSetting as exc:
        print(f"messenger-client: {exc}", file=sys.stderr)
        return 2
    options = dataclasses.replace(
        options, backoff=Backoff(give_up_after=None if interactive else SCRIPT_GIVE_UP)
    )
    try:
        return asyncio.run(_main(options, args, interactive))
    except KeyboardInterrupt:
        return 130


async def _main(options: Options, args: argparse.Namespace, interactive: bool) -> int:
    if interactive:
        return await run(options, Console(bell=options.bell))
    if isinstance(sys.stdin, io.TextIOWrapper):
        # A byte that is not UTF-8 becomes U+FFFD instead of ending the script.
        sys.stdin.reconfigure(errors="replace")
    face = ScriptFace(
        sys.stdin, sys.stdout, sys.stderr, history=args.history, mark_read=args.mark_read
    )
    return await run(options, face)
