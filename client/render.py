"""Everything the client shows, as lines: pure functions of wire objects and ``now``.

A ``Line`` is a list of ``(style, text)`` fragments, which is prompt_toolkit's
formatted text without the import; script mode joins the texts.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from client.errors import RpcError
from client.model import Chat, Json
from wire import ErrorCode

Line = list[tuple[str, str]]

# C0/C1 controls (and DEL) would let a message move the cursor or recolour the terminal.
_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_INDENT: Final = "    "


def plain(line: Line) -> str:
    return "".join(text for _, text in line)


def clean(text: str) -> str:
    """Text from other people, safe to put on a terminal."""
    return _CONTROLS.sub("\N{REPLACEMENT CHARACTER}", text.expandtabs(4))


def clock_time(ts: int, now: float, tz: datetime.tzinfo | None = None) -> str:
    """``14:02`` today, ``2024-11-23 14:02`` on another day (local time unless ``tz``)."""
    when = datetime.datetime.fromtimestamp(ts / 1000, tz)
    today = datetime.datetime.fromtimestamp(now, tz).date()
    return when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")


def duration(seconds: float) -> str:
    """A wait as a person reads it: ``45 s``, ``12 min``, ``3 h 59 min``."""
    whole = max(1, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = -(-whole // 60)  # rounded up: never promise a retry too early
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def message_ref(label: str, seq: int) -> str:
    """The short id commands accept: ``general#12``, ``@bob#3`` (``#12`` in the current chat)."""
    return f"{label}#{seq}"


def message_line(message: Json, label: str, now: float, tz: datetime.tzinfo | None = None) -> Line:
    """``14:02 general#12 bob: hello``; later lines of the text are indented."""
    text = clean(message["text"]).replace("\n", "\n" + _INDENT)
    line: Line = [
        ("class:time", clock_time(message["ts"], now, tz) + " "),
        ("class:ref", message_ref(label, message["seq"]) + " "),
        ("class:author", clean(message["author"])),
        ("", ": " + text),
    ]
    file = message.get("file")
    if file:
        line.append(("class:file", f" [file {clean(file['name'])}, {file['size']} bytes]"))
    if message.get("comments"):
        count = message["comments"]
        line.append(("class:dim", f" ({count} comment{'s' if count != 1 else ''})"))
    return line


def comment_line(comment: Json, ref: str, now: float, tz: datetime.tzinfo | None = None) -> Line:
    """``14:03 re general#12 carol: indeed``: a comment on the message ``ref`` names."""
    return [
        ("class:time", clock_time(comment["ts"], now, tz) + " "),
        ("class:ref", f"re {ref} "),
        ("class:author", clean(comment["author"])),
        ("", ": " + clean(comment["text"]).replace("\n", "\n" + _INDENT)),
    ]


def info(text: str) -> Line:
    return [("class:info", text)]


def read_line(chat: Chat) -> Line:
    """Another device (or client) of this user read a chat."""
    return info(f"{chat.label}: read up to #{chat.read_seq} elsewhere, {chat.unread} unread")


def unread_summary(chats: Iterable[Chat]) -> Line:
    counts = [f"{chat.label} {chat.unread}" for chat in chats if chat.unread]
    return info("Unread: " + ", ".join(counts) if counts else "No unread messages.")


def chat_lines(chats: Iterable[Chat], current: str | None) -> list[Line]:
    rows = sorted(chats, key=lambda chat: (chat.kind != "general", chat.label.casefold()))
    width = max((len(chat.label) for chat in rows), default=0)
    return [
        [
            ("class:info", "* " if chat.id == current else "  "),
            ("class:ref", clean(chat.label).ljust(width)),
            ("class:dim", f"  {chat.kind:<7} "),
            ("class:unread" if chat.unread else "class:dim", f" {chat.unread} unread"),
        ]
        for chat in rows
    ]


def device_lines(devices: Sequence[Json], this_device: str) -> list[Line]:
    lines: list[Line] = []
    for device in devices:
        name = clean(device.get("name") or device["device"])
        state = "online" if device.get("online") else "offline"
        mine = "  (this device)" if device["device"] == this_device else ""
        lines.append([("class:ref", name), ("class:dim", f"  {state}{mine}")])
    return lines


def event_line(
    method: str, params: Json, label: str, now: float, tz: datetime.tzinfo | None = None
) -> Line:
    """One line for the events that are not messages, comments or read markers."""
    if method == "scheduled":
        scheduled = params["scheduled"]
        at = clock_time(scheduled["send_at"], now, tz)
        return info(f"{label}: message scheduled for {at}: {clean(scheduled['text'])}")
    if method == "scheduled.cancelled":
        return info(f"Scheduled message {params['id']} cancelled")
    if method == "chat.joined":
        return info(f"You joined {label}")
    if method == "chat.join_request":
        return info(f"{clean(params['user'])} asks to join {label}")
    if method == "chat.declined":
        return info(f"Your request to join {label} was declined")
    if method == "banned":
        return [("class:error", f"You are banned until {clock_time(params['until'], now, tz)}")]
    shown = {key: value for key, value in params.items() if key != "cursor"}
    return info(f"{method}: {clean(str(shown))}")


def error_text(error: RpcError, now: float, tz: datetime.tzinfo | None = None) -> str:
    """One line a person understands, for each error code of the contract."""
    data: Any = error.data if isinstance(error.data, dict) else {}
    message = clean(error.message)
    code = error.error_code
    if code is ErrorCode.RATE_LIMITED and "retry_after" in data:
        wait: float = data["retry_after"]
        # Rounded up to the minute shown, like the duration: never too early.
        at = clock_time(math.ceil((now + wait) / 60) * 60_000, now, tz)
        return f"Rate limited: try again in {duration(wait)} (at {at})."
    if code is ErrorCode.BANNED and "until" in data:
        until: int = data["until"]
        left = duration(until / 1000 - now)
        return f"You are banned until {clock_time(until, now, tz)} ({left} from now)."
    if code is ErrorCode.TOO_LARGE and "max" in data:
        return f"Too large: the server takes at most {data['max']} bytes."
    if code is ErrorCode.METHOD_NOT_FOUND:
        return f"This server does not support {error.method or 'that'}."
    if code is ErrorCode.INTERNAL_ERROR:
        return "The server failed on that request (internal error); try again."
    lead = (
        {
            ErrorCode.UNAUTHENTICATED: "Not signed in",
            ErrorCode.FORBIDDEN: "Not allowed",
            ErrorCode.NOT_FOUND: "Not found",
            ErrorCode.CONFLICT: "Conflict",
            ErrorCode.INVALID_PARAMS: "Invalid",
            ErrorCode.RATE_LIMITED: "Rate limited",
            ErrorCode.BANNED: "Banned",
            ErrorCode.TOO_LARGE: "Too large",
        }.get(code)
        if code is not None
        else None
    )
    return f"{lead}: {message}" if lead else f"Server error {error.code}: {message}"
