"""Passwords, device tokens and the throttle on failed logins.

Passwords are hashed with scrypt (memory-hard; RFC 7914) and compared in constant
time; callers run ``hash_password`` and ``verify_password`` off the event loop.
A token is 256 random bits given to the device once; only its SHA-256 is kept.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Iterator

SCRYPT_R = 8
SCRYPT_P = 1
_KEY_LEN = 32


def hash_password(password: str, n: int) -> str:
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    return hmac.compare_digest(actual, _unb64(key))


def new_token() -> tuple[str, str]:
    """A fresh device token and the hash under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=_KEY_LEN
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclasses.dataclass(slots=True)
class _Failures:
    count: int
    blocked_until: float


class LoginThrottle:
    """Failed password logins per user name: after ``free`` failures, each further one
    blocks that name for ``backoff`` seconds, doubling up to ``ceiling``.

    Attempts still being checked count too: ``free`` of them at once for one name, so
    that many parallel guesses cannot all start before the first failure is known.

    Bounded: at most ``capacity`` names are tracked; the oldest entries go first.
    """

    def __init__(
        self, free: int, backoff: float, ceiling: float = 900.0, capacity: int = 100_000
    ) -> None:
        self.free = free
        self.backoff = backoff
        self.ceiling = ceiling
        self.capacity = capacity
        self._failures: dict[str, _Failures] = {}
        self._checking: collections.Counter[str] = collections.Counter()

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        if self._checking[key] >= self.free:
            return self.backoff
        failures = self._failures.get(key)
        return 0.0 if failures is None else max(0.0, failures.blocked_until - now)

    @contextlib.contextmanager
    def checking(self, key: str) -> Iterator[None]:
        """Around the password check of one attempt."""
        self._checking[key] += 1
        try:
            yield
        finally:
            self._checking[key] -= 1
            if not self._checking[key]:
                del self._checking[key]

    def failed(self, key: str, now: float) -> None:
        failures = self._failures.pop(key, None) or _Failures(0, now)
        failures.count += 1
        excess = failures.count - self.free
        if excess >= 0:
            failures.blocked_until = now + min(self.ceiling, self.backoff * 2**excess)
        self._failures[key] = failures  # re-inserted: dict order is oldest activity first
        if len(self._failures) > self.capacity:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
