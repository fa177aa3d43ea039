"""Abuse by users (issue 8): replays each pattern against a fresh server with its
default limits and prints what the server let through, what it refused, its RSS,
and a legitimate user's reconnect (token login + send) p50/p99 meanwhile.

Starts the messenger as its own process (``python -m server --port 0``, real scrypt,
state in a temporary directory); attackers come from 127.0.0.2.., the legitimate
user from 127.0.0.1 (all loopback). Prints figures; asserts nothing.

    .venv/bin/python bench/abuse.py                  # every pattern, 5 s each
    .venv/bin/python bench/abuse.py --seconds 2 dm-flood invite-bomb
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PASSWORD = "password1"
LISTENING = re.compile(rb"listening on (ws://\S+)")
Pipe = multiprocessing.connection.Connection


class Peer:
    """One connection: ``call`` pipelines requests and returns result or error."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())
        self.token = ""

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.connection:
                reply = orjson.loads(frame)
                if isinstance(reply, dict) and reply.get("id") in self.waiting:
                    self.waiting.pop(reply["id"]).set_result(reply)
        for future in self.waiting.values():
            if not future.done():
                future.set_result({"error": {"code": "closed", "message": "closed"}})

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The reply: ``{"result": ...}`` or ``{"error": ...}``; ConnectionClosed once
        the server has closed the connection (an attack loop ends there)."""
        request_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
        await self.connection.send(orjson.dumps(request).decode())
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
        # that comes as the reply does, and an attack loop would never stop.
        async with asyncio.timeout(60):
            return await future

    async def close(self) -> None:
        self.reader.cancel()
        await self.connection.close()


@contextlib.asynccontextmanager
async def peer(url: str, address: str = "127.0.0.1") -> AsyncIterator[Peer]:
    async with connect(url, max_size=2**22, local_addr=(address, 0)) as connection:
        one = Peer(connection)
        try:
            yield one
        finally:
            one.reader.cancel()


class Tally:
    """Replies by outcome: "ok" or the error code."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, reply: dict[str, Any]) -> dict[str, Any]:
        self.counts["ok" if "result" in reply else str(reply["error"]["code"])] += 1
        return reply

    def __str__(self) -> str:
        return ", ".join(f"{outcome}: {n}" for outcome, n in self.counts.most_common()) or "-"


async def account(url: str, name: str, address: str = "127.0.0.1") -> str:
    """Register ``name`` (from ``address``) and log in once: its token ("" if refused)."""
    async with peer(url, address) as one:
        if "error" in await one.call("register", user=name, password=PASSWORD):
            return ""
        reply = await one.call("login", user=name, password=PASSWORD)
        return str(reply["result"]["token"])


async def logged_in(url: str, name: str, token: str, address: str = "127.0.0.1") -> Peer:
    connection = await connect(url, max_size=2**22, local_addr=(address, 0))
    one = Peer(connection)
    reply = await one.call("login", user=name, token=token)
    assert "result" in reply, reply
    return one


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def legit_probe(url: str, token: str, stop: Any) -> list[float]:
    """A legitimate user reconnecting over and over: token login + one send, in ms."""
    took: list[float] = []
    while not stop.is_set():
        began = time.perf_counter()
        with contextlib.suppress(Exception):
            async with peer(url) as one:
                await one.call("login", user="legit", token=token)
                await one.call("send", user="friend", text="still here")
                took.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.05)
    return took


def probe_process(url: str, token: str, stop: Any, results: Pipe) -> None:
    """``legit_probe`` in a process of its own, so the attack's client cannot slow it."""
    took: list[float] = []
    try:
        took = asyncio.run(legit_probe(url, token, stop))
    finally:
        results.send(took)


async def until(seconds: float, attack: Callable[[], Awaitable[None]]) -> None:
    """Run ``attack`` for ``seconds``, or until the server closes its connection."""
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(seconds):
            await attack()


# -- the patterns: each returns lines to print -------------------------------------


async def baseline(url: str, seconds: float) -> list[str]:
    await asyncio.sleep(seconds)
    return ["no attack"]


async def fake_ban(url: str, seconds: float) -> list[str]:
    victim = await account(url, "victim")
    async with contextlib.AsyncExitStack() as stack:
        v = await logged_in(url, "victim", victim)
        stack.push_async_callback(v.close)
        await v.call("send", chat="general", text="hello")
        tally = Tally()
        for n in range(3):
            token = await account(url, f"sock{n}", "127.0.0.2")
            sock = await logged_in(url, f"sock{n}", token, "127.0.0.2")
            stack.push_async_callback(sock.close)
            tally.add(await sock.call("report", user="victim", reason="spam"))
        after = await v.call("send", chat="general", text="still talking")
    banned = "error" in after and after["error"]["code"] == -32005
    return [f"3 fresh accounts report a user: replies {tally}; victim banned: {banned}"]


