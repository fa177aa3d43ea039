"""Fixtures of the cluster tests: a real nats-server with JetStream per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.support import Nats, nats_server


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Nats]:
    with nats_server(tmp_path) as server:
        yield server
