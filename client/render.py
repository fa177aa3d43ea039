"""Everything the client shows, as lines: pure functions of wire objects and ``now``.

A ``Line`` is a list of ``(style, text)`` fragments, which is prompt_toolkit's
formatted text without the import; script mode joins the texts.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from client.errors import RpcError
from client.model import Chat, ChatId, Json, clean

__all__ = ["clean"]
from wire import ErrorCode

Line = list[tuple[str, str]]

_INDENT: Final = "    "
SHORT_ID: Final = 6


def plain(line: Line) -> str:
    return "".join(text for _, text in line)


def clock_time(ts: int, now: float, tz: datetime.tzinfo | None = None) -> str:
    """``14:02`` today, ``2024-11-23 14:02`` on another day (local time unless ``tz``)."""
    when = datetime.datetime.fromtimestamp(ts / 1000, tz)
    today = datetime.datetime.fromtimestamp(now, tz).date()
    return when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")


def duration(seconds: float) -> str:
    """A wait as a person reads it: ``45 s``, ``12 min 5 s``, ``3 h 59 min``; rounded
    up to the unit shown, never promising too early a retry."""
    whole = max(1, math.ceil(seconds - 0.001))  # a hair over (float error) is not a second
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(-(-whole // 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def clock_time_at(seconds: float, now: float, tz: datetime.tzinfo | None = None) -> str:
    """``04:45`` on the minute, ``04:45:30`` otherwise: when a wait ends, to the nearest
    second (the reply took a moment to come: a window that ends at 04:45:00 is seen
    from a few ms later, and must not read 04:45:01)."""
    whole = math.floor(seconds + 0.5)
    shown = clock_time(whole * 1000, now, tz)
    return shown if whole % 60 == 0 else shown + f":{whole % 60:02d}"


def size_text(size: int) -> str:
    """``812 bytes``, ``4.2 KiB``, ``5 MiB`` (no ``.0``)."""
    if size < 1024:
        return "1 byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


def short_id(scheduled_id: str) -> str:
    """The part of a scheduled message's id that /cancel takes and lines show."""
    return scheduled_id[:SHORT_ID]


def message_ref(label: str, seq: int) -> str:
    """The short id commands accept: ``general#12``, ``@bob#3`` (``#12`` in the current chat)."""
    return f"{label}#{seq}"


def message_line(
    message: Json,
    label: str,
    now: float,
    tz: datetime.tzinfo | None = None,
    marked: bool = False,
) -> Line:
    """``14:02 general#12 bob: hello``; later lines of the text are indented; a mention
    or a direct message (``marked``) stands out."""
    text = clean(message["text"]).replace("\n", "\n" + _INDENT)
    line: Line = [
        ("class:time", clock_time(message["ts"], now, tz) + " "),
        ("class:ref", message_ref(label, message["seq"]) + " "),
        ("class:mention" if marked else "class:author", clean(message["author"])),
        ("class:mention" if marked else "", ": " + text),
    ]
    file = message.get("file")
    if file:
        ref = message_ref(label, message["seq"])
        space = " " if text else ""  # a file sent without text
        line.append(
            ("class:file", f"{space}[file {clean(file['name'])}, {size_text(file['size'])}")
        )
        line.append(("class:dim", f": /get {ref}]"))
    if message.get("comments"):
        count = message["comments"]
        line.append(("class:dim", f" ({count} comment{'s' if count != 1 else ''})"))
    if message.get("edited_at"):
        line.append(("class:dim", " (edited)"))
    return line


def removed_line(ref: str) -> Line:
    """A message deleted by its author (or the group's owner): its text is gone."""
    return [("class:ref", ref + " "), ("class:dim", "[message removed]")]


def presence_line(
    user: str, online: bool, last_seen: int | None, now: float, tz: datetime.tzinfo | None
) -> Line:
    """``bob is online`` / ``bob is offline, last seen 14:02`` / ``bob: never seen``."""
    name = clean(user)
    if online:
        return [("class:ref", name), ("class:info", " is online")]
    if last_seen is None:
        return [("class:ref", name), ("class:dim", " is offline, never seen")]
    seen = clock_time(last_seen, now, tz)
    return [("class:ref", name), ("class:dim", f" is offline, last seen {seen}")]


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


