"""The edges of server/auth.py, driven directly with an explicit clock: the stored hash
format, client addresses, the KDF pool's bound, the registration limit's window and
the login throttle's fresh start. No server, no sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading

import pytest

from server.auth import (
    KdfPool,
    LoginThrottle,
    RegistrationLimit,
    address_of,
    hash_password,
    verify_password,
)
from server.errors import RateLimited

HOUR = 3_600_000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("salt_bytes", [16, 10, 7])
def test_a_hash_stored_by_an_earlier_version_still_verifies(salt_bytes: int) -> None:
    """A stored hash is scrypt with its own n, r, p, unpadded base64url salt (of any
    length) and a 32-byte key: one written before (here by hashlib alone) verifies."""
    salt = bytes(range(salt_bytes))
    key = hashlib.scrypt(b"correct horse", salt=salt, n=16, r=8, p=1, dklen=32)
    stored = f"scrypt$16$8$1${_b64(salt)}${_b64(key)}"
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)


def test_a_new_hash_records_rfc_7914s_cost_and_a_32_byte_key() -> None:
    """hash_password writes scrypt$n$8$1$salt$key: r = 8, p = 1, a 16-byte salt and a
    32-byte key, each in unpadded base64url."""
    scheme, n, r, p, salt, key = hash_password("correct horse", 2**4).split("$")
    assert (scheme, n, r, p) == ("scrypt", "16", "8", "1")
    assert (len(salt), len(key)) == (22, 43)
    assert "=" not in salt + key


@pytest.mark.parametrize(
    ("remote", "address"),
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:5000", "::1"),
        ("::1", "::1"),
        ("[2001:db8::7]:443", "2001:db8::7"),
    ],
)
def test_the_address_of_a_connection_leaves_out_its_port(remote: str, address: str) -> None:
    """host:port, [v6]:port and bare addresses all give the bare address."""
    assert address_of(remote) == address


class Gated:
    """Jobs for a pool that wait until ``release`` is set, noting the order they ran in."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[int] = []

    def job(self, number: int) -> int:
        self.release.wait(5)
        self.ran.append(number)
        return number


async def test_the_kdf_pool_refuses_one_job_past_its_queue_and_frees_slots_when_done() -> None:
    """With a queue of 2, a third job at once is refused with retry_after 1 s before it
    runs; once the two are done, two more are taken again."""
    pool = KdfPool(threads=1, queue=2)
    gated = Gated()
    release, ran, job = gated.release, gated.ran, gated.job
    try:
        first = asyncio.ensure_future(pool.run(job, 1))
        second = asyncio.ensure_future(pool.run(job, 2))
        await asyncio.sleep(0)
        assert pool.pending == 2
        third = asyncio.ensure_future(pool.run(job, 3))
        await asyncio.sleep(0)
        release.set()
        refused = third.exception() if third.done() else None
        assert isinstance(refused, RateLimited)
        assert refused.retry_after == 1.0
        assert list(await asyncio.gather(first, second)) == [1, 2]
        assert list(await asyncio.gather(pool.run(job, 4), pool.run(job, 5))) == [4, 5]
        assert ran == [1, 2, 4, 5]
        assert pool.pending == 0
    finally:
        release.set()
        pool.close()


async def test_a_closed_kdf_pool_drops_the_jobs_still_waiting() -> None:
    """close() at shutdown: a job waiting for the pool's one thread never runs, and no
    new job is taken."""
    pool = KdfPool(threads=1, queue=4)
    gated = Gated()
    release, ran, job = gated.release, gated.ran, gated.job
    running = asyncio.ensure_future(pool.run(job, 1))
    waiting = asyncio.ensure_future(pool.run(job, 2))
    await asyncio.sleep(0)
    pool.close()
    release.set()
    await running
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError):
        await pool.run(job, 3)
    assert ran == [1]


def test_registrations_are_limited_in_a_sliding_hour_per_address() -> None:
    """limit 2: a third registration within the hour of the first is refused, saying
    the seconds until the first leaves the window; at exactly an hour it is taken."""
    limit = RegistrationLimit(2)
    limit.take("10.0.0.1", 0)
    limit.take("10.0.0.1", 1_000)
    limit.take("10.0.0.2", 1_000)  # another address counts apart
    with pytest.raises(RateLimited) as refused:
        limit.take("10.0.0.1", 1_500)
    assert refused.value.retry_after == (HOUR - 1_500) / 1000
    with pytest.raises(RateLimited):
        limit.take("10.0.0.1", HOUR - 1)
    limit.take("10.0.0.1", HOUR)
    with pytest.raises(RateLimited) as again:
        limit.take("10.0.0.1", HOUR)
    assert again.value.retry_after == 1.0  # the one of 1_000 leaves at HOUR + 1_000


