"""SLA figures and SLO state from rollups, computed by the native core."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tocsin._core as _core
from tocsin.models import Rollup


def floor_ms(ms: int, span: int) -> int:
    return ms - ms % span


def ceil_ms(ms: int, span: int) -> int:
    return -(-ms // span) * span


def clip(r: Rollup, created_ms: int, minute_ms: int = 60_000) -> Rollup:
    """A bucket that began before its check existed, clipped to the creation minute (the
    time before is neither uptime nor downtime)."""
    if r.start_ms >= created_ms:
        return r
    begin = floor_ms(created_ms, minute_ms)
    return dataclasses.replace(r, start_ms=begin, span_ms=r.start_ms + r.span_ms - begin)


def tier_plan(
    from_ms: int, to_ms: int, spans: Mapping[str, int], finest: str = "minute"
) -> list[tuple[str, int, int]]:
    """The reads that cover [from, to) with the coarsest tier that fits each stretch:
    `(tier, since_ms, until_ms)`, buckets starting in [since, until). `spans` is the
    tiers' spans, finest first (the store's ROLLUP_TIERS); `finest` the finest tier to
    read at the edges (from and to are first rounded to it). A stretch shorter than a
    tier's span is read from the next finer one, so a 90-day period reads whole days
    in the middle, whole hours and minutes only at its two ends."""
    tiers = list(spans)
    tiers = tiers[tiers.index(finest) :]
    lo, hi = floor_ms(from_ms, spans[finest]), floor_ms(to_ms, spans[finest])
    plan: list[tuple[str, int, int]] = []

    def cover(i: int, a: int, b: int) -> None:
        if a >= b:
            return
        tier = tiers[i]
        if i + 1 < len(tiers):
            span = spans[tiers[i + 1]]
            inner_a, inner_b = ceil_ms(a, span), floor_ms(b, span)
            if inner_a < inner_b:
                cover(i, a, inner_a)
                cover(i + 1, inner_a, inner_b)
                cover(i, inner_b, b)
                return
        plan.append((tier, a, b))

    cover(0, lo, hi)
    return plan


def apdex_t_of(config: Mapping[str, Any]) -> float:
    """A check's Apdex threshold T: its degraded threshold, else 500 ms."""
    return float(config.get("degraded_threshold_ms") or 500)


def sli_counts(f: Mapping[str, Any], latency_threshold_ms: float | None) -> tuple[float, float]:
    """An SLO's (good, total) events from `figures(…)` of its window: counted ms that
    were not down (availability), or runs within the threshold among all runs
    (latency: pass `latency_threshold_ms` to `figures` too)."""
    if latency_threshold_ms is None:
        total, down = float(f["total_ms"] or 0), float(f["downtime_ms"] or 0)
        return max(total - down, 0.0), total
    return float(f["runs_within_threshold"] or 0), float(f["runs"] or 0)


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
