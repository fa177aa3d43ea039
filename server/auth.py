"""Passwords, device tokens, the throttle on failed logins and the one on registrations.

Passwords are hashed with scrypt (memory-hard; RFC 7914) and compared in constant
time, on the ``KdfPool``'s own threads: a password spray fills that pool's bounded
queue and is refused, while file and log I/O go on elsewhere.
A token is 256 random bits given to the device once; only its SHA-256 is kept.

The throttles here are node-local (one process's memory), by client address: a
cluster's nodes each apply them to the connections they serve.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from server.errors import RateLimited

_T = TypeVar("_T")

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


def address_of(remote: str) -> str:
    """The client address of a connection's ``host:port`` (or of a bare address)."""
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return remote.rsplit(":", 1)[0].strip("[]")


class KdfPool:
    """Password hashing on ``threads`` threads of its own, at most ``queue`` jobs
    running or waiting; one more is refused with -32004 at once, before any work.

    A job counts until its thread is done with it, also when the request that
    wanted it is gone (a closed connection cannot free a thread that is busy).
    """

    def __init__(self, threads: int, queue: int) -> None:
        self.queue = queue
        self.pending = 0
        self._lock = threading.Lock()  # pending goes down on the pool's threads
        self._threads = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="messenger-kdf"
        )

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        with self._lock:
            if self.pending >= self.queue:
                raise RateLimited("Too many password checks at once; try again shortly", 1.0)
            self.pending += 1
        job = self._threads.submit(function, *args)
        job.add_done_callback(self._finished)
        return await asyncio.wrap_future(job)

    def _finished(self, _: concurrent.futures.Future[_T]) -> None:
        with self._lock:
            self.pending -= 1

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


class RegistrationLimit:
    """At most ``limit`` registrations per client address in any hour (a sliding
    window); ``limit`` 0 is no limit. Bounded: ``capacity`` addresses at most."""

    def __init__(self, limit: int, window_ms: int = 3_600_000, capacity: int = 100_000) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self.capacity = capacity
        self._times: dict[str, collections.deque[int]] = {}

    def take(self, address: str, now: int) -> None:
        """Count one registration from ``address``, or raise -32004 when over the limit."""
        if not self.limit:
            return
        times = self._times.pop(address, None) or collections.deque(maxlen=self.limit)
        while times and times[0] <= now - self.window_ms:
            times.popleft()
        self._times[address] = times  # re-inserted: dict order is oldest activity first
        if len(times) >= self.limit:
            retry_after = (times[0] + self.window_ms - now) / 1000
            raise RateLimited(
                f"Expected at most {self.limit} registrations an hour from one address, "
                "but this would be one more",
                retry_after,
            )
        times.append(now)
        if len(self._times) > self.capacity:
            del self._times[next(iter(self._times))]


@dataclasses.dataclass(slots=True)
class _Failures:
    count: int
    blocked_until: float
    last: float  # when the last failure was


class LoginThrottle:
    """Failed password logins per key: after ``free`` failures, each further one
    blocks that key for ``backoff`` seconds, doubling up to ``ceiling``. A key with
    no failure for ``ceiling`` seconds starts afresh.

    The service keys one throttle by (name, address) and one by address, so that a
    stranger's guesses never lock the user out from the user's own address.

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
        failures = self._failures.pop(key, None)
        if failures is None or failures.last + self.ceiling <= now:
            failures = _Failures(0, now, now)
        failures.count += 1
        failures.last = now
        excess = failures.count - self.free
        if excess >= 0:
            failures.blocked_until = now + min(self.ceiling, self.backoff * 2**excess)
        self._failures[key] = failures  # re-inserted: dict order is oldest activity first
        if len(self._failures) > self.capacity:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
