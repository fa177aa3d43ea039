"""What the server and the client both know of the wire (protocol-contract.md).

Nothing here does I/O: constants, error codes and the JSON codec, so that
``server`` and ``client`` never import each other.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import orjson

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEVICE_NAME_MAX",
    "FRAME_LIMIT",
    "GENERAL_CHAT",
    "HISTORY_MAX",
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "TEXT_MAX",
    "UNLOGGED_EVENTS",
    "USER_NAME_PATTERN",
    "ErrorCode",
    "decode",
    "encode",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
FRAME_LIMIT = 2**20
GENERAL_CHAT = "general"
USER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
TEXT_MAX = 4096
HISTORY_MAX = 100  # most messages one history call returns
DEVICE_NAME_MAX = 64
# Events that are not in the log (protocol.md 14.4): they carry the cursor of the last
# event told, take none of their own, are never resumed, and must not be dropped as
# "already seen" by a client that skips events whose cursor it has seen.
UNLOGGED_EVENTS = frozenset({"presence"})


class ErrorCode(enum.IntEnum):
    """JSON-RPC 2.0 error codes (section 5.1) and the messenger's own."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    UNAUTHENTICATED = -32001
    FORBIDDEN = -32002
    NOT_FOUND = -32003
    RATE_LIMITED = -32004
    BANNED = -32005
    TOO_LARGE = -32006
    CONFLICT = -32007
    UNAVAILABLE = -32008


def encode(value: Any) -> bytes:
    """UTF-8 JSON, as sent in a text frame."""
    return orjson.dumps(value)


def decode(frame: str | bytes) -> Any:
    """Parse one frame; raises ``orjson.JSONDecodeError`` (a ``ValueError``)."""
    return orjson.loads(frame)
