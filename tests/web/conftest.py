"""One real server and one Chromium per test module (starting a browser takes about
a second): a module's ``SERVER_SETTINGS`` (Config fields) shape its server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.web.support import WebServer, launch, web_config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WebServer]:
    settings = getattr(request.module, "SERVER_SETTINGS", {})
    web = WebServer(web_config(tmp_path_factory.mktemp("web") / "state", **settings))
    await web.start()
    yield web
    if web.running is not None:  # a test that restarts it may have left it stopped
        await web.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        yield browser
        await browser.close()
