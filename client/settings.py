"""Where the client's defaults come from, besides its command line: ``MESSENGER_URL``
(protocol-contract.md, "Command lines (v2)") and a config file.

The file is ``$XDG_CONFIG_HOME/messenger/config.toml`` (``~/.config`` when unset),
TOML with any of::

    url = "ws://chat.example.org:8000/"   # or host = "..." and port = 8000
    user = "alice"
    device = "laptop"
    bell = false                           # no terminal bell on mentions and DMs

A flag beats ``MESSENGER_URL``, which beats the file, which beats the defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Final, TypeVar

from client.errors import ClientError
from wire import DEVICE_NAME_MAX, USER_NAME_PATTERN

URL_VARIABLE: Final = "MESSENGER_URL"
T = TypeVar("T")


class BadSetting(ClientError):
    """A config file or ``MESSENGER_URL`` the client cannot use: one line, then exit."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """What the config file says; None where it says nothing."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    device: str | None = None
    bell: bool = True


def config_home() -> Path:
    value = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG Base Directory spec: a relative path is invalid and must be ignored.
    return Path(value) if os.path.isabs(value) else Path.home() / ".config"


def default_path() -> Path:
    return config_home() / "messenger" / "config.toml"


def parse_url(url: str, where: str = URL_VARIABLE) -> tuple[str, int]:
    """``(host, port)`` of ``ws://HOST:PORT/``; ``BadSetting`` for anything else."""
    expected = f"{where}: expected ws://HOST:PORT/, but got {url!r}"
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise BadSetting(expected) from None
    if parts.scheme != "ws" or not parts.hostname or parts.path not in ("", "/"):
        raise BadSetting(expected)
    if parts.query or parts.fragment or parts.username:
        raise BadSetting(expected)
    return parts.hostname, port or 80


def load(path: Path) -> Settings:
    """The settings in ``path``; none when there is no such file."""
    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except FileNotFoundError:
        return Settings()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadSetting(f"{path}: {exc}") from None
    return _settings(table, path)


def _settings(table: dict[str, Any], path: Path) -> Settings:
    known = {"url", "host", "port", "user", "device", "bell"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise BadSetting(f"{path}: expected keys {', '.join(sorted(known))}, but got {unknown[0]}")
    host: str | None = None
    port: int | None = None
    url = _typed(table, "url", str, path)
    if url is not None:
        host, port = parse_url(url, f"{path}: url")
    host = _typed(table, "host", str, path) or host
    given_port = _typed(table, "port", int, path)
    if given_port is not None:
        if not 1 <= given_port <= 65535:
            raise BadSetting(f"{path}: expected a port from 1 to 65535, but got {given_port}")
        port = given_port
    user = _typed(table, "user", str, path)
    if user is not None and not USER_NAME_PATTERN.fullmatch(user):
        raise BadSetting(f"{path}: expected user of 1-32 of A-Z a-z 0-9 _ . -, but got {user!r}")
    device = _typed(table, "device", str, path)
    if device is not None and not 1 <= len(device) <= DEVICE_NAME_MAX:
        raise BadSetting(f"{path}: expected a device name of 1-{DEVICE_NAME_MAX} characters")
    bell = _typed(table, "bell", bool, path)
    return Settings(host, port, user, device, True if bell is None else bell)


def _typed(table: dict[str, Any], key: str, kind: type[T], path: Path) -> T | None:
    value = table.get(key)
    # bool is an int to Python, not to a person writing "port = true".
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise BadSetting(f"{path}: expected {key} to be {kind.__name__}, but got {value!r}")
