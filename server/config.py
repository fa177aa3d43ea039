"""The server's settings: one frozen value built by the command line or by tests."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from wire import DEFAULT_HOST, DEFAULT_PORT, FRAME_LIMIT


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"  # a reply waits for fsync; one fsync per group of appends
    BATCH = "batch"  # a reply waits for write(); fsync at most every second
    NEVER = "never"  # a reply waits for write(); the OS decides when to sync


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    state_dir: Path = Path("state")
    history_size: int = 20
    message_ttl: int = 3600  # seconds; 0 = messages never expire
    rate_limit: int = 20
    rate_period: int = 3600
    report_threshold: int = 3
    ban_duration: int = 14400
    max_file_size: int = 5 * 2**20
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    # Not on the contract's command line, but tunable for tests and operators.
    frame_limit: int = FRAME_LIMIT
    send_buffer_limit: int = 2**20  # a device whose unsent bytes pass this is cut off
    resume_window: int = 10_000  # recent events held in memory for `login {since}`
    batch_interval: float = 1.0  # seconds between fsyncs under FsyncPolicy.BATCH
    login_attempts: int = 5  # failed password logins before throttling starts
    login_backoff: float = 1.0  # seconds of the first throttle; doubles per failure
    scrypt_n: int = 2**14  # scrypt cost; tests lower it
    timer_resolution: float = 60.0  # longest sleep of the schedule timer, seconds
    housekeeping_interval: float = 60.0  # expiry sweep, upload clean-up, compaction check
    compact_bytes: int = 64 * 2**20  # compact when the log passes this (and twice its last)
    expired_compaction_delay: float = 600.0  # expired messages leave the disk within this
    upload_idle_timeout: float = 600.0  # an upload with no chunk for this long is dropped
    upload_chunk_size: int = 256 * 2**10  # bytes per upload.chunk / download (before base64)
    presence_grace: float = 5.0  # seconds a user stays online after the last device left
    presence_persist_every: float = 60.0  # at most one durable last_seen per user per this
    presence_heartbeat: float = 5.0  # cluster: seconds between a node's presence heartbeats
    # Cluster mode (protocol-contract.md v2, "Cluster"): the shared log in NATS JetStream.
    cluster: tuple[str, ...] = ()  # NATS server URLs; empty = the local file log
    cluster_name: str = "messenger"  # prefix of the stream, buckets and subjects
    node_name: str = ""  # this node's name in logs and the writer lease; "" = host:pid
    lease_ttl: float = 3.0  # seconds a writer's lease lasts unless renewed
    forward_timeout: float = 5.0  # seconds a follower waits for the writer's answer
