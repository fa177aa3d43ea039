"""The interactive face: a prompt_toolkit line editor with history and completion,
one chat in view at a time and a status line below the prompt.

Lines go out through ``print_formatted_text``, which, while the prompt runs, prints
above it and redraws it: what is being typed is never garbled by what arrives. The
prompt never waits for a command: what is typed goes to a queue that one worker runs
in order, so that while the server is away commands wait their turn (the status line
counts them) and ``/quit``, Ctrl-D and Ctrl-C still act at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.application.current import get_app_session
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style

from client import commands, render, transfer
from client.app import App

# How long quitting waits for the read markers of what was shown to reach the server.
QUIT_GRACE = 2.0

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "ref": "#5f87af",
        "author": "bold",
        "info": "#888888 italic",
        "dim": "#888888",
        "unread": "#d7af00 bold",
        "file": "#5faf5f",
        "error": "#ff5f5f bold",
        "prompt": "bold",
        "mention": "#ffaf00 bold",
        "bottom-toolbar": "noreverse bg:#262626 #bcbcbc",
        "status": "",
        "status.current": "bold #ffffff",
        "status.unread": "#d7af00",
        "status.attention": "#ffaf00 bold reverse",
        "status.offline": "#ff5f5f bold",
        "status.progress": "#5faf5f",
    }
)


class _Completer(Completer):
    def __init__(self, console: Console) -> None:
        self._console = console
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        app = self._console.app
        if app is None:
            return
        before = document.text_before_cursor
        if commands.kind_at(before) is commands.Kind.PATH:
            yield from self._path_completions(before, complete_event)
            return
        word, candidates = commands.complete(before, app.model)
        # A command's name, or an argument that others follow, completes with a space.
        space = " " if commands.more_args_after(before) else ""
        for candidate in candidates:
            yield Completion(candidate + space, start_position=-len(word), display=candidate)

    def _path_completions(self, before: str, event: CompleteEvent) -> Iterator[Completion]:
        """Paths from the disk; one with a space (or begun with a quote) completes
        quoted, as the command line parses it."""
        token = commands.last_word(before)
        typed = token[1:] if token[:1] in ('"', "'") else token
        for found in self._paths.get_completions(Document(typed), event):
            path = typed[: len(typed) + found.start_position] + found.text
            if token[:1] in ('"', "'") or " " in path:
                quote = token[:1] if token[:1] in ('"', "'") else '"'
                closing = "" if path.endswith("/") else quote  # a directory goes on
                path = f"{quote}{path}{closing}"
            yield Completion(path, start_position=-len(token), display=found.display)


class Console:
    """Sink and prompter of the interactive client. Create it inside the app session
    whose input and output it should use (the terminal, or a test's pipe)."""

    marks_read = True
    shows_start = True
    one_view = True  # the open chat's messages print; the others count in the status line

    def __init__(self, *, bell: bool = True) -> None:
        self.app: App | None = None
        self.bell = bell
        self._progress = ""  # a transfer under way, shown in the status line
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        self._busy = False  # a command is running (or waiting for the server)
        # Completion on Tab only, like a shell: a menu popping up mid-sentence distracts.
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            completer=_Completer(self),
            complete_while_typing=False,
            style=STYLE,
            bottom_toolbar=lambda: FormattedText(self.status()),
            key_bindings=self._keys(),
        )

    # -- Sink ------------------------------------------------------------------------

    def show(self, line: render.Line) -> None:
        print_formatted_text(FormattedText(line), style=STYLE)

    def notice(self, text: str) -> None:
        self.show(render.info(text))

    def error(self, text: str) -> None:
        self.show([("class:error", text)])

    def progress(self, title: str, total: int) -> transfer.Progress:
        return _Bar(self, title, total)

    def changed(self) -> None:
        running = get_app_or_none()
        if running is not None and running.is_running:
            running.invalidate()

    def alert(self) -> None:
        if self.bell:
            output = get_app_session().output
            output.write_raw("\a")
            output.flush()

    # -- Prompter -----------------------------------------------------------------------

    async def ask_password(self, prompt: str) -> str | None:
        # A session of its own: the password must not land in the line history.
        asking: PromptSession[str] = PromptSession(style=STYLE)
        try:
            return await asking.prompt_async(prompt, is_password=True)
        except (EOFError, KeyboardInterrupt):
            return None

    async def confirm(self, question: str) -> bool:
        """A yes or no answered with a line (``y`` and Enter), so that the Enter does
        not fall through to the next prompt."""
        asking: PromptSession[str] = PromptSession(style=STYLE)
        while True:
            try:
                answer = await asking.prompt_async(f"{question} [y/n] ")
            except (EOFError, KeyboardInterrupt):
                return False
            if answer.strip().lower() in ("y", "yes"):
                return True
            if answer.strip().lower() in ("n", "no"):
                return False

    # -- the loop -----------------------------------------------------------------------

    async def run(self, app: App) -> int:
        """Read lines until /quit, /logout, Ctrl-D or Ctrl-C on an empty line; run
        them, in order, as the server allows."""
        self.app = app
        app.on_quit = self._stop_prompt
        worker = asyncio.create_task(self._work(app), name="messenger-commands")
        try:
            while not app.quitting:
                try:
                    line = await self._session.prompt_async(self._prompt)
                except (EOFError, KeyboardInterrupt):
                    break
                if not line.strip():
                    continue
                if commands.is_quit(line):
                    break  # at once, whatever is queued or however the server is
                if self._busy or not app.connected:
                    self.show(render.info(f"(queued) {render.clean(line)}"))
                self._commands.put_nowait(line)
                self.changed()
        finally:
            # What waits, and what runs unless it is what quit (/logout).
            left = self._commands.qsize() + (self._busy and not app.quitting)
            worker.cancel()
            await asyncio.wait([worker])
        if left:
            self.notice(f"{left} queued command{'s' if left != 1 else ''} not run.")
        elif app.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(app.drain(), QUIT_GRACE)
        return 1 if app.failure is not None else 0

    @property
    def queued(self) -> int:
        """Commands typed and not yet done."""
        return self._commands.qsize() + self._busy

    async def _work(self, app: App) -> None:
        while True:
            line = await self._commands.get()
            self._busy = True
            try:
                await app.execute(line)
            finally:
                self._busy = False
                self.changed()
            if app.quitting:  # /logout
                self._stop_prompt()
                return

    def _prompt(self) -> FormattedText:
        assert self.app is not None
        return FormattedText([("class:prompt", self.app.model.current_label + "> ")])

    def status(self) -> render.Line:
        """The line below the prompt: chats, unread counts, connection, transfer."""
        app = self.app
        line: render.Line = []
        if app is not None:
            chats = list(app.model.chats.values())
            line = render.status_line(chats, app.model.current.chat, app.connected, self.queued)
        if self._progress:
            line.append(("class:status.progress", "  " + self._progress))
        return line

    def _stop_prompt(self) -> None:
        running = get_app_or_none()
        if running is not None and running.is_running and not running.is_done:
            running.exit(exception=EOFError)

    # -- keys ---------------------------------------------------------------------------

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()

        @keys.add("c-c")
        def _(event: KeyPressEvent) -> None:
            """Ctrl-C clears a half-typed line; on an empty line it quits."""
            if event.current_buffer.text:
                event.current_buffer.reset()
            else:
                event.app.exit(exception=EOFError)

        for digit in "123456789":

            @keys.add("escape", digit)
            def _(event: KeyPressEvent, number: int = int(digit)) -> None:
                """Alt-1..9: open the chat of that number in the status line."""
                self._open_nth(number - 1)

        @keys.add("c-n")
        def _(event: KeyPressEvent) -> None:
            """Ctrl-N: the next chat."""
            self._open_next(+1)

        @keys.add("c-p")
        def _(event: KeyPressEvent) -> None:
            """Ctrl-P: the previous chat."""
            self._open_next(-1)

        return keys

    def _open_nth(self, index: int) -> None:
        if self.app is None:
            return
        chats = list(self.app.model.chats.values())
        if 0 <= index < len(chats):
            self._commands.put_nowait(f"/open {chats[index].label}")
            self.changed()

    def _open_next(self, step: int) -> None:
        if self.app is None or not self.app.model.chats:
            return
        ids = list(self.app.model.chats)
        current = self.app.model.current.chat
        at = ids.index(current) if current in ids else -step
        self._open_nth((at + step) % len(ids))


class _Bar:
    """A transfer's progress, in the status line while it runs:
    ``Sending a.txt [=====     ] 52% 2.6 MiB of 5 MiB``."""

    WIDTH = 20

    def __init__(self, console: Console, title: str, total: int) -> None:
        self._console = console
        self._title = render.clean(title)
        self._total = total
        self._drawn: int | None = None  # the per mille last drawn

    def advance(self, done: int) -> None:
        per_mille = 1000 if self._total <= 0 else min(1000, 1000 * done // self._total)
        if per_mille == self._drawn:  # redrawn when it shows a change, not once per chunk
            return
        self._drawn = per_mille
        filled = self.WIDTH * per_mille // 1000
        sizes = f"{render.size_text(done)} of {render.size_text(self._total)}"
        self._console._progress = (
            f"{self._title} [{'=' * filled}{' ' * (self.WIDTH - filled)}] "
            f"{per_mille // 10:3d}% {sizes}"
        )
        self._console.changed()

    def close(self) -> None:
        self._console._progress = ""
        self._console.changed()
