"""Per-check metrics in the Prometheus text exposition format 0.0.4, produced by
`prometheus_client` (a custom collector in a fresh registry, `generate_latest`).

Every series carries the labels `check_id`, `check_name`, `check_type`, `project` and
`tags` (the check's tags, sorted, comma-joined). A value that is not known (a check that
never ran, a window without counted time, no successful run for latency quantiles) is
left out rather than exported as NaN. docs/metrics.md lists the families."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("UP", "DEGRADED", "LATE", "DOWN", "PAUSED", "UNKNOWN")
# `tocsin_check_up` is 1 for these, 0 for the others.
UP_STATUSES = frozenset({"UP", "DEGRADED"})
QUANTILES = (0.5, 0.95, 0.99)
UPTIME_WINDOWS = ("24h", "7d", "30d")
LATENCY_WINDOW = "24h"
LABELS = ("check_id", "check_name", "check_type", "project", "tags")


@dataclass(frozen=True, slots=True)
class CheckSample:
    """What the export knows of one check. Times are Unix seconds, latencies seconds,
    uptime a ratio in [0, 1]; None is unknown."""

    check_id: int
    name: str
    type: str
    project: str
    tags: tuple[str, ...]
    status: str
    last_check_at: float | None = None
    response_time_s: float | None = None
    # quantile (0.5, 0.95, 0.99) -> seconds, over the last LATENCY_WINDOW
    latency_s: dict[float, float | None] = field(default_factory=dict)
    # window ("24h", "7d", "30d") -> ratio
    uptime: dict[str, float | None] = field(default_factory=dict)

    @property
    def up(self) -> int:
        return 1 if self.status in UP_STATUSES else 0

    def labels(self) -> list[str]:
        return [
            str(self.check_id),
            self.name,
            self.type,
            self.project,
            ",".join(sorted(self.tags)),
        ]


def _quantile(q: float) -> str:
    return format(q, "g")


class ChecksCollector(Collector):
    """The families of `samples`, collected once per exposition."""

    def __init__(self, samples: Sequence[CheckSample]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "tocsin_check_status",
            "The check's current status: 1 for the series of its status, 0 for the others"
            " (UP, DEGRADED, LATE, DOWN, PAUSED, UNKNOWN).",
            labels=[*LABELS, "status"],
        )
        up = GaugeMetricFamily(
            "tocsin_check_up",
            "1 when the check is UP or DEGRADED, 0 when it is DOWN, LATE, PAUSED or UNKNOWN.",
            labels=LABELS,
        )
        latency = SummaryMetricFamily(
            "tocsin_check_latency_seconds",
            f"Latency of the check's successful runs over the last {LATENCY_WINDOW}, by"
            " quantile (from the rollups' latency sketches).",
            labels=LABELS,
        )
        uptime = GaugeMetricFamily(
            "tocsin_check_uptime_ratio",
            "Share of the window the check was not DOWN (maintenance, paused and no-data"
            " time excluded), 0 to 1.",
            labels=[*LABELS, "window"],
        )
        last = GaugeMetricFamily(
            "tocsin_check_last_check_timestamp_seconds",
            "When the check's last result started, in Unix seconds.",
            labels=LABELS,
        )
        response = GaugeMetricFamily(
            "tocsin_check_response_time_seconds",
            "Response time of the check's last result.",
            labels=LABELS,
        )
        for s in self._samples:
            labels = s.labels()
            for name in STATUSES:
                status.add_metric([*labels, name], 1.0 if s.status == name else 0.0)
            up.add_metric(labels, float(s.up))
            by_name = dict(zip(LABELS, labels, strict=True))
            for q in QUANTILES:
                v = s.latency_s.get(q)
                if v is not None:
                    latency.samples.append(
                        Sample(
                            "tocsin_check_latency_seconds",
                            {**by_name, "quantile": _quantile(q)},
                            v,
                            None,
                            None,
                        )
                    )
            for w in UPTIME_WINDOWS:
                ratio = s.uptime.get(w)
                if ratio is not None:
                    uptime.add_metric([*labels, w], ratio)
            if s.last_check_at is not None:
                last.add_metric(labels, s.last_check_at)
            if s.response_time_s is not None:
                response.add_metric(labels, s.response_time_s)
        yield from (status, up, latency, uptime, last, response)


def render(samples: Sequence[CheckSample]) -> bytes:
    """The exposition (CONTENT_TYPE) of `samples`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChecksCollector(samples))
    return generate_latest(registry)
