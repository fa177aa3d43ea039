"""``messenger-server``: the command line (protocol-contract.md, "Command lines")."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from server.admission import FD_RESERVE, addresses, default_max_connections, raise_fd_limit
from server.app import LOG_FILE, StateDirBusy, run_server
from server.config import Config, FsyncPolicy
from server.log import LogCorrupted, last_record_offset
from server.store import StoreFailed
from server.webclient import normalize_origin
from wire import DEFAULT_HOST, DEFAULT_PORT

logger = logging.getLogger("messenger.server")


def parse_args(argv: list[str] | None = None) -> Config:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="messenger-server", description="WebSocket push messenger with multi-device sync."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    parser.add_argument("--history-size", type=_positive, default=defaults.history_size)
    parser.add_argument(
        "--message-ttl",
        type=_non_negative,
        default=defaults.message_ttl,
        help="seconds; 0 = messages never expire",
    )
    parser.add_argument("--rate-limit", type=_positive, default=defaults.rate_limit)
    parser.add_argument(
        "--rate-period", type=_positive, default=defaults.rate_period, help="seconds"
    )
    parser.add_argument("--report-threshold", type=_positive, default=defaults.report_threshold)
    parser.add_argument(
        "--ban-duration", type=_positive, default=defaults.ban_duration, help="seconds"
    )
    parser.add_argument(
        "--max-file-size", type=_positive, default=defaults.max_file_size, help="bytes"
    )
    parser.add_argument(
        "--fsync", type=FsyncPolicy, choices=list(FsyncPolicy), default=defaults.fsync
    )
    limits = parser.add_argument_group(
        "limits against abuse", "0 turns a limit off (see protocol.md, Limits against abuse)"
    )
    for name, kind, meaning in LIMIT_FLAGS:
        limits.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=getattr(defaults, name),
            help=f"{meaning} (default: %(default)s)",
        )
    parser.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        type=_origin,
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept WebSockets from pages of this origin, e.g. https://chat.example.org "
        "(repeatable); the server's own origin is always accepted",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--login-timeout",
        type=_positive_seconds,
        default=defaults.login_timeout,
        help="seconds a connection may take to log in before it is closed (1008)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=None,
        help="connections at once; more get HTTP 503 "
        f"(default: the fd limit, raised to its hard limit, less {FD_RESERVE})",
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=_positive,
        default=defaults.max_connections_per_address,
        help="connections at once from one client address; more get HTTP 503",
    )
    parser.add_argument(
        "--max-devices",
        type=_positive,
        default=defaults.max_devices,
        help="devices one user keeps; a new one revokes the oldest not connected",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        type=_address,
        default=[],
        metavar="ADDRESS",
        help="a proxy whose X-Forwarded-For names the client (repeatable)",
    )
    parser.add_argument(
        "--metrics-token",
        default=os.environ.get("MESSENGER_METRICS_TOKEN") or None,
        metavar="TOKEN",
        help="GET /metrics answers 'Authorization: Bearer TOKEN' from anywhere; without "
        "it, clients on this machine only (default: $MESSENGER_METRICS_TOKEN)",
    )
    parser.add_argument(
        "--presence-grace",
        type=_positive_seconds,
        default=defaults.presence_grace,
        help="seconds a user stays online after the last device left, so that a "
        "reconnection makes no events (default %(default)s)",
    )
    cluster = parser.add_argument_group(
        "cluster", "several servers as one, on a shared NATS JetStream (protocol.md, Cluster)"
    )
    cluster.add_argument(
        "--cluster",
        metavar="nats://HOST:PORT[,...]",
        default="",
        help="join the cluster whose state lives in these NATS servers' JetStream",
    )
    cluster.add_argument(
        "--cluster-name",
        type=_cluster_name,
        default=defaults.cluster_name,
        help="the stream, buckets and subjects' prefix (default %(default)s)",
    )
    cluster.add_argument("--node-name", default="", help="this node's name (default host:pid)")
    cluster.add_argument(
        "--lease-ttl",
        type=_positive_seconds,
        default=defaults.lease_ttl,
        help="seconds before another node takes over from a writer that stopped "
        "renewing its lease (default %(default)s)",
    )
    cluster.add_argument(
        "--presence-heartbeat",
        type=_positive_seconds,
        default=defaults.presence_heartbeat,
        help="seconds between a node's presence heartbeats; a node silent for three "
        "takes its users offline (default %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return Config(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        history_size=args.history_size,
        message_ttl=args.message_ttl,
        rate_limit=args.rate_limit,
        rate_period=args.rate_period,
        report_threshold=args.report_threshold,
        ban_duration=args.ban_duration,
        max_file_size=args.max_file_size,
        fsync=args.fsync,
        login_timeout=args.login_timeout,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        max_devices=args.max_devices,
        trusted_proxies=frozenset(args.trusted_proxy),
        metrics_token=args.metrics_token,
        cluster=tuple(url.strip() for url in args.cluster.split(",") if url.strip()),
        cluster_name=args.cluster_name,
        node_name=args.node_name,
        lease_ttl=args.lease_ttl,
        allowed_origins=tuple(args.allowed_origins),
        **{name: getattr(args, name) for name, _, _ in LIMIT_FLAGS},
        presence_grace=args.presence_grace,
        presence_heartbeat=args.presence_heartbeat,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, but got {text}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, but got {text}")
    return value


def _address(text: str) -> str:
    try:
        return next(iter(addresses([text])))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cluster_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"expected 1-64 of A-Z a-z 0-9 _ -, but got {text!r}")
    return text


def _origin(text: str) -> str:
    try:
        return normalize_origin(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number, 0 or more, but got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, but got {text}")
    return value


# The limits against abuse: each flag sets the Config field of its name.
LIMIT_FLAGS: Final[tuple[tuple[str, Callable[[str], float], str], ...]] = (
    ("flood_rate", _non_negative_number, "sends + comments per second per user, sustained"),
    ("flood_burst", _positive, "... and at once"),
    ("max_live_bytes", _non_negative, "bytes of text in one user's live messages and comments"),
    ("report_min_age", _non_negative, "seconds; reports count from accounts this old that posted"),
    ("register_limit", _non_negative, "registrations per client address per hour"),
    ("group_limit", _non_negative, "groups one user may own"),
    ("invite_limit", _non_negative, "invitations one user may send per hour"),
    ("max_user_storage", _non_negative, "bytes of stored files one user uploaded"),
    ("max_storage", _non_negative, "bytes of stored files in all"),
)


async def serve(config: Config) -> None:
    stop = asyncio.Event()
    failed = False
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "state in %s, fsync %s, history %d, ttl %d s, rate %d per %d s, "
        "ban after %d reports for %d s, files up to %d bytes; flood %g/s (burst %d), "
        "reports from accounts %d s old, %d registrations/h per address",
        config.state_dir,
        config.fsync,
        config.history_size,
        config.message_ttl,
        config.rate_limit,
        config.rate_period,
        config.report_threshold,
        config.ban_duration,
        config.max_file_size,
        config.flood_rate,
        config.flood_burst,
        config.report_min_age,
        config.register_limit,
    )
    logger.info(
        "login within %g s; up to %d connections, %d per address; trusted proxies: %s; "
        "/metrics for %s",
        config.login_timeout,
        config.max_connections or default_max_connections(),
        config.max_connections_per_address,
        ", ".join(sorted(config.trusted_proxies)) or "none",
        "this machine" if config.metrics_token is None else "the bearer of the token",
    )
    # The replayed state lives as long as the process: kept out of the cyclic GC's
    # reach (``freeze``), which would walk it at every collection.
    async with run_server(config, freeze=True) as running:
        print(f"messenger-server listening on {running.url}", flush=True)
        stopping = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(running.failed.wait())
        await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, failing):
            task.cancel()
        if running.failed.is_set():
            logger.critical("stopping: the event log cannot be written")
            failed = True
        else:
            logger.info("shutting down")
    if failed:
        sys.exit(1)


# glibc's mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def return_freed_memory() -> None:
    """Have glibc give memory back to the OS when a connection that held much goes.

    By default glibc raises its mmap threshold each time a large block is freed (so
    later 1 MiB frames come from the heap, which seldom shrinks) and gives each
    thread its own arena. After three connections sending 1 MiB frames had gone,
    the server stayed 40 MiB above its start (bench/hostile.py, big-frames); with a
    fixed 128 KiB threshold, trimming past 128 KiB and two arenas, it came back to
    within 20 MiB. Elsewhere than glibc: nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    for parameter, value in (
        (M_ARENA_MAX, 2),
        (M_MMAP_THRESHOLD, 128 * 2**10),
        (M_TRIM_THRESHOLD, 128 * 2**10),
    ):
        libc.mallopt(parameter, value)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    raise_fd_limit()  # before anything derives the connection cap from it
    return_freed_memory()
    try:
        asyncio.run(serve(config))
    except LogCorrupted as error:
        message = str(error)
        at = last_record_offset(config.state_dir / LOG_FILE)
        if "byte offset" not in message and at is not None:
            message += f" (the record at byte offset {at})"
        logger.error("cannot run: %s", message)
        sys.exit(1)
    except (StateDirBusy, OSError, StoreFailed) as error:
        logger.error("cannot run: %s", error)
        sys.exit(1)
