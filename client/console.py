"""The interactive face: a prompt_toolkit line editor with history and completion.

Lines go out through ``print_formatted_text``, which, while the prompt runs, prints
above it and redraws it: what is being typed is never garbled by what arrives.
"""

from __future__ import annotations

from collections.abc import Iterator

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.shortcuts import create_confirm_session
from prompt_toolkit.styles import Style

from client import commands, render
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

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        app = self._console.app
        if app is None:
            return
        word, candidates = commands.complete(document.text_before_cursor, app.model)
        for candidate in candidates:
            yield Completion(candidate, start_position=-len(word))


class Console:
    """Sink and prompter of the interactive client. Create it inside the app session
    whose input and output it should use (the terminal, or a test's pipe)."""

    def __init__(self) -> None:
        self.app: App | None = None
        # Completion on Tab only, like a shell: a menu popping up mid-sentence distracts.
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            completer=_Completer(self),
            complete_while_typing=False,
            style=STYLE,
        )

    # -- Sink ------------------------------------------------------------------------

    def show(self, line: render.Line) -> None:
        print_formatted_text(FormattedText(line), style=STYLE)

    def notice(self, text: str) -> None:
        self.show(render.info(text))

    def error(self, text: str) -> None:
        self.show([("class:error", text)])

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
