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
from wire import ErrorCode


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
    if password is None:
        password = await prompter.ask_password(f"Password for {device.user}: ")
    if not password:
        raise SignInFailed("No password: set MESSENGER_PASSWORD, or run in a terminal to type it")
    login = {"user": device.user, "password": password, "device_name": device.name}
    if register:
        await _register(session, device.user, password)
    try:
        result = await session.login(login)
    except RpcError as exc:
        if exc.code not in (ErrorCode.UNAUTHENTICATED, ErrorCode.NOT_FOUND):
            raise
        if register:
            raise SignInFailed(f"Wrong password for {device.user}: the name is taken") from exc
        if not await prompter.confirm(
            f"Wrong password, or no user {device.user} on {device.server}. Register {device.user}?"
        ):
            raise SignInFailed(
                f"Wrong password for {device.user}, or no such user (--register creates it)"
            ) from exc
        if await prompter.ask_password("The same password again: ") != password:
            raise SignInFailed("The passwords differ; nothing was registered") from exc
        await _register(session, device.user, password)
        try:
            result = await session.login(login)
        except RpcError as again:
            if again.code != ErrorCode.UNAUTHENTICATED:
                raise
            raise SignInFailed(f"Wrong password for {device.user}: the name is taken") from again
    tokens.save(device.server, device.user, device.name, result["token"])
    return result


async def _register(session: Session, user: str, password: str) -> None:
    try:
        await session.call("register", {"user": user, "password": password}, retry=False)
    except RpcError as exc:
        if exc.code != ErrorCode.CONFLICT:
            raise
        # Taken: perhaps by this very user, and the login that follows will tell.
