"""The web client: its static files (``server/web/``, shipped inside the package)
as HTTP responses, and which pages may open a WebSocket to this server.

Every file is read once at start and served from memory with an ``ETag`` and
``Cache-Control: no-cache`` (the browser revalidates, so a new server version is
picked up at the next load; there are no hashed file names without a build step).
Every response carries a Content-Security-Policy that allows scripts, styles and
connections of this origin only: no inline script, no ``eval``, nothing framed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
from pathlib import Path
from typing import Final

WEB_DIR: Final = Path(__file__).parent / "web"
ASSETS_PREFIX: Final = "/assets/"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}

# 'self' in connect-src covers ws:// and wss:// to this host (CSP Level 3, 6.7.2.4).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Asset:
    content_type: str
    body: bytes
    etag: str

    def headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache", "ETag": self.etag, **SECURITY_HEADERS}


def load_assets(directory: Path = WEB_DIR) -> dict[str, Asset]:
    """URL path -> asset: ``/`` is ``index.html``, the rest is under ``/assets/``."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if not path.is_file() or content_type is None:
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        relative = path.relative_to(directory).as_posix()
        url = "/" if relative == "index.html" else ASSETS_PREFIX + relative
        assets[url] = Asset(content_type, body, etag)
    return assets


def normalize_origin(text: str) -> str:
    """``scheme://host[:port]`` in lower case, the form browsers send in ``Origin``
    (RFC 6454 section 6.1); ValueError for anything else."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an origin like https://chat.example.org, but got {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected an origin with no path, but got {text!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def origin_allowed(origin: str, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a page of ``origin`` may open a WebSocket here: it is this server as
    the browser addressed it (``Host``), over http or https (a TLS proxy in front),
    or it is listed in ``--allowed-origin``."""
    try:
        origin = normalize_origin(origin)
    except ValueError:  # "null" (a sandboxed page, a file://), or garbage
        return False
    if origin in allowed:
        return True
    if host is None:
        return False
    return origin in (f"http://{host.lower()}", f"https://{host.lower()}")