def test_a_refused_registration_does_not_count() -> None:
    """Refusals do not push the window on: the address may register again an hour
    after its last accepted registration, however often it was refused meanwhile."""
    limit = RegistrationLimit(1)
    limit.take("10.0.0.1", 0)
    for now in range(1, HOUR, HOUR // 10):
        with pytest.raises(RateLimited):
            limit.take("10.0.0.1", now)
    limit.take("10.0.0.1", HOUR)


def test_a_registration_limit_of_0_is_no_limit() -> None:
    """register_limit 0 takes any number of registrations from one address."""
    limit = RegistrationLimit(0)
    for now in range(100):
        limit.take("10.0.0.1", now)


def test_the_registration_limit_forgets_the_least_recently_active_address_past_capacity() -> None:
    """capacity 2: a third address pushes out the one whose last registration is oldest,
    which may register afresh; the two others are still counted."""
    limit = RegistrationLimit(1, capacity=2)
    limit.take("a", 0)
    limit.take("b", 1)
    limit.take("c", 2)  # a is forgotten
    limit.take("a", 3)  # b is forgotten
    for address in ("c", "a"):
        with pytest.raises(RateLimited):
            limit.take(address, 4)
    limit.take("b", 5)


def test_failures_older_than_the_ceiling_start_afresh() -> None:
    """A key whose last failure is ``ceiling`` seconds old starts again with ``free``
    free failures; one failure short of that, it is still blocked."""
    throttle = LoginThrottle(free=1, backoff=10.0, ceiling=100.0)
    throttle.failed("alice", now=0.0)
    assert throttle.retry_after("alice", now=0.0) == 10.0
    throttle.failed("alice", now=99.0)
    assert throttle.retry_after("alice", now=99.0) == 20.0
    throttle.failed("alice", now=199.0)  # exactly the ceiling after the last one
    assert throttle.retry_after("alice", now=199.0) == 10.0
    throttle.failed("alice", now=200.0)
    assert throttle.retry_after("alice", now=200.0) == 20.0


def test_the_first_blocking_failure_waits_exactly_the_backoff() -> None:
    """free = 2: the second failure blocks for the backoff, the third for twice it."""
    throttle = LoginThrottle(free=2, backoff=3.0)
    throttle.failed("alice", now=50.0)
    assert throttle.retry_after("alice", now=50.0) == 0.0
    throttle.failed("alice", now=50.0)
    assert throttle.retry_after("alice", now=50.0) == 3.0
    throttle.failed("alice", now=53.0)
    assert throttle.retry_after("alice", now=53.0) == 6.0


def test_the_default_bounds_hold_100_000_addresses_and_names() -> None:
    """By default each throttle remembers 100,000 keys: the 100,001st forgets the oldest."""
    limit = RegistrationLimit(1)
    throttle = LoginThrottle(free=1, backoff=10.0)
    for number in range(100_000):
        limit.take(str(number), 0)
        throttle.failed(str(number), now=0.0)
    limit.take("new", 1)
    throttle.failed("new", now=0.0)
    with pytest.raises(RateLimited):
        limit.take("1", 1)
    limit.take("0", 1)  # forgotten, so taken afresh
    assert (throttle.retry_after("0", now=0.0), throttle.retry_after("1", now=0.0)) == (0, 10)


def test_the_throttle_holds_capacity_keys_and_no_more() -> None:
    """capacity 2: two keys are both remembered; a third forgets only the oldest."""
    throttle = LoginThrottle(free=1, backoff=10.0, capacity=2)
    throttle.failed("a", now=0.0)
    throttle.failed("b", now=0.0)
    assert throttle.retry_after("a", now=0.0) == 10.0
    assert throttle.retry_after("b", now=0.0) == 10.0
    throttle.failed("c", now=0.0)
    assert [throttle.retry_after(key, now=0.0) for key in "abc"] == [0.0, 10.0, 10.0]