def chat_lines(
    chats: Iterable[Chat], current: str | None, online: Callable[[Chat], bool] = lambda _: False
) -> list[Line]:
    """/chats: each chat, its kind, unread count (and mentions), who is online."""
    rows = sorted(chats, key=lambda chat: (chat.kind != "general", chat.label.casefold()))
    width = max((len(chat.label) for chat in rows), default=0)
    lines: list[Line] = []
    for chat in rows:
        line: Line = [
            ("class:info", "* " if chat.id == current else "  "),
            ("class:ref", clean(chat.label).ljust(width)),
            ("class:dim", f"  {chat.kind:<7} "),
            ("class:unread" if chat.unread else "class:dim", f" {chat.unread} unread"),
        ]
        if chat.mentions:
            line.append(("class:mention", f", {chat.mentions} mentioning you"))
        if online(chat):
            line.append(("class:info", "  online"))
        lines.append(line)
    return lines


def device_lines(devices: Sequence[Json], this_device: str) -> list[Line]:
    """One row a device, its name, online or not, and which is this one, in columns."""
    names = [clean(device.get("name") or device["device"]) for device in devices]
    width = max(map(len, names), default=0)
    lines: list[Line] = []
    for name, device in zip(names, devices, strict=True):
        state = "online" if device.get("online") else "offline"
        if device["device"] == this_device:
            state = f"{state:<7}  (this device)"
        lines.append([("class:ref", name.ljust(width)), ("class:dim", f"  {state}")])
    return lines


def scheduled_line(
    scheduled: Json, label: str, now: float, tz: datetime.tzinfo | None = None
) -> Line:
    """``Scheduled 3f9a2c for 14:30 in general: see you (/cancel 3f9a2c)``."""
    short = short_id(scheduled["id"])
    line: Line = [
        ("class:info", f"Scheduled {short} for {clock_time(scheduled['send_at'], now, tz)} "),
        ("class:info", f"in {clean(label)}: "),
        ("", clean(scheduled["text"]).replace("\n", "\n" + _INDENT)),
    ]
    file = scheduled.get("file")
    if file:
        line.append(("class:file", f" [file {clean(file['name'])}, {size_text(file['size'])}]"))
    line.append(("class:dim", f" (/cancel {short})"))
    return line


def scheduled_rows(
    pending: Sequence[tuple[Json, str]], now: float, tz: datetime.tzinfo | None
) -> list[Line]:
    """/scheduled, each ``(scheduled, label)`` a row in columns: short id, when, where, what."""
    times = [clock_time(scheduled["send_at"], now, tz) for scheduled, _ in pending]
    labels = [clean(label) + ":" for _, label in pending]
    time_width = max(map(len, times), default=0)
    label_width = max(map(len, labels), default=0)
    rows: list[Line] = []
    for (scheduled, _), at, label in zip(pending, times, labels, strict=True):
        line: Line = [
            ("class:ref", short_id(scheduled["id"]) + "  "),
            ("class:time", at.ljust(time_width) + "  "),
            ("class:ref", label.ljust(label_width) + " "),
            ("", clean(scheduled["text"]).replace("\n", "\n" + _INDENT)),
        ]
        file = scheduled.get("file")
        if file:
            name, size = clean(file["name"]), size_text(file["size"])
            line.append(("class:file", f" [file {name}, {size}]"))
        rows.append(line)
    return rows


def cancelled_line(scheduled_id: str) -> Line:
    return info(f"Scheduled message {short_id(scheduled_id)} cancelled.")


def joined_line(label: str, owner: str | None, me: str) -> Line:
    """A group joined: by invitation, approval, or by creating it."""
    label = clean(label)
    if owner is not None and owner.lower() == me.lower():
        return info(
            f"You created {label}: /invite {label} @user adds someone, "
            f"/link {label} makes a join link."
        )
    whose = f" ({clean(owner)}'s group)" if owner else ""
    return info(f"You are now in {label}{whose}: /open {label} to read and write there.")


def join_request_line(label: str, user: str) -> Line:
    label, user = clean(label), clean(user)
    return info(
        f"{user} asks to join {label}: /approve {label} @{user} or /decline {label} @{user}"
    )


def declined_line(label: str) -> Line:
    return info(f"Your request to join {clean(label)} was declined.")


def left_line(label: str, now_in: str | None = None) -> Line:
    """A group left; ``now_in``: where plain text goes now, when it was the open chat."""
    where = f"; you are now in {clean(now_in)}" if now_in else ""
    return info(f"You are no longer in {clean(label)}{where}.")


