"""Who may hold a connection: the client address behind a trusted proxy, the total and
per-address connection caps, the default cap derived from the fd limit, and warnings
that a flood would otherwise repeat once per attempt.

Pure bookkeeping: no sockets, no clock of its own. The transport asks and tells.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import logging
import resource
from collections.abc import Callable, Iterable
from typing import Final

# Descriptors kept back from connections (a cap of soft limit minus these): the log
# and its compaction file, the lock, the listening sockets, stdio, the epoll and
# thread-pool internals, a file per download in progress (Config.max_downloads,
# default 64) and the files the thread pools open for uploads (at most 32 at once).
FD_RESERVE: Final = 256
MIN_CONNECTIONS: Final = 16


class Refusal(enum.StrEnum):
    """Why a newcomer is answered 503 (also the ``reason`` label of the metric)."""

    SERVER_FULL = "server_full"
    ADDRESS_FULL = "address_full"


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a platform cap below the hard limit: keep soft
            pass
    return soft


def default_max_connections() -> int:
    """The connection cap when none is configured: the fd limit less a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 2**20
    return max(MIN_CONNECTIONS, soft - FD_RESERVE)


def client_address(peer: str, forwarded_for: str | None, trusted: frozenset[str]) -> str:
    """The address a connection is counted and logged by: ``peer``, unless ``peer`` is a
    trusted proxy, in which case the nearest address in ``X-Forwarded-For`` that is not
    itself a trusted proxy (each proxy appends the address it got the request from, so
    only the addresses added by trusted proxies can be believed; the leftmost may be
    anything the client wrote)."""
    if peer not in trusted or not forwarded_for:
        return peer
    for hop in reversed(forwarded_for.split(",")):
        try:
            address = str(ipaddress.ip_address(hop.strip()))
        except ValueError:
            return peer  # a hop that is not an address: believe nothing further left
        if address not in trusted:
            return address
    return peer


class Admission:
    """Open connections in all and per client address, against their caps."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.open = 0
        self.by_address: collections.Counter[str] = collections.Counter()

    def enter(self) -> Refusal | None:
        """Count one more connection, or say why not."""
        if self.open >= self.max_connections:
            return Refusal.SERVER_FULL
        self.open += 1
        return None

    def leave(self) -> None:
        self.open -= 1

    def claim(self, address: str) -> Refusal | None:
        """Count one more connection from ``address``, or say why not."""
        if self.by_address[address] >= self.max_per_address:
            return Refusal.ADDRESS_FULL
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


class Occasional:
    """A warning logged at most once per ``interval`` seconds, with how many times it
    happened meanwhile: a flood of failures must not become a flood of log lines."""

    def __init__(self, logger: logging.Logger, interval: float, clock: Callable[[], float]) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.next_at = float("-inf")
        self.count = 0

    def warn(self, message: str, *args: object) -> None:
        """Count one occurrence; log ``message % args`` with the count if it is time."""
        self.count += 1
        now = self.clock()
        if now < self.next_at:
            return
        self.logger.warning(message + " (%d times since the last such line)", *args, self.count)
        self.count = 0
        self.next_at = now + self.interval


def addresses(values: Iterable[str]) -> frozenset[str]:
    """Normalized IP addresses (``--trusted-proxy``); ValueError names a bad one."""
    normalized = set()
    for value in values:
        try:
            normalized.add(str(ipaddress.ip_address(value.strip())))
        except ValueError:
            raise ValueError(f"expected an IP address, but got {value!r}") from None
    return frozenset(normalized)
