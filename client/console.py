"""The interactive face: a prompt_toolkit line editor with history and completion.

Lines go out through ``print_formatted_text``, which, while the prompt runs, prints
above it and redraws it: what is being typed is never garbled by what arrives.
"""

from __future__ import annotations

from collections.abc import Iterator

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.application.current import get_app_session
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.shortcuts import create_confirm_session
from prompt_toolkit.styles import Style

from client import commands, render, transfer
from client.app import App

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
            word = before.rsplit(" ", maxsplit=1)[-1]
            yield from self._paths.get_completions(Document(word), complete_event)
            return
        word, candidates = commands.complete(before, app.model)
        for candidate in candidates:
            yield Completion(candidate, start_position=-len(word))


class Console:
    """Sink and prompter of the interactive client. Create it inside the app session
    whose input and output it should use (the terminal, or a test's pipe)."""

    def __init__(self) -> None:
        self.app: App | None = None
        self._bar: _Bar | None = None
        # Completion on Tab only, like a shell: a menu popping up mid-sentence distracts.
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            completer=_Completer(self),
            complete_while_typing=False,
            style=STYLE,
        )

    # -- Sink ------------------------------------------------------------------------

    def show(self, line: render.Line) -> None:
        bar = self._bar
        if bar is not None:
            bar.erase()  # the line goes where the bar was, and the bar below it
        print_formatted_text(FormattedText(line), style=STYLE)
        if bar is not None:
            bar.draw()

    def notice(self, text: str) -> None:
        self.show(render.info(text))

    def error(self, text: str) -> None:
        self.show([("class:error", text)])

    def progress(self, title: str, total: int) -> transfer.Progress:
        self._bar = _Bar(self, title, total)
        return self._bar

    # -- Prompter -----------------------------------------------------------------------

    async def ask_password(self, prompt: str) -> str | None:
        # A session of its own: the password must not land in the line history.
        asking: PromptSession[str] = PromptSession(style=STYLE)
        try:
            return await asking.prompt_async(prompt, is_password=True)
        except (EOFError, KeyboardInterrupt):
            return None

    async def confirm(self, question: str) -> bool:
        try:
            return await create_confirm_session(question, " [y/n] ").prompt_async()
        except (EOFError, KeyboardInterrupt):
            return False

    # -- the loop -----------------------------------------------------------------------

    async def run(self, app: App) -> int:
        """Read and run lines until /quit, /logout, Ctrl-D or Ctrl-C."""
        self.app = app
        app.on_quit = self._stop_prompt
        while not app.quitting:
            try:
                line = await self._session.prompt_async(self._prompt)
            except (EOFError, KeyboardInterrupt):
                break
            if line.strip():
                await app.execute(line)
        await app.drain()
        return 1 if app.failure is not None else 0

    def _prompt(self) -> FormattedText:
        assert self.app is not None
        elsewhere = self.app.model.unread_elsewhere()
        return FormattedText(
            [
                ("class:prompt", self.app.model.current_label),
                ("class:unread", f" +{elsewhere}" if elsewhere else ""),
                ("class:prompt", "> "),
            ]
        )

    def _stop_prompt(self) -> None:
        running = get_app_or_none()
        if running is not None and running.is_running and not running.is_done:
            running.exit(exception=EOFError)


class _Bar:
    """A transfer's progress, drawn in place on the last line while the command runs
    (the prompt is not shown then): ``Sending a.txt [=====     ] 52% 2.6/5.0 MiB``."""

    WIDTH = 30

    def __init__(self, console: Console, title: str, total: int) -> None:
        self._console = console
        self._title = render.clean(title)
        self._total = total
        self._done = 0
        self._drawn: int | None = None  # the per mille last drawn

    def advance(self, done: int) -> None:
        self._done = done
        # Redrawn when it shows a change, not once per chunk.
        if self._per_mille() != self._drawn:
            self.draw()

    def close(self) -> None:
        self.erase()
        if self._console._bar is self:
            self._console._bar = None

    def draw(self) -> None:
        output = get_app_session().output
        per_mille = self._drawn = self._per_mille()
        filled = self.WIDTH * per_mille // 1000
        sizes = f"{render.size_text(self._done)} of {render.size_text(self._total)}"
        text = (
            f"{self._title} [{'=' * filled}{' ' * (self.WIDTH - filled)}] "
            f"{per_mille // 10:3d}% {sizes}"
        )
        output.write_raw("\r")
        output.erase_end_of_line()
        output.write(text[: max(1, output.get_size().columns - 1)])
        output.flush()

    def erase(self) -> None:
        output = get_app_session().output
        output.write_raw("\r")
        output.erase_end_of_line()
        output.flush()

    def _per_mille(self) -> int:
        return 1000 if self._total <= 0 else min(1000, 1000 * self._done // self._total)
