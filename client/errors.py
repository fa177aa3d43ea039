"""One error tree for the client: what can go wrong between a command and its reply."""

from __future__ import annotations

from typing import Any

from wire import ErrorCode


class ClientError(Exception):
    """Root of the errors the client reports to its user as one line."""


class RpcError(ClientError):
    """The server answered with a JSON-RPC error object {code, message, data?}."""

    def __init__(self, code: int, message: str, data: Any = None, method: str = "") -> None:
        super().__init__(f"{method}: {code} {message}" if method else f"{code} {message}")
        self.code = code
        self.message = message
        self.data = data
        self.method = method

    @property
    def error_code(self) -> ErrorCode | None:
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


class ConnectionLost(ClientError):
    """The connection closed before the reply came; the request may or may not have run."""


class Unreachable(ClientError):
    """No WebSocket connection could be opened to the server."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Cannot reach the messenger server at {url} ({reason})")
        self.url = url
        self.reason = reason


class SignedOut(ClientError):
    """The server no longer accepts this device's token (revoked, or unknown to it)."""


class UsageError(ClientError):
    """A command line that does not fit its command's arguments."""


class SignInFailed(ClientError):
    """Signing in did not work, for a reason a person can act on."""
