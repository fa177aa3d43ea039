"""Cluster benchmark: the fan-out of ``bench/fanout.py`` against one server with its
local log, one cluster node, and two cluster nodes on one JetStream (devices spread
over the nodes; the sender on a follower, then on the writer).

Prints, per setup: deliveries/s, p50/p99 send->delivery and send->reply, server CPU
per delivery for each node, and the writer's appends (events/s, events per
JetStream message). A ``nats-server`` (the dev extra's, beside the interpreter) runs
in a temporary directory on 127.0.0.1; every process is stopped at the end. Prints
figures; asserts nothing.

    .venv/bin/python bench/cluster.py                      # 100 devices, 1000 messages
    .venv/bin/python bench/cluster.py --rate 200           # paced: latency, not throughput
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import fanout
import nats
import orjson

Pipe = multiprocessing.connection.Connection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--devices-per-user", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32, help="sends in flight")
    parser.add_argument("--rate", type=float, default=0, help="sends per second; 0 = window")
    parser.add_argument("--text-bytes", type=int, default=64)
    parser.add_argument("--receiver-procs", type=int, default=2)
    parser.add_argument("--setup-concurrency", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--drain", type=float, default=10)
    args = parser.parse_args(argv)
    args.client_id = True
    args.pin = False
    args.fsync = "always"
    return args


@dataclass(slots=True)
class Setup:
    name: str
    nodes: list[fanout.ServerProcess]
    sender_node: int  # index into nodes
    tag: str  # prefix of this run's user names: runs on one cluster do not collide


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def nats_server(work: Path) -> Iterator[str]:
    port = free_port()
    binary = Path(sys.executable).with_name("nats-server")
    log = (work / "nats.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(work / "js")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def node_command(work: Path, name: str, cluster: str | None, port: int) -> list[str]:
    command = [sys.executable, "-m", "server", "--port", str(port)]
    command += ["--state-dir", str(work / name), "--rate-limit", str(10**9)]
    command += ["--log-level", "WARNING"]
    # Not measured here: the limits against abuse (one address registers every user).
    command += ["--register-limit", "0", "--flood-rate", "0", "--max-live-bytes", "0"]
    command += ["--max-devices", str(10**6)]
    if cluster is not None:
        command += ["--cluster", cluster, "--cluster-name", "bench", "--node-name", name]
    return command


def wait_writer(node: fanout.ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", node.port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if b" writer " in s.recv(4096):
                return
        time.sleep(0.1)
    raise SystemExit(f"{node.name} did not become the writer")


async def stream_counts(cluster: str) -> tuple[int, int]:
    """(messages in the stream, the last event's cursor): batches and events."""
    nc = await nats.connect(cluster)
    try:
        js = nc.jetstream()
        info = await js.stream_info("bench_events")
        if not info.state.last_seq:
            return 0, 0
        last = await js.get_msg("bench_events", info.state.last_seq)
        records = orjson.loads(last.data or b"[]")
        return info.state.messages, int(records[-1]["c"]) if records else 0
    finally:
        await nc.close()


def load_processes(
    args: argparse.Namespace, setup: Setup
) -> tuple[list[multiprocessing.context.SpawnProcess], list[Pipe]]:
    """The sender on ``setup.sender_node``, receivers spread over every node."""
    base = [
        replace(plan, users=tuple((f"{setup.tag}{user}", n) for user, n in plan.users))
        for plan in fanout.plans(args, "127.0.0.1", setup.nodes[0].port, True)
    ]
    placed = [replace(base[0], port=setup.nodes[setup.sender_node].port)]
    for index, plan in enumerate(base[1:]):
        placed.append(replace(plan, port=setup.nodes[index % len(setup.nodes)].port))
    context = multiprocessing.get_context("spawn")
    processes, pipes = [], []
    for plan in placed:
        ours, theirs = context.Pipe()
        process = context.Process(target=fanout.run_load, args=(plan, theirs), daemon=True)
        process.start()
        theirs.close()
        processes.append(process)
        pipes.append(ours)
    return processes, pipes


def run(args: argparse.Namespace, setup: Setup, cluster: str | None) -> None:
    processes, pipes = load_processes(args, setup)
    try:
        fanout._expect(pipes, "ready", args.timeout)
        counts_before = asyncio.run(stream_counts(cluster)) if cluster else (0, 0)
        cpu_before = [node.cpu_seconds() for node in setup.nodes]
        machine_before = fanout.machine_busy_seconds()
        for pipe in pipes:
            pipe.send("go")
        fanout._expect(pipes[:1], "sent", args.timeout)
        deadline = time.monotonic() + args.drain
        delivered = 0
        while delivered < len(pipes) - 1 and time.monotonic() < deadline:
            for ready in multiprocessing.connection.wait(pipes[1:], deadline - time.monotonic()):
                assert isinstance(ready, multiprocessing.connection.Connection)
                if ready.recv()["kind"] == "delivered":
                    delivered += 1
        cpu = [
            node.cpu_seconds() - before
            for node, before in zip(setup.nodes, cpu_before, strict=True)
        ]
        machine = fanout.machine_busy_seconds() - machine_before
        for pipe in pipes:
            pipe.send("end")
        reports = fanout._expect(pipes, "report", 60)
        counts_after = asyncio.run(stream_counts(cluster)) if cluster else (0, 0)
        for pipe in pipes:
            pipe.send("quit")
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        for pipe in pipes:
            pipe.close()
    show(setup, reports, cpu, counts_before, counts_after)
    load = sum(report["cpu"] for report in reports)
    print(
        f"  load {load:.2f} s CPU; anything else on the machine {machine - sum(cpu) - load:.2f} s"
    )


def show(
    setup: Setup,
    reports: list[dict[str, Any]],
    cpu: list[float],
    before: tuple[int, int],
    after: tuple[int, int],
) -> None:
    sender = reports[0]
    latencies, acks = array.array("q"), array.array("q")
    for report in reports:
        latencies.frombytes(report["latencies"])
    acks.frombytes(sender["acks"])
    deliveries = sum(report["deliveries"] for report in reports)
    seconds = (max(report["last"] for report in reports) - sender["first_send"]) / 1e9
    print(f"{setup.name}:")
    problem = f" (first: {sender['first_error']})" if sender["errors"] else ""
    print(
        f"  {deliveries:,} deliveries in {seconds:.2f} s = {deliveries / seconds:,.0f}/s; "
        f"failed sends {sender['errors']}{problem}"
    )
    deliveries_sorted, acks_sorted = sorted(latencies), sorted(acks)
    print(
        f"  send->delivery ms: p50 {fanout.percentile(deliveries_sorted, 0.5):.1f}, "
        f"p99 {fanout.percentile(deliveries_sorted, 0.99):.1f}; "
        f"send->reply ms: p50 {fanout.percentile(acks_sorted, 0.5):.2f}, "
        f"p99 {fanout.percentile(acks_sorted, 0.99):.2f}"
    )
    per_node = ", ".join(
        f"{node.name} {used:.2f} s = {used / max(1, deliveries) * 1e6:.1f} us/delivery"
        for node, used in zip(setup.nodes, cpu, strict=True)
    )
    print(f"  server CPU: {per_node}")
    batches, events = after[0] - before[0], after[1] - before[1]
    if batches:
        print(
            f"  writer appends: {events:,} events in {batches:,} JetStream messages "
            f"({events / batches:.1f} per message), {events / seconds:,.0f} events/s"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"{args.devices} devices ({args.devices_per_user} per user), {args.messages} messages, "
        f"window {args.window}, rate {args.rate or 'open'}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as temporary:
        work = Path(temporary)
        single = fanout.start_server(
            "single", node_command(work, "single", None, 0), work / "single.err", 60, set()
        )
        try:
            run(args, Setup("one server, local log (--fsync always)", [single], 0, "a"), None)
        finally:
            single.stop()
        with nats_server(work) as cluster:
            one = fanout.start_server(
                "n1", node_command(work, "n1", cluster, 0), work / "n1.err", 60, set()
            )
            try:
                wait_writer(one)
                run(args, Setup("one cluster node", [one], 0, "b"), cluster)
                two = fanout.start_server(
                    "n2", node_command(work, "n2", cluster, 0), work / "n2.err", 60, set()
                )
                try:
                    run(
                        args,
                        Setup("two nodes, sender on the follower", [one, two], 1, "c"),
                        cluster,
                    )
                    run(args, Setup("two nodes, sender on the writer", [one, two], 0, "d"), cluster)
                finally:
                    two.stop()
            finally:
                one.stop()


if __name__ == "__main__":
    main()
