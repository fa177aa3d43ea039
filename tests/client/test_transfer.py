"""Where downloads go: a bare, harmless name from the server's, and never over a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.transfer import numbered, safe_name


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".bashrc", "bashrc"),
        ("..", "f1"),
        ("", "f1"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a right-to-left override would hide .exe
        ("bell\x07\x1b[2J.txt", "bell[2J.txt"),
        ('what?<is>:"this"|*.txt', "what__is___this___.txt"),
    ],
)
def test_a_name_from_the_server_becomes_a_bare_safe_name(name: str, safe: str) -> None:
    """No directories, no leading dot, no control or format characters."""
    assert safe_name(name, fallback="f1") == safe


def test_a_long_name_is_cut_but_keeps_its_extension() -> None:
    """Names stay under the file system's 255 bytes, even in multi-byte characters."""
    cut = safe_name("ж" * 300 + ".tar", fallback="f1")
    assert cut.endswith("ж.tar")
    assert len(cut.encode()) <= 240


def test_a_taken_name_gets_a_number() -> None:
    """``a.txt``, then ``a (1).txt``, ``a (2).txt``."""
    path = Path("/tmp/d/a.txt")
    assert [numbered(path, n).name for n in range(3)] == ["a.txt", "a (1).txt", "a (2).txt"]
