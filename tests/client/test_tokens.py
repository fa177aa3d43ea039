"""Saved device tokens: per server, user and device, readable by the owner only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from client.tokens import TokenStore, default_path


def test_a_token_is_kept_per_server_user_and_device(tmp_path: Path) -> None:
    """Another server, user or device name is another token; user names ignore case."""
    store = TokenStore(tmp_path / "messenger" / "tokens.json")
    store.save("h:1", "Alice", "laptop", "t1")
    store.save("h:1", "alice", "phone", "t2")
    store.save("h:2", "alice", "laptop", "t3")
    assert store.load("h:1", "ALICE", "laptop") == "t1"
    assert store.load("h:1", "alice", "phone") == "t2"
    assert store.load("h:2", "alice", "laptop") == "t3"
    assert store.load("h:1", "bob", "laptop") is None
    store.forget("h:1", "alice", "laptop")
    assert store.load("h:1", "alice", "laptop") is None
    assert store.load("h:1", "alice", "phone") == "t2"


def test_the_token_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """File mode 0600 in a 0700 directory."""
    path = tmp_path / "messenger" / "tokens.json"
    TokenStore(path).save("h:1", "alice", "laptop", "t1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_damaged_file_counts_as_no_tokens(tmp_path: Path) -> None:
    """A file that does not parse means a password login, not a crash."""
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    assert TokenStore(path).load("h:1", "alice", "laptop") is None


def test_the_file_lives_in_the_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_CONFIG_HOME when absolute, else ~/.config (the XDG Base Directory spec)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_path() == tmp_path / "messenger" / "tokens.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".config" / "messenger" / "tokens.json"


def test_a_file_of_another_shape_or_a_directory_is_no_crash(tmp_path: Path) -> None:
    """JSON of another shape counts as no tokens; a path that cannot be written is skipped."""
    path = tmp_path / "tokens.json"
    path.write_text('{"h:1": "x"}')
    store = TokenStore(path)
    assert store.load("h:1", "alice", "laptop") is None
    store.save("h:1", "alice", "laptop", "t1")
    assert store.load("h:1", "alice", "laptop") == "t1"
    blocked = TokenStore(tmp_path / "directory")
    blocked.path.mkdir()
    blocked.save("h:1", "alice", "laptop", "t1")  # a warning, not an exception
    assert blocked.load("h:1", "alice", "laptop") is None
