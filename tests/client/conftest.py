"""Fixtures of the client's tests: where clients keep their tokens, and who ends them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.client.support import Clients


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
async def clients(config_home: Path) -> AsyncIterator[Clients]:
    started = Clients(config_home)
    try:
        yield started
    finally:
        await started.close()
