"""SLA figures and SLO state from rollups, computed by the native core."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import tocsin._core as _core
from tocsin.models import Rollup


def figures(
    rollups: Iterable[Rollup],
    *,
    apdex_t_ms: float = 500.0,
    latency_threshold_ms: float | None = None,
) -> dict[str, float | int | None]:
    """Uptime % (DOWN is downtime; maintenance, paused and no-data time excluded),
    downtime, incidents, MTTR, MTBF, runs, p50/p95/p99 latency of successful runs,
    Apdex(T), and with `latency_threshold_ms` the successful runs within it (a latency
    SLI's good events) over the given buckets."""
    return _core.figures([r.astuple() for r in rollups], apdex_t_ms, latency_threshold_ms)


@dataclass(frozen=True, slots=True)
class SloState:
    sli: float
    budget_remaining: float
    burn_rate: float
    budget_warning: bool
    budget_exhausted: bool
    burn_rate_alert: bool


def slo(
    target_percentage: float,
    window: tuple[float, float],
    burn_window: tuple[float, float],
    *,
    budget_warn_pct: float = 25.0,
    burn_rate_threshold: float = 2.0,
) -> SloState:
    """An SLO's state from (good, total) counts over its window and over the burn-rate
    window (availability: counted ms; latency: runs under the threshold)."""
    return SloState(
        *_core.slo(
            target_percentage / 100.0,
            window,
            burn_window,
            budget_warn_pct / 100.0,
            burn_rate_threshold,
        )
    )
