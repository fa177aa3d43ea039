"""The server's settings: one frozen value built by the command line or by tests."""

from __future__ import annotations

import dataclasses
import enum
import os
from pathlib import Path

from server.domain.limits import Quotas
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
    # Pages of these origins (besides the server's own) may open a WebSocket here.
    allowed_origins: tuple[str, ...] = ()
    # Limits against abuse (protocol.md, "Limits against abuse"); 0 turns one off.
    flood_rate: float = 1.0  # sends + comments per second per user, sustained
    flood_burst: int = 20  # ... and at once
    max_live_bytes: int = 8 * 2**20  # text of one user's live messages and comments
    report_min_age: int = 86400  # seconds; a reporter's account is this old, and has posted
    register_limit: int = 10  # registrations per client address per hour
    group_limit: int = 100  # groups one user may own
    invite_limit: int = 100  # invitations one user may send per hour
    max_user_storage: int = 100 * 2**20  # bytes of stored files one user uploaded
    max_storage: int = 2**30  # bytes of stored files in all
    login_timeout: float = 20.0  # seconds a connection may take to log in; then 1008
    max_connections: int | None = None  # None: derived from the fd limit at start
    max_connections_per_address: int = 256
    max_devices: int = 100  # per user: a new one revokes the oldest not connected
    trusted_proxies: frozenset[str] = frozenset()  # their X-Forwarded-For names the client
    # GET /metrics: with a token, for `Authorization: Bearer <token>` only; without
    # one, for clients on this machine only (loopback addresses).
    metrics_token: str | None = None
    # Not on the contract's command line, but tunable for tests and operators.
    frame_limit: int = FRAME_LIMIT
    send_buffer_limit: int = 2**20  # a device whose unsent bytes pass this is cut off
    resume_window: int = 10_000  # recent events held in memory for `login {since}`
    batch_interval: float = 1.0  # seconds between fsyncs under FsyncPolicy.BATCH
    login_attempts: int = 5  # failed logins of one name from one address before throttling
    address_login_attempts: int = 20  # failed logins from one address before throttling
    # Threads that hash passwords (scrypt, which holds a core each), apart from file
    # I/O; half the cores, so that a password spray leaves the event loop a core.
    kdf_threads: int = dataclasses.field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    kdf_queue: int = 32  # password checks running or waiting; more are refused (-32004)
    login_backoff: float = 1.0  # seconds of the first throttle; doubles per failure
    scrypt_n: int = 2**14  # scrypt cost; tests lower it
    timer_resolution: float = 60.0  # longest sleep of the schedule timer, seconds
    housekeeping_interval: float = 60.0  # expiry sweep, upload clean-up, compaction check
    compact_bytes: int = 64 * 2**20  # compact when the log passes this (and twice its last)
    expired_compaction_delay: float = 600.0  # expired messages leave the disk within this
    upload_idle_timeout: float = 600.0  # an upload with no chunk for this long is dropped
    upload_chunk_size: int = 256 * 2**10  # bytes per upload.chunk / download (before base64)
    max_downloads: int = 64  # GET /files/{id} streaming at once; more get HTTP 503
    stall_timeout: float = 60.0  # a reader taking nothing for this long (buffer full): cut
    occasional_interval: float = 60.0  # shortest gap between repeats of a flood warning
    presence_grace: float = 5.0  # seconds a user stays online after the last device left
    presence_persist_every: float = 60.0  # at most one durable last_seen per user per this
    presence_heartbeat: float = 5.0  # cluster: seconds between a node's presence heartbeats
    # Cluster mode (protocol-contract.md v2, "Cluster"): the shared log in NATS JetStream.
    cluster: tuple[str, ...] = ()  # NATS server URLs; empty = the local file log
    cluster_name: str = "messenger"  # prefix of the stream, buckets and subjects
    node_name: str = ""  # this node's name in logs and the writer lease; "" = host:pid
    lease_ttl: float = 3.0  # seconds a writer's lease lasts unless renewed
    forward_timeout: float = 5.0  # seconds a follower waits for the writer's answer
    blob_grace: float = 60.0  # seconds between a file dropped and its bytes leaving the cluster
    uploads_per_user: int = 4  # uploads in progress at once, per user
    uploads_in_all: int = 1024  # uploads in progress at once, in all
    disk_reserve: int = 64 * 2**20  # free disk every upload write must leave (for the log)

    @property
    def quotas(self) -> Quotas:
        """The limits the domain decides from the folded state."""
        return Quotas(
            flood_rate=self.flood_rate,
            flood_burst=self.flood_burst,
            max_live_bytes=self.max_live_bytes,
            report_min_age_ms=self.report_min_age * 1000,
            group_limit=self.group_limit,
            invite_limit=self.invite_limit,
            user_storage=self.max_user_storage,
            storage=self.max_storage,
        )