def member_line(label: str, user: str, joined: bool) -> Line:
    """``carol joined +club.`` / ``carol left +club.``: news of another member."""
    did = "joined" if joined else "left"
    return info(f"{clean(user)} {did} {clean(label)}.")


def group_label(title: str | None) -> str:
    """A group one is not in, named by its title as a label (``+Book_Club``)."""
    return Chat(ChatId("?"), "group", title).label if title else "a group"


def new_messages_line() -> Line:
    """Where the unread messages of a chat begin, when it is opened."""
    return [("class:unread", "--- new messages ---")]


def status_line(chats: Sequence[Chat], current: str | None, connected: bool, queued: int) -> Line:
    """The console's bottom line: each chat with its number (Alt-1..9), the open one
    marked, unread counts (mentions and direct messages stand out), the connection."""
    line: Line = []
    for number, chat in enumerate(chats, start=1):
        if chat.id != current and not chat.unread:
            continue
        attention = chat.mentions or (chat.kind == "direct" and chat.unread)
        style = "class:status.current" if chat.id == current else "class:status"
        line.append((style, f" {number}:{chat.label}"))
        if chat.unread and chat.id != current:
            count = f" {chat.unread}" + (f" ({chat.mentions} @)" if chat.mentions else "")
            line.append(("class:status.attention" if attention else "class:status.unread", count))
    if not connected:
        waiting = f", {queued} queued" if queued else ""
        line.append(("class:status.offline", f"  reconnecting\N{HORIZONTAL ELLIPSIS}{waiting}"))
    elif queued:
        line.append(("class:status", f"  {queued} queued"))
    return line


def request_rows(
    requests: Sequence[Json], label: str, now: float, tz: datetime.tzinfo | None
) -> list[Line]:
    """/requests in columns: who asks, since when, and how to answer."""
    users = [clean(request["user"]) for request in requests]
    times = [clock_time(request["ts"], now, tz) for request in requests]
    user_width = max(map(len, users), default=0)
    time_width = max(map(len, times), default=0)
    label = clean(label)
    return [
        [
            ("class:author", user.ljust(user_width)),
            ("class:time", f"  asked {at.ljust(time_width)}  "),
            ("class:dim", f"/approve {label} @{user} or /decline {label} @{user}"),
        ]
        for user, at in zip(users, times, strict=True)
    ]


def members_line(label: str, owner: str | None, members: Sequence[str]) -> Line:
    """``book_club: alice (owner), bob, carol``."""
    names = [
        clean(name) + (" (owner)" if owner and name.lower() == owner.lower() else "")
        for name in members
    ]
    count = f"{len(names)} member{'s' if len(names) != 1 else ''}"
    return [("class:ref", clean(label)), ("", f": {count}: {', '.join(names)}")]


def banned_line(until: int, now: float, tz: datetime.tzinfo | None = None) -> Line:
    left = duration(until / 1000 - now)
    return [
        (
            "class:error",
            f"You are banned until {clock_time(until, now, tz)} ({left} from now): "
            "you cannot send or comment until then.",
        )
    ]


def event_line(method: str, params: Json) -> Line:
    """An event this client does not know (a newer server's): shown as it came."""
    shown = {key: value for key, value in params.items() if key != "cursor"}
    return info(f"{clean(method)}: {clean(str(shown))}")


def error_text(error: RpcError, now: float, tz: datetime.tzinfo | None = None) -> str:
    """One line a person understands, for each error code of the contract."""
    data: Any = error.data if isinstance(error.data, dict) else {}
    message = clean(error.message)
    code = error.error_code
    if code is ErrorCode.RATE_LIMITED and "retry_after" in data:
        wait: float = data["retry_after"]
        # To the second, rounded up like the duration: never too early.
        at = clock_time_at(now + wait, now, tz)
        return f"Rate limited: try again in {duration(wait)} (at {at})."
    if code is ErrorCode.BANNED and "until" in data:
        until: int = data["until"]
        left = duration(until / 1000 - now)
        return f"You are banned until {clock_time(until, now, tz)} ({left} from now)."
    if code is ErrorCode.TOO_LARGE and "max" in data:
        return f"Too large: the server takes at most {size_text(data['max'])}."
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
