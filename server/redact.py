"""No secret in the operator log at any level: what a frame or header dump may show.

Secrets on the wire: passwords (``register``, ``login``), device tokens (``login``
params and results, ``Authorization: Bearer`` on ``GET /files``) and join links
(``chat.link`` results, ``chat.join`` params). A dump keeps the shape of a frame
(method, ids, lengths) and loses their values.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

SECRET_KEYS: Final = frozenset({"password", "token", "link"})
SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
REDACTED: Final = "<redacted>"
SHOWN_CHARS: Final = 200  # of a frame's JSON in a debug line


def redacted_json(data: bytes | str) -> str:
    """A JSON frame for a debug line: secret members replaced, at most ``SHOWN_CHARS``
    characters; anything that is not JSON only by its length."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return f"<{len(data)} bytes, not JSON>"
    text = orjson.dumps(_redact(value, 0)).decode()
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + f"... ({len(data)} bytes)"
    return text


def _redact(value: Any, depth: int) -> Any:
    if depth > 16:  # deeper than any real frame: do not walk it
        return "..."
    if isinstance(value, dict):
        return {
            key: REDACTED if key in SECRET_KEYS else _redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact(item, depth + 1) for item in value]
    return value


def redacted_header(name: str, value: str) -> str:
    return REDACTED if name.lower() in SECRET_HEADERS else value
