"""The server side of the web client, without a browser: the page and its assets
with their headers, the Origin check on WebSocket upgrades, signed file URLs, and
the rules the client's code keeps (text never parsed as HTML, no eval)."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from server.app import Running, run_server
from server.cli import parse_args
from server.webclient import CONTENT_SECURITY_POLICY, WEB_DIR, origin_allowed
from tests.server.extras_support import Clock, config_in, error_of, http_get
from tests.server.test_files import upload
from tests.wsclient import Peer, user_device


async def test_page_is_served_at_root_with_a_strict_policy(running_server: Running) -> None:
    """GET / (no upgrade) is the client's HTML, with a CSP that forbids inline script
    and eval, and revalidation by ETag (304 when unchanged)."""
    reply = await http_get(running_server, "/")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/assets/app.js">' in reply.body
    policy = reply.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in policy
    assert "unsafe" not in policy
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers["x-content-type-options"] == "nosniff"
    again = await http_get(running_server, "/", {"If-None-Match": reply.headers["etag"]})
    assert (again.status, again.body) == (304, b"")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/protocol.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ],
)
async def test_assets_have_their_content_types(
    running_server: Running, path: str, content_type: str
) -> None:
    """Each asset is served with its own content type and the same policy headers."""
    reply = await http_get(running_server, path)
    assert (reply.status, reply.headers["content-type"]) == (200, content_type)
    assert reply.body == (WEB_DIR / path.removeprefix("/assets/")).read_bytes()
    assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "path", ["/assets/", "/assets/nope.js", "/assets/../app.py", "/index.html"]
)
async def test_unknown_assets_are_404(running_server: Running, path: str) -> None:
    """Only the shipped files are served: nothing else under /assets/, no path tricks."""
    assert (await http_get(running_server, path)).status == 404


async def upgrade_status(running: Running, origin: str | None, host: str | None = None) -> int:
    """101 when a WebSocket from ``origin`` is accepted, else the HTTP status; ``host``
    is the name the client addressed (its Host header)."""
    try:
        async with connect(
            f"ws://{host}/" if host else running.url,
            host=running.host,
            port=running.port,
            origin=None if origin is None else Origin(origin),
        ):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_upgrade_from_another_origin_is_refused(running_server: Running) -> None:
    """A page of another site cannot open a WebSocket (403); the server's own origin,
    over http or https (a TLS proxy), and clients that send no Origin can."""
    own = f"{running_server.host}:{running_server.port}"
    assert await upgrade_status(running_server, "https://evil.example") == 403
    assert await upgrade_status(running_server, "null") == 403
    assert await upgrade_status(running_server, f"http://{own}.evil.example") == 403
    assert await upgrade_status(running_server, f"http://{own}") == 101
    assert await upgrade_status(running_server, "https://chat.example", "chat.example") == 101
    assert await upgrade_status(running_server, None) == 101


async def test_allowed_origins_may_connect(tmp_path: Path) -> None:
    """--allowed-origin lets pages of the listed origins in, and no others."""
    config = config_in(tmp_path, allowed_origins=("https://app.example",))
    async with run_server(config) as running:
        assert await upgrade_status(running, "https://app.example") == 101
        assert await upgrade_status(running, "https://APP.example/") == 101
        assert await upgrade_status(running, "https://app.example:8443") == 403


def test_allowed_origin_flag_is_repeatable_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    """--allowed-origin may be given many times; a value not an origin is a usage error."""
    config = parse_args(
        ["--allowed-origin", "https://A.example", "--allowed-origin", "http://b:81"]
    )
    assert config.allowed_origins == ("https://a.example", "http://b:81")
    with pytest.raises(SystemExit) as usage:
        parse_args(["--allowed-origin", "https://a.example/path"])
    assert usage.value.code == 2
    assert "expected an origin with no path" in capsys.readouterr().err


def test_origin_rules() -> None:
    """The same host and port as the Host header, or a listed origin; nothing else."""
    assert origin_allowed("http://h:1", "h:1", ())
    assert origin_allowed("https://H:1", "h:1", ())
    assert not origin_allowed("http://h:2", "h:1", ())
    assert not origin_allowed("http://h:1", None, ())
    assert origin_allowed("http://x", None, ("http://x",))
    assert not origin_allowed("file://", "h", ())


# -- file.url ---------------------------------------------------------------------------


async def file_url(peer: Peer, file_id: str) -> tuple[str, int]:
    result = await peer.call("file.url", file=file_id)
    return result["url"], result["expires_at"]


async def test_file_url_downloads_with_a_plain_get_until_it_expires(tmp_path: Path) -> None:
    """file.url gives /files/{id}?... that a GET without Authorization downloads, for
    10 minutes; then, tampered with, or for another file, it is 404."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path, upload_chunk_size=64), clock) as running,
        user_device(running.url, "alice") as alice,
    ):
        content = bytes(range(256)) * 3
        file = await upload(alice, content)
        other = await upload(alice, b"other bytes", name="other.txt")
        url, expires_at = await file_url(alice, file["id"])
        assert url.startswith(f"/files/{file['id']}?")
        assert expires_at == clock.now + 600_000
        reply = await http_get(running, url)
        assert (reply.status, reply.body) == (200, content)
        assert reply.headers["content-type"] == "image/png"
        assert reply.headers["content-security-policy"] == "sandbox; default-src 'none'"
        assert reply.headers["x-content-type-options"] == "nosniff"
        path, _, query = url.partition("?")
        fields = urllib.parse.parse_qs(query)
        forged = {**fields, "expires": [str(expires_at + 60_000)]}
        for bad in (
            f"/files/{other['id']}?{query}",
            f"{path}?{urllib.parse.urlencode(forged, doseq=True)}",
            f"{path}?{query.replace(fields['sig'][0], fields['sig'][0][::-1])}",
            f"{path}?{query}&sig=again",
            f"{path}?user=alice",
        ):
            assert (await http_get(running, bad)).status == 404, bad
        clock.advance(599)
        assert (await http_get(running, url)).status == 200
        clock.advance(1)
        assert (await http_get(running, url)).status == 404


