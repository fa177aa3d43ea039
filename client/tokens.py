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

from client.settings import config_home
from wire import decode, encode

log = logging.getLogger("messenger.client")


def default_path() -> Path:
    return config_home() / "messenger" / "tokens.json"


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False  # a file that cannot be read or written: said once

    def load(self, server: str, user: str, device: str) -> str | None:
        token = self._devices(self._read(), server, user).get(device)
        return token if isinstance(token, str) else None

    def save(self, server: str, user: str, device: str, token: str) -> None:
        try:
            with self._locked():
                tokens = self._read()
                self._devices(tokens, server, user)[device] = token
                self._write(tokens)
        except OSError as exc:
            self._cannot_write(exc)

    def forget(self, server: str, user: str, device: str) -> None:
        try:
            with self._locked():
                tokens = self._read()
                if self._devices(tokens, server, user).pop(device, None) is not None:
                    self._write(tokens)
        except OSError as exc:
            self._cannot_write(exc)

    def _cannot_write(self, exc: OSError) -> None:
        # Without a saved token the client still works: it asks for the password next time.
        if not self._warned:
            self._warned = True
            log.warning("Cannot save the device token in %s: %s", self.path, exc.strerror or exc)

    @staticmethod
    def _devices(tokens: dict[str, Any], server: str, user: str) -> dict[str, Any]:
        """``tokens[server][user]``, made (or remade, when of another shape) as needed."""
        users = tokens.get(server)
        if not isinstance(users, dict):
            users = tokens[server] = {}
        devices = users.get(user.lower())
        if not isinstance(devices, dict):
            devices = users[user.lower()] = {}
        return devices

    def _read(self) -> dict[str, Any]:
        try:
            tokens = decode(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("Ignoring %s: expected JSON, but it does not parse", self.path)
            return {}
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("Cannot read %s: %s", self.path, exc.strerror or exc)
            return {}
        if not isinstance(tokens, dict):
            log.warning("Ignoring %s: expected a JSON object of tokens", self.path)
            return {}
        return tokens

    def _write(self, tokens: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        # Created 0600 from the start: the token is never readable by others, not even briefly.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(encode(tokens))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
