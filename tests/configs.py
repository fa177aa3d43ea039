"""The one place where tests build a real server's settings: port 0, state in
tmp_path, a cheap KDF, and the limits against abuse lifted with their "off" values
(protocol-contract.md, "Limits against abuse"), so that only the behaviour under
test refuses anything. The tests of those limits set them again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Final

from server.config import Config

LIMITS_OFF: Final[dict[str, Any]] = {
    "flood_rate": 0,
    "max_live_bytes": 0,
    "report_min_age": 0,
    "register_limit": 0,
}


def config_for_tests(tmp_path: Path, **changes: Any) -> Config:
    config = Config(port=0, state_dir=tmp_path / "state", scrypt_n=2**4, **LIMITS_OFF)
    return dataclasses.replace(config, **changes)


# The same, as ``messenger-server`` options (each flag is its setting's name).
LIMITS_OFF_ARGS: Final[list[str]] = [
    part
    for name, value in LIMITS_OFF.items()
    for part in (f"--{name.replace('_', '-')}", str(value))
]
