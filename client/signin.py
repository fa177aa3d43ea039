"""Signing in: the saved device token first, else the password, else an offer to register.

A device signs in with its password once; the token the server gives it is saved
(``tokens``) and later runs resume that device with ``login {user, token}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from client.connection import Session
from client.errors import RpcError, SignInFailed
from client.model import Json
from client.tokens import TokenStore
from wire import PASSWORD_MAX, PASSWORD_MIN, ErrorCode


class Prompter(Protocol):
    async def ask_password(self, prompt: str) -> str | None:
        """A password typed without echo, or None where nobody can be asked."""

    async def confirm(self, question: str) -> bool:
        """A yes or no; False where nobody can be asked."""


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """Which saved token is this run's: one per server, user and device name."""

    server: str  # host:port
    user: str
    name: str


async def sign_in(
    session: Session,
    device: Device,
    tokens: TokenStore,
    prompter: Prompter,
    notice: Callable[[str], None],
    *,
    password: str | None,
    register: bool,
) -> Json:
    """The ``login`` result of a signed-in session, or ``SignInFailed``/``RpcError``."""
    token = tokens.load(device.server, device.user, device.name)
    if token is not None:
        try:
            return await session.login({"user": device.user, "token": token})
        except RpcError as exc:
            if exc.code != ErrorCode.UNAUTHENTICATED:
                raise
            tokens.forget(device.server, device.user, device.name)
            notice(f"This device was signed out of {device.server}; signing in again.")
    # A password typed at a prompt may be typed again; one from the environment may not.
    asking = password is None
    while True:
        if asking:
            password = await prompter.ask_password(f"Password for {device.user}: ")
        if not password:
            raise SignInFailed(
                "No password: set MESSENGER_PASSWORD, or run in a terminal to type it"
            )
        result = await _sign_in_once(
            session, device, prompter, notice, password, register=register, again=asking
        )
        if result is not None:
            tokens.save(device.server, device.user, device.name, result["token"])
            return result
        if not asking:
            raise SignInFailed(
                f"Wrong password for {device.user}, or no such user (--register creates it)"
            )


async def _sign_in_once(
    session: Session,
    device: Device,
    prompter: Prompter,
    notice: Callable[[str], None],
    password: str,
    *,
    register: bool,
    again: bool,
) -> Json | None:
    """The ``login`` result, or None (said why through ``notice`` when ``again``:
    another password may be typed) to ask again."""
    login = {"user": device.user, "password": password, "device_name": device.name}
    # No user has such a password, nor may have one: not worth asking the server.
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        complaint = (
            f"Expected a password of {PASSWORD_MIN} to {PASSWORD_MAX} characters, "
            f"but it has {len(password)}."
        )
        if not again:
            raise SignInFailed(complaint)
        notice(complaint)
        return None
    if register:
        await _register(session, device.user, password)
    try:
        return await session.login(login)
    except RpcError as exc:
        if exc.code not in (ErrorCode.UNAUTHENTICATED, ErrorCode.NOT_FOUND):
            raise
        if register:
            raise SignInFailed(f"Wrong password for {device.user}: the name is taken") from exc
    if not await prompter.confirm(
        f"Wrong password, or no user {device.user} on {device.server}. Register {device.user}?"
    ):
        if again:
            notice("Then the password again (Ctrl-D gives up).")
        return None
    if await prompter.ask_password("The same password again: ") != password:
        notice("The passwords differ; nothing was registered. Again:")
        return None
    await _register(session, device.user, password)
    try:
        return await session.login(login)
    except RpcError as exc:
        if exc.code != ErrorCode.UNAUTHENTICATED:
            raise
        notice(f"The name {device.user} is taken, and that is not its password.")
        return None


async def _register(session: Session, user: str, password: str) -> None:
    try:
        await session.call("register", {"user": user, "password": password}, retry=False)
    except RpcError as exc:
        if exc.code != ErrorCode.CONFLICT:
            raise
        # Taken: perhaps by this very user, and the login that follows will tell.
