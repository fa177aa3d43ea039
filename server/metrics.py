"""``GET /metrics``: what an operator under attack needs to see, in the Prometheus text
exposition format (version 0.0.4,
https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format).

Hand-written rather than ``prometheus_client``: a dozen series, counters and one
histogram, and no dependency for that. Counters are kept here; gauges and counters
owned elsewhere (the log's, the hub's) are read when scraped. ``observe`` may be
called from the log's I/O thread: a few float additions, safe under the GIL for
this purpose (a scrape may see a histogram a single observation behind).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Final, Protocol

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, float]

LOGIN_RESULTS: Final = {-32001: "failed", -32004: "throttled"}


class WatchedLog(Protocol):
    """What /metrics reads of the event log."""

    fsync_observer: Callable[[float], None] | None
    appended: int

    @property
    def queued(self) -> int: ...


FSYNC_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                index = i
                break
        self.counts[index] += 1
        self.total += value

    def lines(self, name: str) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            yield f'{name}_bucket{{le="{le}"}} {cumulative}'
        yield f"{name}_sum {self.total!r}"
        yield f"{name}_count {cumulative}"


class Metrics:
    """Every series the server exposes, by name, with its HELP text and TYPE."""

    def __init__(self) -> None:
        self.described: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self.counts: dict[str, collections.Counter[Labels]] = {}
        self.readers: dict[str, Callable[[], Iterable[Sample]]] = {}
        self.histograms: dict[str, Histogram] = {}
        self.counter(
            "messenger_logins_total", "Login attempts by result (ok, failed, throttled...)."
        )
        self.counter("messenger_rpc_errors_total", "Error replies by JSON-RPC error code.")
        self.counter(
            "messenger_connections_refused_total",
            "Connections answered HTTP 503, by reason.",
        )
        self.counter(
            "messenger_connections_closed_total",
            "Connections the server closed on its own, by reason.",
        )
        self.counter("messenger_fd_exhausted_total", "Accepts that failed for want of an fd.")
        self.fsync_seconds = self.histogram(
            "messenger_fsync_seconds", "Time of one fsync of the event log.", FSYNC_BUCKETS
        )

    def count_answer(self, method: str | None, code: int | None) -> None:
        """``Dispatcher.on_answer``: logins by result, error replies by code."""
        if code is not None:
            self.inc("messenger_rpc_errors_total", code=str(code))
        if method == "login":
            result = "ok" if code is None else LOGIN_RESULTS.get(code, "invalid")
            self.inc("messenger_logins_total", result=result)

    def watch_log(self, log: WatchedLog) -> None:
        log.fsync_observer = self.fsync_seconds.observe
        self.read_value(
            "messenger_events_appended_total",
            "counter",
            "Events written to the log since start.",
            lambda: log.appended,
        )
        self.read_value(
            "messenger_log_queue_depth",
            "gauge",
            "Appends and compactions waiting for the log's writer.",
            lambda: log.queued,
        )

    def counter(self, name: str, help_text: str) -> None:
        self.described[name] = ("counter", help_text)
        self.counts[name] = collections.Counter()

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
        self.described[name] = ("histogram", help_text)
        self.histograms[name] = Histogram(buckets)
        return self.histograms[name]

    def read(
        self, name: str, kind: str, help_text: str, reader: Callable[[], Iterable[Sample]]
    ) -> None:
        """A series whose samples ``reader`` gives at each scrape."""
        self.described[name] = (kind, help_text)
        self.readers[name] = reader

    def read_value(self, name: str, kind: str, help_text: str, value: Callable[[], float]) -> None:
        self.read(name, kind, help_text, lambda: [((), value())])

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self.counts[name][tuple(sorted(labels.items()))] += amount

    def render(self) -> bytes:
        lines: list[str] = []
        for name, (kind, help_text) in self.described.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self.histograms:
                lines.extend(self.histograms[name].lines(name))
                continue
            samples = self.counts[name].items() if name in self.counts else self.readers[name]()
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
        return ("\n".join(lines) + "\n").encode()


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    pairs = (f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
