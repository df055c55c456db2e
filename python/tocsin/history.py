"""A check's history as figures read it: its rollups over the last days, pieced
together from the coarsest tier that covers each stretch (whole days, then whole hours,
then the minutes of the current hour), never raw results; and its SLO's state now,
computed from them (the API's `/slo` and the SLO alerts read the same)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tocsin.figures import SloState, ceil_ms, clip, figures, floor_ms, sli_counts, slo
from tocsin.models import Rollup
from tocsin.store.base import Row, Store
from tocsin.store.tables import ROLLUP_TIERS

MINUTE, HOUR, DAY = (ROLLUP_TIERS[t] for t in ("minute", "hour", "day"))

_floor, _ceil = floor_ms, ceil_ms


class History:
    """A check's rollups over the last `days` (hour-aligned), pieced together from the
    coarsest tier that covers each stretch; buckets that began before the check existed
    are clipped to its creation."""

    def __init__(self, now_ms: int, created_ms: int) -> None:
        self.now_ms = now_ms
        self.created_ms = created_ms
        self.hour_now = _floor(now_ms, HOUR)
        self.day_now = _floor(now_ms, DAY)
        self.days: list[Rollup] = []
        self.hours: list[Rollup] = []
        self.minutes: list[Rollup] = []

    def start(self, days: int) -> int:
        return _ceil(self.now_ms - days * DAY, HOUR)

    async def load(self, store: Store, org_ids: list[int], check_id: int, days: int) -> None:
        start = self.start(days)
        self.days = await store.list_rollups(
            org_ids, check_id, "day", since_ms=_ceil(start, DAY), until_ms=self.day_now
        )
        self.hours = await store.list_rollups(
            org_ids, check_id, "hour", since_ms=start, until_ms=self.hour_now
        )
        self.minutes = await store.list_rollups(
            org_ids, check_id, "minute", since_ms=self.hour_now, until_ms=self.now_ms
        )

    def window(self, days: int) -> list[Rollup]:
        start = self.start(days)
        day_from, day_to = _ceil(start, DAY), self.day_now
        if day_from < day_to:
            picked = [r for r in self.days if day_from <= r.start_ms < day_to]
            picked += [
                r
                for r in self.hours
                if start <= r.start_ms < day_from or day_to <= r.start_ms < self.hour_now
            ]
        else:
            picked = [r for r in self.hours if start <= r.start_ms < self.hour_now]
        picked += self.minutes
        return [self.clip(r) for r in picked if r.start_ms + r.span_ms > self.created_ms]

    def clip(self, r: Rollup) -> Rollup:
        return clip(r, self.created_ms, MINUTE)


@dataclass(frozen=True, slots=True)
class SloNow:
    state: SloState
    window_start_ms: int


async def slo_state(
    store: Store, org_ids: list[int], check: Row, s: Row, now: float | None = None
) -> SloNow:
    """The state of SLO `s` (a `slos` row) of `check` now: the SLI over its window and
    over its burn-rate window (availability: time UP; latency: runs under the
    threshold), the budget left and the burn rate."""
    now_ms = round((time.time() if now is None else now) * 1000)
    h = History(now_ms, round(check["created_at"] * 1000))
    await h.load(store, org_ids, check["id"], s["window_days"])
    burn_from = now_ms - s["burn_rate_window_minutes"] * MINUTE
    burn = await store.list_rollups(org_ids, check["id"], "minute", since_ms=burn_from)
    threshold = s["latency_threshold_ms"] if s["sli_type"] == "latency" else None
    counts = []
    for rollups in (h.window(s["window_days"]), [h.clip(r) for r in burn]):
        f = figures(rollups, apdex_t_ms=500.0, latency_threshold_ms=threshold)
        counts.append(sli_counts(f, threshold))
    state = slo(
        s["target_percentage"],
        counts[0],
        counts[1],
        budget_warn_pct=s["budget_warn_pct"],
        burn_rate_threshold=s["burn_rate_threshold"],
    )
    return SloNow(state, h.start(s["window_days"]))
