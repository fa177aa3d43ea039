"""Where the client's server and user come from: flags, ``MESSENGER_URL``, the config file."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from client.cli import options_from, parse_args
from client.settings import BadSetting, Settings, load, parse_url
from server.app import Running
from tests.client.support import PASSWORD

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://chat.example.org:8000/", ("chat.example.org", 8000)),
        ("ws://127.0.0.1:9", ("127.0.0.1", 9)),
        ("ws://[::1]:8000/", ("::1", 8000)),
        ("ws://chat.example.org/", ("chat.example.org", 80)),
    ],
)
def test_a_server_url_gives_host_and_port(url: str, expected: tuple[str, int]) -> None:
    """``ws://HOST:PORT/`` as the contract writes it; IPv6 in brackets; port 80 by default."""
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://host:8000/", "ws://host:99999/", "ws://host:x/", "ws://:8000/", "ws://h:1/a"]
)
def test_a_url_that_is_not_a_server_is_one_clear_error(url: str) -> None:
    """Another scheme, a bad port, no host, a path: "expected ws://HOST:PORT/"."""
    with pytest.raises(BadSetting, match=r"MESSENGER_URL: expected ws://HOST:PORT/, but got"):
        parse_url(url)


def test_the_config_file_gives_defaults_and_a_flag_or_the_url_beats_it(tmp_path: Path) -> None:
    """File < MESSENGER_URL < flags, for the server; the file's user when none is given."""
    path = tmp_path / "config.toml"
    path.write_text(
        'url = "ws://file.example:7000/"\nuser = "alice"\ndevice = "den"\nbell = false\n'
    )
    settings = load(path)
    assert settings == Settings("file.example", 7000, "alice", "den", bell=False)

    options = options_from(parse_args([]), {}, settings)
    assert (options.host, options.port, options.user, options.device) == (
        "file.example",
        7000,
        "alice",
        "den",
    )
    assert not options.bell
    options = options_from(parse_args([]), {"MESSENGER_URL": "ws://env.example:7001/"}, settings)
    assert (options.host, options.port) == ("env.example", 7001)
    options = options_from(
        parse_args(["--port", "7002", "--user", "bob"]),
        {"MESSENGER_URL": "ws://env.example:7001/"},
        settings,
    )
    assert (options.host, options.port, options.user) == ("env.example", 7002, "bob")
    assert load(tmp_path / "none.toml") == Settings()
    with pytest.raises(BadSetting, match="Expected --user NAME"):
        options_from(parse_args([]), {}, Settings())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("url = ", "config.toml: "),
        ("port = true", "expected port to be int, but got True"),
        ("port = 0", "expected a port from 1 to 65535, but got 0"),
        ('user = "no spaces"', "expected user of 1-32 of"),
        ('colour = "red"', "but got colour"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(tmp_path: Path, text: str, error: str) -> None:
    """Not TOML, a wrong type, a value out of range, an unknown key: the file and why."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(BadSetting, match=str(path)) as raised:
        load(path)
    assert error in str(raised.value)


async def test_the_client_finds_its_server_in_messenger_url_and_its_user_in_the_file(
    running_server: Running, tmp_path: Path
) -> None:
    """``messenger-client`` with no flags: MESSENGER_URL and config.toml say it all; a bad
    MESSENGER_URL is one line and exit status 2."""
    (tmp_path / "messenger").mkdir()
    (tmp_path / "messenger" / "config.toml").write_text('user = "alice"\n')
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path),
        "MESSENGER_PASSWORD": PASSWORD,
        "MESSENGER_URL": f"ws://127.0.0.1:{running_server.port}/",
    }

    async def client(*args: str, **changes: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client",
            *args,
            cwd=REPO,
            env={**env, **changes},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(b"/history\n"), 30)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    status, _, err = await client("--register")
    assert status == 0, err
    assert f"Signed in as alice on ws://127.0.0.1:{running_server.port}/" in err
    status, _, err = await client(MESSENGER_URL="http://nowhere/")
    assert status == 2
    assert (
        err
        == "messenger-client: MESSENGER_URL: expected ws://HOST:PORT/, but got 'http://nowhere/'\n"
    )