async def test_file_url_is_for_visible_files_and_dies_with_the_device(tmp_path: Path) -> None:
    """file.url of a file one cannot see is -32003; a URL stops working once its
    device is logged out, or once its user can no longer see the file."""
    async with (
        run_server(config_in(tmp_path, upload_chunk_size=64)) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        file = await upload(alice, b"secret")
        assert (await error_of(bob, "file.url", file=file["id"])).code == -32003
        group = (await alice.call("chat.create", title="g"))["chat"]["id"]
        await alice.call("chat.invite", chat=group, user="bob")
        await alice.call("send", chat=group, text="", file=file["id"])
        url, _ = await file_url(bob, file["id"])
        assert (await http_get(running, url)).body == b"secret"
        await bob.call("chat.leave", chat=group)
        assert (await http_get(running, url)).status == 404
        mine, _ = await file_url(alice, file["id"])
        await alice.call("logout")
        assert (await http_get(running, mine)).status == 404


# -- the client's code ----------------------------------------------------------------------

SCRIPTS = sorted(WEB_DIR.glob("*.js"))
PURE_MODULES = ("protocol.js", "model.js", "text.js")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_client_never_parses_text_as_html_or_code(script: Path) -> None:
    """No innerHTML, outerHTML, insertAdjacentHTML, document.write, eval or Function:
    every text goes into the page as text (the CSP would block eval anyway)."""
    source = script.read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
    ):
        assert sink not in source, f"{script.name} uses {sink}"


@pytest.mark.parametrize("name", PURE_MODULES)
def test_protocol_and_model_have_no_dom(name: str) -> None:
    """protocol.js, model.js and text.js use no document or window: no DOM in them."""
    source = (WEB_DIR / name).read_text()
    assert not re.search(r"\b(document|window)\.", source), name
