"""Device tokens kept between runs, so that a device signs in once with its password.

One JSON file, ``$XDG_CONFIG_HOME/messenger/tokens.json`` (``~/.config`` when unset,
per the XDG Base Directory spec), readable by its owner only (0600):
``{server: {user: {device_name: token}}}``. Writes go through a temporary file and
``os.replace`` under a lock, so two clients starting at once do not lose a token.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wire import decode, encode

log = logging.getLogger("messenger.client")


def default_path() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    # The spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "messenger" / "tokens.json"


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, server: str, user: str, device: str) -> str | None:
        token = self._read().get(server, {}).get(user.lower(), {}).get(device)
        return token if isinstance(token, str) else None

    def save(self, server: str, user: str, device: str, token: str) -> None:
        with self._locked():
            tokens = self._read()
            tokens.setdefault(server, {}).setdefault(user.lower(), {})[device] = token
            self._write(tokens)

    def forget(self, server: str, user: str, device: str) -> None:
        with self._locked():
            tokens = self._read()
            devices = tokens.get(server, {}).get(user.lower(), {})
            if devices.pop(device, None) is not None:
                self._write(tokens)

    def _read(self) -> dict[str, Any]:
        try:
            tokens = decode(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("Ignoring %s: expected JSON, but it does not parse", self.path)
            return {}
        return tokens if isinstance(tokens, dict) else {}

    def _write(self, tokens: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        # Created 0600 from the start: the token is never readable by others, not even briefly.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(encode(tokens))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
