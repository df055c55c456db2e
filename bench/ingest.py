"""Store ingest and read latency: sustained `write_batch` of raw results through the real
store (SQLite or a throwaway PostgreSQL cluster), then the latency of one check page
(the check, its last 100 results, 24 h / 30 d / 90 d uptime from rollups) over a
history of rollups.

    python bench/ingest.py [--backend sqlite|postgres] [--checks 10000] [--days 30]
                           [--seconds 20] [--batch 5000] [--json] [--profile]

Ingest: `--checks` checks (one organisation, created one `create_check` call each), then
for `--seconds` (or until `--max-rows`) batches of `--batch` results spread round-robin
over all checks go through `store.write_batch(results, [], [])`, one after another.
Results are generated per batch just before the write; the generation time is measured
apart, so the table shows both rows/s through the store (time inside write_batch only)
and end to end. One warm-up batch is not timed.

History: hour-tier rollups for the last `--hour-hours` hours, day-tier rollups for the
last `--days` days and minute-tier rollups for the last `--minute-hours` hours of every
check are loaded straight into the rollups table (COPY on PostgreSQL, executemany on
SQLite); every check gets at least 100 raw results (extra untimed batches if the ingest
phase wrote fewer). PostgreSQL tables are ANALYZEd after loading (a long-running
database has statistics); SQLite is left as the store leaves it.

Page: for random checks, one after another (one client): get_check, list_results(100),
and list_rollups + tocsin.figures for 24 h (hour tier), 30 d and 90 d (day tier).

--profile adds a per-statement time breakdown of write_batch and a cProfile of the
Python side of the ingest phase (stderr); its figures are slower than a plain run.

The PostgreSQL cluster is tests/pgcluster.py's: fsync, synchronous_commit and
full_page_writes off. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import math
import os
import pstats
import random
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from common import emit_json, machine, percentile
from tocsin import _core
from tocsin.encryption import SecretBox
from tocsin.figures import figures
from tocsin.models import Result, Status, Timings
from tocsin.store.sql import ROLLUP_COLUMNS, SqlStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TARGET_ROWS_PER_S = {"sqlite": 50_000, "postgres": 200_000}
TARGET_PAGE_P99_MS = 20.0

INTERVAL_S = 60
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
LOAD_CHUNK = 50_000
# ln((1 + 0.01) / (1 - 0.01)): the native sketch's bucket width (rust_core/stats.rs).
LN_GAMMA = 0.020_000_666_706_669_05
PAGE_PARTS = ("check", "results", "24h", "30d", "90d")


def log(msg: str) -> None:
    print(f"ingest: {msg}", file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------------------


class ResultSource:
    """Results round-robin over the checks: round r of check i is due at
    base + r * interval + the check's phase, and starts 0.2 to 3 ms later."""

    def __init__(self, ids: Sequence[int], base: float, seed: int) -> None:
        self.ids = list(ids)
        self.base = base
        self.phase = [_core.phase_ms(i, INTERVAL_S * 1000) / 1000 for i in self.ids]
        self.seq = 0
        self.rng = random.Random(seed)

    def batch(self, size: int) -> list[Result]:
        rng, ids, phase, n = self.rng, self.ids, self.phase, len(self.ids)
        out: list[Result] = []
        append = out.append
        for k in range(self.seq, self.seq + size):
            i = k % n
            due = self.base + (k // n) * INTERVAL_S + phase[i]
            started = due + 0.0002 + rng.random() * 0.003
            if rng.random() < 0.02:
                append(
                    Result(
                        ids[i],
                        Status.DOWN,
                        started,
                        5000.0,
                        due_at=due,
                        error_kind="timeout",
                        message="no response within 5 s",
                        timings=Timings(dns_ms=0.2, connect_ms=0.4),
                        details_json='{"address": "127.0.0.1"}',
                    )
                )
                continue
            connect = 0.3 + rng.random() * 2
            first_byte = connect + rng.lognormvariate(3.5, 0.5)
            append(
                Result(
                    ids[i],
                    Status.UP,
                    started,
                    first_byte + rng.random() * 3,
                    due_at=due,
                    status_code=200,
                    timings=Timings(dns_ms=0.2, connect_ms=connect, first_byte_ms=first_byte),
                    details_json='{"address": "127.0.0.1", "bytes": 1532}',
                )
            )
        self.seq += size
        return out


class Sketches:
    """Latency sketches in the store's byte form, cached by (profile, samples)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cache: dict[tuple[int, int], bytes] = {}

    def get(self, profile: int, n: int) -> bytes:
        key = (profile, n)
        found = self.cache.get(key)
        if found is None:
            mu = math.log(20 + 15 * profile)
            counts = Counter(
                math.ceil(math.log(self.rng.lognormvariate(mu, 0.45)) / LN_GAMMA) for _ in range(n)
            )
            found = struct.pack("<I", 0) + b"".join(
                struct.pack("<hI", i, counts[i]) for i in sorted(counts)
            )
            self.cache[key] = found
        return found


def rollup_rows(
    tier: str,
    ids: Sequence[int],
    org_id: int,
    starts: Sequence[int],
    span_ms: int,
    sketches: Sketches,
    rng: random.Random,
) -> list[tuple[Any, ...]]:
    """Rows in ROLLUP_COLUMNS order: one per check and start; one run a minute, mostly
    UP, now and then a few minutes DOWN (an incident)."""
    runs = span_ms // MINUTE_MS
    p_down = {"minute": 0.01, "hour": 0.02, "day": 0.3}[tier]
    rows = []
    for cid in ids:
        profile = cid % 8
        for start in starts:
            down = 0
            if rng.random() < p_down:
                down = 1 if runs == 1 else rng.randint(1, min(30, runs // 2))
            up = runs - down
            rows.append(
                (
                    tier,
                    cid,
                    start,
                    org_id,
                    span_ms,
                    up,
                    down,
                    0,
                    down * MINUTE_MS,
                    0,
                    1 if down else 0,
                    sketches.get(profile, up),
                )
            )
    return rows


# -- backends -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_store(backend: str) -> AsyncIterator[SqlStore]:
    box = SecretBox.generate()
    if backend == "sqlite":
        from tocsin.store.sqlite import SqliteStore

        with tempfile.TemporaryDirectory(prefix="tocsin-bench-") as d:
            store: SqlStore = SqliteStore(Path(d) / "bench.db", box)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        return

    from pgcluster import PgCluster, new_base_dir
    from tocsin.store.postgres import PostgresStore

    base = new_base_dir()
    try:
        cluster = PgCluster(base)
        cluster.start()
        try:
            store = PostgresStore(cluster.create_database("bench"), box)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# Constant column names only; the values are bound.
ROLLUP_INSERT = (
    f"INSERT INTO rollups ({', '.join(ROLLUP_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})"
)


async def load_rollups(store: SqlStore, rows: list[tuple[Any, ...]]) -> None:
    for lo in range(0, len(rows), LOAD_CHUNK):
        chunk = rows[lo : lo + LOAD_CHUNK]
        async with store._write() as c:
            raw = getattr(c, "raw", None)
            if store.backend == "postgresql" and raw is not None:
                await raw.copy_records_to_table("rollups", records=chunk, columns=ROLLUP_COLUMNS)
            else:
                await c.executemany(ROLLUP_INSERT, chunk)


async def database_bytes(store: SqlStore) -> int | None:
    async with store._read() as c:
        if store.backend == "postgresql":
            return int(await c.fetchval("SELECT pg_database_size(current_database())"))
    path = getattr(store, "path", None)
    if path is None:
        return None
    return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))


# -- profiling ------------------------------------------------------------------------------


class StatementTimer:
    """Wraps the store's connection class and bulk insert to time every statement of
    write_batch by its SQL (the bench's own instrumentation, --profile only)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.undo: list[Callable[[], None]] = []

    def _wrap(self, owner: Any, name: str, label: Callable[[Any], str]) -> None:
        original = getattr(owner, name)

        async def timed(*args: Any, **kw: Any) -> Any:
            key = label(args)
            t0 = time.perf_counter()
            try:
                return await original(*args, **kw)
            finally:
                self.seconds[key] += time.perf_counter() - t0
                self.calls[key] += 1

        setattr(owner, name, timed)
        self.undo.append(lambda: setattr(owner, name, original))

    def __enter__(self) -> StatementTimer:
        from tocsin.store.postgres import _PgConn
        from tocsin.store.sqlite import _SqliteConn

        conn_class = _PgConn if self.store.backend == "postgresql" else _SqliteConn

        def sql(args: Any) -> str:
            return " ".join(str(args[1]).split())[:70]

        for name in ("fetch", "execute", "executemany"):
            self._wrap(conn_class, name, sql)
        if self.store.backend == "postgresql":
            # COPY goes around the Conn wrapper; SQLite's INSERT is timed above.
            self._wrap(
                self.store, "_insert_results", lambda _args: "COPY results (_insert_results)"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self.undo):
            undo()

    def report(self, total: float) -> list[str]:
        lines = [f"  {'statement':72} {'calls':>7} {'s':>8} {'% of write_batch':>17}"]
        for key, s in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {key:72} {self.calls[key]:7d} {s:8.2f} {100 * s / total:16.1f}%")
        rest = total - sum(self.seconds.values())
        label = "the rest: Python (row tuples, last_result JSON), BEGIN/COMMIT, pool"
        lines.append(f"  {label:72} {'':7} {rest:8.2f} {100 * rest / total:16.1f}%")
        return lines


# -- phases ---------------------------------------------------------------------------------


async def create_checks(store: SqlStore, n: int) -> tuple[int, list[int], float]:
    org = await store.create_organization("bench")
    org_id = int(org["id"])
    t0 = time.perf_counter()
    ids = []
    for i in range(n):
        row = await store.create_check(
            org_id,
            {
                "name": f"check {i}",
                "type": "uptime",
                "url": "http://127.0.0.1/",
                "interval": INTERVAL_S,
                "timeout": 5,
            },
        )
        ids.append(int(row["id"]))
    return org_id, ids, time.perf_counter() - t0


async def ingest(store: SqlStore, source: ResultSource, args: argparse.Namespace) -> dict[str, Any]:
    # Warm-up (not timed): first statements, first partition.
    await store.write_batch(source.batch(args.batch), [], [])
    latencies: list[float] = []
    gen_s = store_s = 0.0
    rows = 0
    profiler = cProfile.Profile() if args.profile else None
    timer = StatementTimer(store) if args.profile else contextlib.nullcontext()
    wall0 = time.perf_counter()
    deadline = wall0 + args.seconds
    with timer:
        while rows < args.max_rows and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            results = source.batch(min(args.batch, args.max_rows - rows))
            t1 = time.perf_counter()
            if profiler:
                profiler.enable()
            written = await store.write_batch(results, [], [])
            if profiler:
                profiler.disable()
            t2 = time.perf_counter()
            assert written.results == len(results), written
            gen_s += t1 - t0
            store_s += t2 - t1
            latencies.append((t2 - t1) * 1000)
            rows += len(results)
    wall = time.perf_counter() - wall0
    latencies.sort()
    out: dict[str, Any] = {
        "rows": rows,
        "batches": len(latencies),
        "wall_s": wall,
        "store_s": store_s,
        "generate_s": gen_s,
        "rows_per_s": rows / store_s if store_s else math.nan,
        "rows_per_s_end_to_end": rows / wall if wall else math.nan,
        "generate_rows_per_s": rows / gen_s if gen_s else math.nan,
        "batch_p50_ms": percentile(latencies, 0.50),
        "batch_p99_ms": percentile(latencies, 0.99),
        "batch_max_ms": latencies[-1] if latencies else math.nan,
    }
    if args.profile:
        assert isinstance(timer, StatementTimer)
        assert profiler is not None
        lines = ["per-statement time inside write_batch (wall, awaited):"]
        lines += timer.report(store_s)
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
        lines.append(
            "cProfile of write_batch (this thread only; ncalls counts coroutine resumptions,"
            " and profiling inflates Python time):"
        )
        lines.append(buf.getvalue())
        out["profile"] = lines
    return out


async def load_history(
    store: SqlStore, org_id: int, ids: list[int], args: argparse.Namespace, now_ms: int
) -> dict[str, Any]:
    rng = random.Random(7)
    sketches = Sketches(11)
    loaded: dict[str, Any] = {}
    t0 = time.perf_counter()
    hour0 = now_ms - now_ms % HOUR_MS
    day0 = now_ms - now_ms % DAY_MS
    minute0 = now_ms - now_ms % MINUTE_MS
    plan = (
        ("day", [day0 - k * DAY_MS for k in range(args.days)], DAY_MS),
        ("hour", [hour0 - k * HOUR_MS for k in range(args.hour_hours)], HOUR_MS),
        # Closed minutes only.
        ("minute", [minute0 - k * MINUTE_MS for k in range(1, args.minute_hours * 60 + 1)], 60_000),
    )
    for tier, starts, span in plan:
        count = 0
        # Per slice of checks, so the rows of 10,000 checks are never all in memory.
        step = max(1, 200_000 // max(1, len(starts)))
        for lo in range(0, len(ids), step):
            rows = rollup_rows(tier, ids[lo : lo + step], org_id, starts, span, sketches, rng)
            await load_rollups(store, rows)
            count += len(rows)
        loaded[f"rollups_{tier}"] = count
        log(f"loaded {count} {tier} rollups ({len(starts)} per check)")
    loaded["rollups_load_s"] = round(time.perf_counter() - t0, 2)
    return loaded


async def page(
    store: SqlStore, org_ids: list[int], check_id: int, now_ms: int
) -> tuple[float, list[float]]:
    parts: list[float] = []
    t0 = time.perf_counter()
    check = await store.get_check(org_ids, check_id)
    assert check is not None
    t1 = time.perf_counter()
    parts.append(t1 - t0)
    results = await store.list_results(org_ids, check_id, limit=100, before=None)
    assert len(results) == 100, len(results)
    t2 = time.perf_counter()
    parts.append(t2 - t1)
    for tier, span in (("hour", DAY_MS), ("day", 30 * DAY_MS), ("day", 90 * DAY_MS)):
        ta = time.perf_counter()
        rollups = await store.list_rollups(org_ids, check_id, tier, since_ms=now_ms - span)
        figs = figures(rollups)
        assert figs["uptime_pct"] is not None or not rollups, figs
        parts.append(time.perf_counter() - ta)
    total = time.perf_counter() - t0
    return total * 1000, [p * 1000 for p in parts]


async def pages(
    store: SqlStore, org_id: int, ids: list[int], args: argparse.Namespace, now_ms: int
) -> dict[str, Any]:
    rng = random.Random(3)
    for _ in range(min(20, args.pages)):  # warm-up: connections, statement caches
        await page(store, [org_id], rng.choice(ids), now_ms)
    totals: list[float] = []
    parts: list[list[float]] = [[] for _ in PAGE_PARTS]
    deadline = time.perf_counter() + args.page_seconds
    while len(totals) < args.pages and time.perf_counter() < deadline:
        total, each = await page(store, [org_id], rng.choice(ids), now_ms)
        totals.append(total)
        for acc, v in zip(parts, each, strict=True):
            acc.append(v)
    totals.sort()
    out: dict[str, Any] = {
        "pages": len(totals),
        "page_p50_ms": percentile(totals, 0.50),
        "page_p95_ms": percentile(totals, 0.95),
        "page_p99_ms": percentile(totals, 0.99),
        "page_max_ms": totals[-1] if totals else math.nan,
    }
    for name, acc in zip(PAGE_PARTS, parts, strict=True):
        acc.sort()
        out[f"part_{name}_p50_ms"] = percentile(acc, 0.50)
        out[f"part_{name}_p99_ms"] = percentile(acc, 0.99)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    async with open_store(args.backend) as store:
        org_id, ids, create_s = await create_checks(store, args.checks)
        log(f"created {len(ids)} checks in {create_s:.1f} s")

        now = time.time()
        # Enough rounds for the ingest bound and the 100-results floor, ending near now
        # (at most a day back: a longer span only creates more partitions).
        rounds = math.ceil(max(args.max_rows + 2 * args.batch, 100 * len(ids)) / len(ids))
        source = ResultSource(ids, now - min(rounds * INTERVAL_S, 86_400.0), seed=1)
        ing = await ingest(store, source, args)
        log(
            f"{ing['rows']} rows in {ing['batches']} batches,"
            f" {ing['rows_per_s']:.0f} rows/s in the store"
        )

        # Every check gets at least 100 raw results (round-robin: whole rounds suffice).
        t0 = time.perf_counter()
        extra = 0
        while source.seq < 100 * len(ids):
            size = min(args.batch, 100 * len(ids) - source.seq)
            await store.write_batch(source.batch(size), [], [])
            extra += size
        topup_s = time.perf_counter() - t0
        if extra:
            log(f"wrote {extra} more results (untimed) in {topup_s:.1f} s")

        now_ms = int(time.time() * 1000)
        loaded = await load_history(store, org_id, ids, args, now_ms)
        loaded["results"] = source.seq
        loaded["results_per_check_min"] = source.seq // len(ids)
        loaded["results_topup"] = extra
        if store.backend == "postgresql":
            async with store._write() as c:
                await c.execute("ANALYZE")
        loaded["database_bytes"] = await database_bytes(store)

        rd = await pages(store, org_id, ids, args, now_ms)
        log(f"{rd['pages']} page loads, p99 {rd['page_p99_ms']:.2f} ms")
    return {
        "create_checks_s": create_s,
        "ingest": ing,
        "loaded": loaded,
        "read": rd,
        "total_s": time.perf_counter() - t_start,
        # Other work on the machine skews every figure; the 1-minute load says how much.
        "loadavg_1m": (round(load_before, 2), round(os.getloadavg()[0], 2)),
    }


# -- output -----------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(args: argparse.Namespace, loop_name: str, r: dict[str, Any]) -> dict[str, Any]:
    ing, loaded, rd = r["ingest"], r["loaded"], r["read"]
    target_rows = TARGET_ROWS_PER_S[args.backend]
    rows_ok = ing["rows_per_s"] >= target_rows
    page_ok = rd["page_p99_ms"] <= TARGET_PAGE_P99_MS
    db_mb = loaded["database_bytes"] / 1e6 if loaded["database_bytes"] else math.nan

    print(f"store ingest and page read: {args.backend}, {loop_name}, {machine()}")
    print(
        f"{args.checks} checks (created one call each in {r['create_checks_s']:.1f} s),"
        f" batches of {args.batch}, {args.seconds:g} s of ingest; whole run"
        f" {r['total_s']:.0f} s; load average (1 min) before/after"
        f" {r['loadavg_1m'][0]:.2f}/{r['loadavg_1m'][1]:.2f}"
    )
    print(
        f"loaded: {loaded['results']} raw results (>= {loaded['results_per_check_min']} per"
        f" check; {loaded['results_topup']} written untimed after the ingest phase),"
        f" rollups: day {loaded['rollups_day']} ({args.days} d per check),"
        f" hour {loaded['rollups_hour']} ({args.hour_hours} h per check),"
        f" minute {loaded['rollups_minute']} ({args.minute_hours} h per check)"
        f" in {loaded['rollups_load_s']:.1f} s; database {db_mb:.0f} MB"
    )
    rows = [
        ("ingest rows", f"{ing['rows']}", ""),
        ("ingest batches", f"{ing['batches']}", ""),
        (
            "rows/s through the store",
            f"{ing['rows_per_s']:,.0f}",
            f">= {target_rows:,}: {met(rows_ok)}",
        ),
        (
            "rows/s end to end",
            f"{ing['rows_per_s_end_to_end']:,.0f}",
            f">= {target_rows:,}: {met(ing['rows_per_s_end_to_end'] >= target_rows)}",
        ),
        ("result generation rows/s", f"{ing['generate_rows_per_s']:,.0f}", ""),
        ("batch p50 (ms)", f"{ing['batch_p50_ms']:.1f}", ""),
        ("batch p99 (ms)", f"{ing['batch_p99_ms']:.1f}", ""),
        ("batch max (ms)", f"{ing['batch_max_ms']:.1f}", ""),
        ("page loads", f"{rd['pages']}", ""),
        ("page p50 (ms)", f"{rd['page_p50_ms']:.2f}", ""),
        ("page p95 (ms)", f"{rd['page_p95_ms']:.2f}", ""),
        (
            "page p99 (ms)",
            f"{rd['page_p99_ms']:.2f}",
            f"<= {TARGET_PAGE_P99_MS:g}: {met(page_ok)}",
        ),
        ("page max (ms)", f"{rd['page_max_ms']:.2f}", ""),
    ]
    for name in PAGE_PARTS:
        rows.append(
            (
                f"  {name} p50 / p99 (ms)",
                f"{rd[f'part_{name}_p50_ms']:.2f} / {rd[f'part_{name}_p99_ms']:.2f}",
                "",
            )
        )
    for label, value, target in rows:
        print(f"{label:28}{value:>18}   {target}")
    print(
        "  (check = get_check; results = list_results(limit=100); 24h = hour tier,"
        " 30d/90d = day tier, each list_rollups + tocsin.figures)"
    )
    if "profile" in ing:
        print("\n".join(ing["profile"]), file=sys.stderr)

    def r3(v: float) -> float:
        return round(v, 3)

    return {
        "bench": "ingest",
        "backend": args.backend,
        "loop": loop_name,
        "machine": machine(),
        "checks": args.checks,
        "days": args.days,
        "batch": args.batch,
        "create_checks_s": r3(r["create_checks_s"]),
        "ingest_rows": ing["rows"],
        "ingest_batches": ing["batches"],
        "ingest_seconds_in_store": r3(ing["store_s"]),
        "ingest_seconds_wall": r3(ing["wall_s"]),
        "ingest_rows_per_s": round(ing["rows_per_s"]),
        "ingest_rows_per_s_end_to_end": round(ing["rows_per_s_end_to_end"]),
        "generate_rows_per_s": round(ing["generate_rows_per_s"]),
        "ingest_batch_p50_ms": r3(ing["batch_p50_ms"]),
        "ingest_batch_p99_ms": r3(ing["batch_p99_ms"]),
        "ingest_batch_max_ms": r3(ing["batch_max_ms"]),
        "loaded": {
            **loaded,
            "hour_hours": args.hour_hours,
            "minute_hours": args.minute_hours,
        },
        "pages": rd["pages"],
        **{k: r3(v) for k, v in rd.items() if k.endswith("_ms")},
        "total_s": round(r["total_s"], 1),
        "loadavg_1m": list(r["loadavg_1m"]),
        "targets": {
            "ingest_rows_per_s": target_rows,
            "ingest_met": rows_ok,
            "page_p99_ms": TARGET_PAGE_P99_MS,
            "page_met": page_ok,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--checks", type=int, default=10_000)
    p.add_argument("--days", type=int, default=30, help="days of day-tier rollups per check")
    p.add_argument("--hour-hours", type=int, default=48, help="hours of hour-tier rollups")
    p.add_argument("--minute-hours", type=int, default=2, help="hours of minute-tier rollups")
    p.add_argument("--seconds", type=float, default=20.0, help="ingest duration (max 600)")
    p.add_argument("--max-rows", type=int, default=10_000_000, help="ingest row bound")
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--pages", type=int, default=2_000, help="page loads to time")
    p.add_argument("--page-seconds", type=float, default=60.0, help="bound on page loads")
    p.add_argument("--profile", action="store_true", help="statement timings and cProfile")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args(argv)
    if not 1 <= args.checks <= 1_000_000 or not 0 < args.seconds <= 600:
        p.error("--checks must be 1..1000000 and --seconds 0..600")
    if args.batch < 1 or args.max_rows < 1 or args.days < 1 or args.pages < 1:
        p.error("--batch, --max-rows, --days and --pages must be positive")

    try:
        import uvloop

        runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner, loop_name = asyncio.run, "asyncio"

    payload = report(args, loop_name, runner(run(args)))
    if args.json:
        emit_json(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
