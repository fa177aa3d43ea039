"""Fixtures shared by every test: a real server on port 0 with its state in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.app import Running, run_server
from server.config import Config
from tests.configs import config_for_tests


@pytest.fixture
def server_config(tmp_path: Path) -> Config:
    """A real server's settings: port 0, state in tmp_path, a cheap KDF."""
    return config_for_tests(tmp_path)


@pytest.fixture
async def running_server(server_config: Config) -> AsyncIterator[Running]:
    async with run_server(server_config) as running:
        yield running
