"""Reports: a 90-day report over many checks' rollups, built in each format.

    python bench/reports.py [--checks 1000] [--days 90] [--json]

What runs, in this process, as in `tocsin serve`: a SQLite store (a file in a temporary
directory) holding --checks checks that have existed for --days + 10 days, each with a
few minute rollups on every one of the last --days + 1 days (written through
`Store.write_batch`, so the hour and day tiers are merged as in production) and an
incident now and then; then one report of the last --days days (`period`: not aligned
to days, so the day tier in the middle and the hour tier at both ends) per format,
built by `ReportBuilder.build` as the background worker builds it (reading the rollups,
computing, rendering, storing the document).

Reported per format: the time to build the report (and, for JSON, the time of the
figures alone, which every format shares), its CPU time and the document's size.
With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, emit_json, machine
from tocsin.encryption import SecretBox
from tocsin.models import Rollup
from tocsin.reports import Period, ReportBuilder
from tocsin.reports.compute import compute
from tocsin.store.sqlite import SqliteStore

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
# A latency sketch (rust_core/stats.rs) of four runs around 100 ms.
SKETCH = struct.pack("<I", 0) + struct.pack("<hI", 231, 4)


def _minute(check_id: int, start_ms: int, down: bool) -> Rollup:
    return Rollup(
        check_id=check_id,
        start_ms=start_ms,
        span_ms=MINUTE,
        runs_up=4,
        runs_down=2 if down else 0,
        runs_degraded=0,
        downtime_ms=30_000 if down else 0,
        excluded_ms=0,
        incidents=1 if down else 0,
        sketch=SKETCH,
    )


async def seed(store: SqliteStore, path: Path, checks: int, days: int) -> tuple[int, list[int]]:
    org = int((await store.create_organization("bench"))["id"])
    ids = []
    for n in range(checks):
        row = await store.create_check(
            org, {"name": f"svc-{n:05d}", "type": "noop", "interval": 60, "timeout": 1}
        )
        ids.append(int(row["id"]))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE checks SET created_at = ?", (time.time() - (days + 10) * 86_400,))
    today = int(time.time() * 1000) // DAY * DAY
    for d in range(days + 1, -1, -1):
        day = today - d * DAY
        batch = []
        for i in ids:
            for hour in (3, 11, 19):
                batch.append(_minute(i, day + hour * HOUR + (i % 60) * MINUTE, (i + d) % 37 == 0))
        await store.write_batch([], [], batch)
    return org, ids


async def run(checks: int, days: int) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "bench.db"
    store = SqliteStore(path, SecretBox.generate())
    await store.open()
    try:
        t0 = time.perf_counter()
        org, ids = await seed(store, path, checks, days)
        seeded_s = time.perf_counter() - t0
        now = time.time()
        period = Period(now - days * 86_400, now)
        t0 = time.perf_counter()
        content = await compute(store, org, ids, period)
        figures_s = time.perf_counter() - t0
        lines = len(content["checks"])
        builder = ReportBuilder(store)
        formats: dict[str, dict[str, Any]] = {}
        for fmt in ("json", "csv", "html", "pdf"):
            row = await store.insert(
                "reports",
                org,
                {
                    "name": f"bench {fmt}",
                    "format": fmt,
                    "status": "pending",
                    "params": {"check_ids": ids, "from": period.start, "to": period.end},
                },
            )
            cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            await builder.build(row["id"], org)
            wall = time.perf_counter() - t0
            done = await store.report_meta([org], row["id"])
            if done is None or done["status"] != "done":
                raise RuntimeError(f"the {fmt} report was not built: {done}")
            formats[fmt] = {
                "build_s": round(wall, 3),
                "cpu_s": round(cpu_seconds() - cpu0, 3),
                "bytes": done["size"],
            }
        return {
            "benchmark": "reports",
            "machine": machine(),
            "checks": checks,
            "days": days,
            "tiers": content["period"]["tiers"],
            "lines": lines,
            "seed_s": round(seeded_s, 3),
            "figures_s": round(figures_s, 3),
            "formats": formats,
        }
    finally:
        await store.close()
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = asyncio.run(run(args.checks, args.days))
    if args.json:
        emit_json(out)
        return
    print(f"reports: {out['checks']} checks, {out['days']} days ({', '.join(out['tiers'])})")
    print(f"  seeding {out['seed_s']} s; figures alone {out['figures_s']} s")
    for fmt, f in out["formats"].items():
        print(f"  {fmt:5} {f['build_s']:8.3f} s  cpu {f['cpu_s']:7.3f} s  {f['bytes']:>10,} bytes")


if __name__ == "__main__":
    main()