async def register_many(url: str, seconds: float) -> list[str]:
    tally = Tally()
    began = time.perf_counter()
    async with peer(url, "127.0.0.2") as one:
        for n in range(30):
            tally.add(await one.call("register", user=f"bulk{n}", password=PASSWORD))
    return [f"30 registrations from one address: {tally} ({time.perf_counter() - began:.2f} s)"]


async def dm_flood(url: str, seconds: float) -> list[str]:
    token = await account(url, "flooder", "127.0.0.2")
    tally = Tally()
    text = "x" * 4096
    flooder = await logged_in(url, "flooder", token, "127.0.0.2")

    async def attack() -> None:
        while True:
            replies = await asyncio.gather(
                *(flooder.call("send", user="friend", text=text) for _ in range(8))
            )
            for reply in replies:
                tally.add(reply)

    began = time.perf_counter()
    await until(seconds, attack)
    took = time.perf_counter() - began
    await flooder.close()
    accepted = tally.counts["ok"]
    return [f"4 KiB direct messages, 8 in flight: {tally}; {accepted / took:.1f} accepted/s"]


async def comment_flood(url: str, seconds: float) -> list[str]:
    token = await account(url, "commenter", "127.0.0.2")
    tally = Tally()
    commenter = await logged_in(url, "commenter", token, "127.0.0.2")
    message = (await commenter.call("send", chat="general", text="look"))["result"]["message"]

    async def attack() -> None:
        while True:
            tally.add(await commenter.call("comment", message=message["id"], text="y" * 1000))

    began = time.perf_counter()
    await until(seconds, attack)
    took = time.perf_counter() - began
    await commenter.close()
    return [f"comments under a general message: {tally}; {tally.counts['ok'] / took:.1f}/s"]


async def invite_bomb(url: str, seconds: float) -> list[str]:
    victim = await account(url, "victim")
    token = await account(url, "bomber", "127.0.0.2")
    creates, invites = Tally(), Tally()
    bomber = await logged_in(url, "bomber", token, "127.0.0.2")

    async def attack() -> None:
        while True:
            created = creates.add(await bomber.call("chat.create", title="\u0001" * 100))
            if "error" in created:
                return
            chat = created["result"]["chat"]["id"]
            invites.add(await bomber.call("chat.invite", chat=chat, user="victim"))

    await until(seconds, attack)
    await bomber.close()
    v = await logged_in(url, "victim", victim)
    began = time.perf_counter()
    status = await v.call("status")
    took = (time.perf_counter() - began) * 1000
    size = len(orjson.dumps(status))
    await v.close()
    return [
        f"chat.create: {creates}; chat.invite of one victim: {invites}",
        f"victim's status: {size} bytes, {len(status['result']['chats'])} chats, "
        f"has_more {status['result']['has_more']}, {took:.0f} ms",
    ]


async def upload_slots(url: str, seconds: float) -> list[str]:
    begins = Tally()
    hogs: list[Peer] = []
    for n in range(64):
        token = await account(url, f"hog{n}", f"127.0.1.{n % 8 + 1}")
        if not token:
            continue
        hog = await logged_in(url, f"hog{n}", token)
        hogs.append(hog)
        for _ in range(4):
            begins.add(await hog.call("upload.begin", name="f", size=5 * 2**20))
    legit = await logged_in(url, "legit", LEGIT_TOKEN[url])
    mine = await legit.call("upload.begin", name="mine", size=1000)
    outcome = "ok" if "result" in mine else f"{mine['error']['code']} {mine['error']['message']}"
    await legit.close()
    for hog in hogs:
        await hog.close()
    return [
        f"{len(hogs)} accounts (8 addresses) x 4 upload.begin of 5 MiB: {begins}",
        f"then a legitimate upload.begin: {outcome}",
    ]


async def lockout(url: str, seconds: float) -> list[str]:
    await account(url, "alice")
    guesses, own = Tally(), Tally()

    async def stranger() -> None:
        async with peer(url, "127.0.0.2") as guesser:
            while True:
                guesses.add(await guesser.call("login", user="alice", password="wrong-guess"))

    async def alice() -> None:
        while True:
            async with peer(url) as mine:
                own.add(await mine.call("login", user="alice", password=PASSWORD))
            await asyncio.sleep(0.2)

    async def attack() -> None:
        await asyncio.gather(stranger(), alice())

    await until(seconds, attack)
    return [f"a stranger's wrong guesses: {guesses}; alice's own logins meanwhile: {own}"]


