"""What the browser tests share: Debian's Chromium driven by Playwright, and a real
server on port 0 that a test can restart on the same port and state."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright

from server.app import Running, run_server
from server.config import Config
from tests.configs import LIMITS_OFF

CHROMIUM = Path(os.environ.get("MESSENGER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "password1"
TIMEOUT_MS = 10_000


async def launch(playwright: Playwright) -> Browser:
    """Debian's chromium (the Playwright download is not reachable): a plain failure,
    not a skip, where it is missing."""
    if not CHROMIUM.exists():  # noqa: ASYNC240 (one stat, before any work)
        pytest.fail(
            f"chromium is missing: {CHROMIUM} does not exist. The browser tests need "
            "Debian's chromium (apt-get install chromium; .ci/run installs it), or "
            "MESSENGER_CHROMIUM set to a Chromium binary.",
            pytrace=False,
        )
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def web_config(state_dir: Path, **changes: Any) -> Config:
    return Config(port=0, state_dir=state_dir, scrypt_n=2**4, **{**LIMITS_OFF, **changes})


class WebServer:
    """A real server that can be stopped and started again on the same port."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stack: contextlib.AsyncExitStack | None = None
        self.running: Running | None = None

    @property
    def origin(self) -> str:
        assert self.running is not None
        return f"http://127.0.0.1:{self.running.port}"

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    async def start(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.running = await self.stack.enter_async_context(run_server(self.config))
        self.config = dataclasses.replace(self.config, port=self.running.port)

    async def stop(self) -> None:
        assert self.stack is not None
        await self.stack.aclose()
        self.stack = self.running = None


async def new_page(
    browser: Browser, origin: str, watch: Callable[[Page], None], **options: Any
) -> tuple[BrowserContext, Page]:
    """A fresh browser profile (its own storage: a device of its own) at the app;
    ``watch`` sees each of its pages before it loads anything."""
    context = await browser.new_context(base_url=origin, **options)
    context.set_default_timeout(TIMEOUT_MS)
    context.on("page", watch)
    page = await context.new_page()
    await page.goto("/")
    return context, page
