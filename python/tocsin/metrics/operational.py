"""The server's own metrics (`GET /metrics`, off unless an operational token is set):
the engine (checks, probes dispatched, skipped, in flight, queued for the loop, how late
probes start), the result writer (buffered, written, dropped, outage), the notification
outbox (pending, sent), live-event subscribers, the public cache, and the process (CPU,
memory, descriptors: prometheus_client's ProcessCollector). Values are read when scraped;
the caller gathers them into a `Snapshot`."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tocsin.models import Result, StatusChange

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (type, help); a counter's name is given without `_total`.
FAMILIES: dict[str, tuple[str, str]] = {
    "tocsin_engine_checks": ("gauge", "Checks scheduled in the engine."),
    "tocsin_engine_probes_dispatched": ("counter", "Probe runs started by the engine."),
    "tocsin_engine_probes_skipped": (
        "counter",
        "Probe runs skipped because the check's previous run had not finished.",
    ),
    "tocsin_engine_probes_in_flight": ("gauge", "Python probes running now."),
    "tocsin_engine_backlog": ("gauge", "Due Python probes waiting for a slot."),
    "tocsin_engine_lateness_seconds": (
        "gauge",
        "How late probe runs started after their due time, over the last minute (max and"
        " mean by the `stat` label).",
    ),
    "tocsin_engine_results": ("counter", "Results handed out by the engine."),
    "tocsin_writer_buffered": (
        "gauge",
        "Rows the result writer holds, not yet written (by `kind`).",
    ),
    "tocsin_writer_results_written": ("counter", "Results written to the store."),
    "tocsin_writer_results_dropped": (
        "counter",
        "Results dropped because the writer's buffer was full.",
    ),
    "tocsin_writer_outage_seconds": (
        "gauge",
        "How long the store has been failing the writer's writes (0 when healthy).",
    ),
    "tocsin_outbox_pending": ("gauge", "Notifications not yet delivered (pending or sending)."),
    "tocsin_outbox_sent": ("counter", "Notifications sent by this process."),
    "tocsin_live_subscribers": ("gauge", "Open live-event streams."),
    "tocsin_public_cache_hits": (
        "counter",
        "Public cache hits (by `cache`: the status pages', the badges').",
    ),
    "tocsin_public_cache_misses": ("counter", "Public cache misses."),
    "tocsin_public_cache_builds": ("counter", "Public documents built."),
    "tocsin_public_cache_entries": ("gauge", "Entries in the public cache."),
    "tocsin_store_reads": ("counter", "Database reads begun (sessions, not statements)."),
    "tocsin_store_writes": ("counter", "Database write transactions begun."),
}


@dataclass(frozen=True, slots=True)
class Value:
    name: str
    value: float
    labels: Mapping[str, str] | None = None


class Lateness:
    """An engine listener that remembers how late each result started after its due
    time (the engine's lateness), over a sliding minute."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.results = 0
        # (at, max lateness of the batch, sum, count)
        self._batches: collections.deque[tuple[float, float, float, int]] = collections.deque()

    def on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        self.results += len(results)
        late = [r.started_at - r.due_at for r in results if r.due_at]
        if late:
            now = time.monotonic()
            self._batches.append((now, max(late), sum(late), len(late)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._batches and self._batches[0][0] < now - self.window:
            self._batches.popleft()

    def stats(self) -> tuple[float, float] | None:
        """(max, mean) in seconds over the window; None without results."""
        self._trim(time.monotonic())
        if not self._batches:
            return None
        n = sum(b[3] for b in self._batches)
        return (
            max(0.0, max(b[1] for b in self._batches)),
            max(0.0, sum(b[2] for b in self._batches) / n),
        )


class SnapshotCollector(Collector):
    def __init__(self, values: Sequence[Value]) -> None:
        self._values = values

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[Value]] = {}
        for v in self._values:
            by_name.setdefault(v.name, []).append(v)
        for name, (kind, doc) in FAMILIES.items():
            values = by_name.get(name)
            if not values:
                continue
            label_names = sorted(values[0].labels or {})
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, doc, labels=label_names)
            else:
                family = GaugeMetricFamily(name, doc, labels=label_names)
            for v in values:
                family.add_metric([(v.labels or {})[k] for k in label_names], v.value)
            yield family


def render(values: Sequence[Value], *, process: bool = True) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(values))
    if process:
        ProcessCollector(registry=registry)
    return generate_latest(registry)