async def spray(url: str, seconds: float) -> list[str]:
    await account(url, "target")
    sprayed = Tally()
    legit = await logged_in(url, "legit", LEGIT_TOKEN[url])
    data = base64.b64encode(b"z" * 1000).decode()
    begun = (await legit.call("upload.begin", name="f", size=1000))["result"]["upload"]
    await legit.call("upload.chunk", upload=begun, data=data)
    file = (await legit.call("upload.finish", upload=begun))["result"]["file"]["id"]
    downloads: list[float] = []

    async def one_sprayer(n: int) -> None:
        async with peer(url, f"127.0.2.{n + 1}") as sprayer:
            for guess in itertools.count():
                guess_word = f"guess-{guess:08d}"
                sprayed.add(await sprayer.call("login", user="target", password=guess_word))

    async def file_io() -> None:
        while True:
            began = time.perf_counter()
            await legit.call("download", file=file)
            downloads.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.02)

    async def attack() -> None:
        await asyncio.gather(file_io(), *(one_sprayer(n) for n in range(32)))

    await until(seconds, attack)
    await legit.close()
    return [
        f"32 connections (32 addresses) guessing one password: {sprayed}",
        f"a download meanwhile: p50 {pct(downloads, 50):.1f} ms, p99 {pct(downloads, 99):.1f} ms",
    ]


async def look_alike(url: str, seconds: float) -> list[str]:
    tally = Tally()
    async with peer(url, "127.0.0.2") as one:
        for name in ("alice", "mallory"):
            await one.call("register", user=name, password=PASSWORD)
        for name in ("aIice", "a1ice", "rnallory", ".", "..", "-"):
            tally.add(await one.call("register", user=name, password=PASSWORD))
    return [f"aIice, a1ice, rnallory, ., .., - beside alice, mallory: {tally}"]


PATTERNS: dict[str, Callable[[str, float], Awaitable[list[str]]]] = {
    "baseline": baseline,
    "fake-ban": fake_ban,
    "register-many": register_many,
    "dm-flood": dm_flood,
    "comment-flood": comment_flood,
    "invite-bomb": invite_bomb,
    "upload-slots": upload_slots,
    "lockout": lockout,
    "spray": spray,
    "look-alike": look_alike,
}
LEGIT_TOKEN: dict[str, str] = {}


def pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[p - 1]


@contextlib.asynccontextmanager
async def server(state_dir: Path) -> AsyncIterator[tuple[str, int]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        found = LISTENING.search(line)
        assert found is not None, line
        yield found.group(1).decode(), process.pid
        assert process.returncode is None, "the server exited"
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def run(name: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with server(Path(tmp) / "state") as (url, pid):
            LEGIT_TOKEN[url] = await account(url, "legit")
            await account(url, "friend")
            before = rss_mib(pid)
            spawn = multiprocessing.get_context("spawn")
            stop = spawn.Event()
            results, sent = spawn.Pipe(duplex=False)
            probe = spawn.Process(target=probe_process, args=(url, LEGIT_TOKEN[url], stop, sent))
            probe.start()
            sent.close()  # so that recv() ends if the probe dies
            began = time.perf_counter()
            try:
                lines = await asyncio.wait_for(PATTERNS[name](url, seconds), seconds + 120)
            except TimeoutError:
                lines = ["did not finish within its time limit"]
            stop.set()
            try:
                took = await asyncio.to_thread(results.recv)
            except EOFError:
                took = []
            probe.join()
            after = rss_mib(pid)
    print(f"{name} ({time.perf_counter() - began:.1f} s)")
    for line in lines:
        print(f"  {line}")
    print(
        f"  server RSS {before:.0f} -> {after:.0f} MiB; legitimate reconnect+send "
        f"p50 {pct(took, 50):.0f} ms, p99 {pct(took, 99):.0f} ms ({len(took)} samples)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="*", help=f"some of {', '.join(PATTERNS)}")
    parser.add_argument("--seconds", type=float, default=5.0, help="per timed pattern")
    args = parser.parse_args()
    unknown = set(args.patterns) - set(PATTERNS)
    if unknown:
        parser.error(f"expected some of {', '.join(PATTERNS)}, but got {sorted(unknown)}")
    for name in args.patterns or PATTERNS:
        asyncio.run(run(name, args.seconds))


if __name__ == "__main__":
    main()
