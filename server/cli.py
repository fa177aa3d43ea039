"""``messenger-server``: the command line (protocol-contract.md, "Command lines")."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import signal
import sys
from pathlib import Path

from server.app import StateDirBusy, run_server
from server.config import Config, FsyncPolicy
from server.log import LogCorrupted
from server.store import StoreFailed
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
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
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
        cluster=tuple(url.strip() for url in args.cluster.split(",") if url.strip()),
        cluster_name=args.cluster_name,
        node_name=args.node_name,
        lease_ttl=args.lease_ttl,
        presence_grace=args.presence_grace,
        presence_heartbeat=args.presence_heartbeat,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, but got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, but got {text}")
    return value


def _cluster_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"expected 1-64 of A-Z a-z 0-9 _ -, but got {text!r}")
    return text


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, but got {text}")
    return value


async def serve(config: Config) -> None:
    stop = asyncio.Event()
    failed = False
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "state in %s, fsync %s, history %d, ttl %d s, rate %d per %d s, "
        "ban after %d reports for %d s, files up to %d bytes",
        config.state_dir,
        config.fsync,
        config.history_size,
        config.message_ttl,
        config.rate_limit,
        config.rate_period,
        config.report_threshold,
        config.ban_duration,
        config.max_file_size,
    )
    async with run_server(config) as running:
        # The replayed state lives as long as the process: keep the cyclic GC from
        # walking it at every full collection (0.7 s each after 1M events). Here,
        # not in run_server: freezing is process-wide, and tests start many servers.
        gc.freeze()
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


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except (StateDirBusy, LogCorrupted, OSError, StoreFailed) as error:
        logger.error("cannot run: %s", error)
        sys.exit(1)
