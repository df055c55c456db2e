"""A report's figures: for each check, the rollups that cover the period (the coarsest
tier that fits each stretch, `figures.tier_plan`), added up by the native core
(`figures.figures`, the arithmetic behind `/sla` and `/slo`); the totals over every
check; and the incidents of the period from the incidents table. Raw results are never
read."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tocsin.figures import apdex_t_of, clip, figures, sli_counts, slo, tier_plan
from tocsin.models import Rollup
from tocsin.store.base import Row, Store
from tocsin.store.tables import ROLLUP_TIERS
from tocsin.timestamps import iso

log = logging.getLogger("tocsin.reports")

FORMATS = ("json", "csv", "html", "pdf")
MAX_PERIOD_S = 400 * 86_400
# Periods up to this long are read down to the minute at their ends; longer ones to the
# hour (minutes are kept for 30 days by default, hours for a year).
MINUTE_EDGES_UP_TO_S = 31 * 86_400
# Checks whose rollups are read at once.
CHUNK = 200
# Incidents listed in a report (the most recent ones of the period).
MAX_INCIDENTS = 1000


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) in Unix seconds."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def finest(self) -> str:
        return "minute" if self.seconds <= MINUTE_EDGES_UP_TO_S else "hour"

    def plan(self) -> list[tuple[str, int, int]]:
        return tier_plan(
            round(self.start * 1000), round(self.end * 1000), ROLLUP_TIERS, self.finest
        )


def _s(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def _r(v: Any, digits: int = 4) -> Any:
    return round(v, digits) if isinstance(v, float) and math.isfinite(v) else v


def check_figures(check: Row, rollups: Sequence[Rollup], slo_row: Row | None) -> dict[str, Any]:
    """One check's line of the report."""
    apdex_t = apdex_t_of(check["config"])
    threshold = (
        float(slo_row["latency_threshold_ms"])
        if slo_row is not None and slo_row["sli_type"] == "latency"
        else None
    )
    f = figures(rollups, apdex_t_ms=apdex_t, latency_threshold_ms=threshold)
    line: dict[str, Any] = {
        "check_id": check["id"],
        "name": check["name"],
        "type": check["type"],
        "project_id": check.get("project_id"),
        "status": check.get("status"),
        "uptime_pct": _r(f["uptime_pct"]),
        "total_s": _s(f["total_ms"]),
        "downtime_s": _s(f["downtime_ms"]),
        "incidents": f["incidents"],
        "mttr_s": _s(f["mttr_ms"]),
        "mtbf_s": _s(f["mtbf_ms"]),
        "apdex": _r(f["apdex"]),
        "apdex_t_ms": apdex_t,
        "runs": f["runs"],
        "p50_ms": _r(f["p50_ms"], 3),
        "p95_ms": _r(f["p95_ms"], 3),
        "p99_ms": _r(f["p99_ms"], 3),
        "slo": None,
    }
    if slo_row is not None:
        good, total = sli_counts(f, threshold)
        state = slo(slo_row["target_percentage"], (good, total), (good, total))
        line["slo"] = {
            "sli_type": slo_row["sli_type"],
            "target_pct": slo_row["target_percentage"],
            "latency_threshold_ms": threshold,
            # null when the period holds no counted time (or no run, for latency)
            "attained_pct": _r(state.sli * 100) if total > 0 else None,
            "budget_remaining_pct": _r(state.budget_remaining * 100) if total > 0 else None,
            "met": (state.sli * 100 >= slo_row["target_percentage"]) if total > 0 else None,
            "budget_exhausted": state.budget_exhausted if total > 0 else None,
        }
    return line


