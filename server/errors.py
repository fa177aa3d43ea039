"""One error tree: every error a client can see is a ``MessengerError`` carrying its
JSON-RPC code (protocol-contract.md, "Error codes"); anything else is a bug and is
answered with -32603 without details."""

from __future__ import annotations

from typing import Any, ClassVar

from wire import ErrorCode


class MessengerError(Exception):
    """Root of the errors that reach a client as a JSON-RPC error object."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(MessengerError):
    code = ErrorCode.PARSE_ERROR


class InvalidRequest(MessengerError):
    code = ErrorCode.INVALID_REQUEST


class MethodNotFound(MessengerError):
    code = ErrorCode.METHOD_NOT_FOUND


class InvalidParams(MessengerError):
    code = ErrorCode.INVALID_PARAMS


class Unauthenticated(MessengerError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(MessengerError):
    code = ErrorCode.FORBIDDEN


class NotFound(MessengerError):
    code = ErrorCode.NOT_FOUND


class RateLimited(MessengerError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"retry_after": round(retry_after, 3)})
        self.retry_after = retry_after


class Banned(MessengerError):
    code = ErrorCode.BANNED

    def __init__(self, message: str, until: int) -> None:
        super().__init__(message, {"until": until})
        self.until = until


class TooLarge(MessengerError):
    code = ErrorCode.TOO_LARGE

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message, {"max": limit})
        self.limit = limit


class Conflict(MessengerError):
    code = ErrorCode.CONFLICT


class Unavailable(MessengerError):
    """Cluster mode: the shared log cannot be written now (protocol-contract.md v2)."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, {"retry_after": round(retry_after, 3)})
        self.retry_after = retry_after


class InternalError(MessengerError):
    code = ErrorCode.INTERNAL_ERROR