def totals(lines: Sequence[Mapping[str, Any]], everything: Sequence[Rollup]) -> dict[str, Any]:
    """Every check's buckets added up as one: time and latency figures over the whole
    fleet; Apdex the runs-weighted mean of the checks' (each has its own T)."""
    f = figures(everything, apdex_t_ms=500.0)
    scored = [(ln["apdex"], ln["runs"]) for ln in lines if ln["apdex"] is not None]
    runs = sum(n for _, n in scored)
    slos = [ln["slo"] for ln in lines if ln["slo"] is not None]
    return {
        "checks": len(lines),
        "uptime_pct": _r(f["uptime_pct"]),
        "total_s": _s(f["total_ms"]),
        "downtime_s": _s(f["downtime_ms"]),
        "incidents": f["incidents"],
        "mttr_s": _s(f["mttr_ms"]),
        "mtbf_s": _s(f["mtbf_ms"]),
        "apdex": _r(sum(a * n for a, n in scored) / runs) if runs else None,
        "runs": f["runs"],
        "p95_ms": _r(f["p95_ms"], 3),
        "slos": len(slos),
        "slos_met": sum(1 for s in slos if s["met"]),
    }


def incident_line(row: Row, names: Mapping[int, str]) -> dict[str, Any]:
    started, ended = row["started_at"], row["resolved_at"]
    return {
        "id": row["id"],
        "check_id": row["check_id"],
        "check_name": names.get(row["check_id"], ""),
        "title": row["title"],
        "status": row["status"],
        "severity": row["severity"],
        "started_at": iso(started),
        "resolved_at": iso(ended),
        "duration_s": None if ended is None else round(ended - started, 3),
    }


async def compute(
    store: Store,
    org_id: int,
    check_ids: Sequence[int],
    period: Period,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The report's content (what the JSON format is): `period`, `checks` (one line per
    check still there), `totals`, `incidents`."""
    org = [org_id]
    wanted = set(check_ids)
    checks = [c for c in await store.report_checks(org) if c["id"] in wanted]
    slos = {
        s["check_id"]: s
        for s in await store.select("slos", org, limit=1_000_000)
        if s["check_id"] in wanted
    }
    plan = period.plan()
    lines: list[dict[str, Any]] = []
    everything: list[Rollup] = []
    for i in range(0, len(checks), CHUNK):
        chunk = checks[i : i + CHUNK]
        ids = [c["id"] for c in chunk]
        by_check: dict[int, list[Rollup]] = {cid: [] for cid in ids}
        for tier, since, until in plan:
            for r in await store.list_rollups_of(org, ids, tier, since_ms=since, until_ms=until):
                by_check[r.check_id].append(r)
        # The arithmetic in a worker thread: a large report must not stall the loop
        # (the API and the engine's results run on it).
        done, own_rollups = await asyncio.to_thread(_chunk_figures, chunk, by_check, slos)
        lines += done
        everything += own_rollups
        if progress is not None:
            progress(len(lines), len(checks))
    names = {c["id"]: c["name"] for c in checks}
    incidents = await store.check_incidents_between(
        org, list(names), since=period.start, until=period.end, limit=MAX_INCIDENTS
    )
    return {
        "period": {
            "from": iso(period.start),
            "to": iso(period.end),
            "seconds": round(period.seconds, 3),
            "tiers": sorted({tier for tier, _, _ in plan}),
        },
        "generated_at": iso(time.time()),
        "checks": lines,
        "totals": await asyncio.to_thread(totals, lines, everything),
        "incidents": [incident_line(r, names) for r in incidents],
    }


def _chunk_figures(
    chunk: Sequence[Row], by_check: Mapping[int, list[Rollup]], slos: Mapping[int, Row]
) -> tuple[list[dict[str, Any]], list[Rollup]]:
    """Each check's line, and its rollups clipped to its creation (for the totals)."""
    lines: list[dict[str, Any]] = []
    everything: list[Rollup] = []
    for c in chunk:
        created_ms = round(c["created_at"] * 1000)
        own = [
            clip(r, created_ms) for r in by_check[c["id"]] if r.start_ms + r.span_ms > created_ms
        ]
        everything += own
        lines.append(check_figures(c, own, slos.get(c["id"])))
    return lines, everything
