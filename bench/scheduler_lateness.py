"""Scheduler lateness: N checks with a no-op probe for D seconds through the real engine,
against the same schedule driven the way a Python user would write it (`loop.call_at`
per check) as the baseline.

    python bench/scheduler_lateness.py --checks 100000 --interval 60 --duration 120 [--json]

Prints expected vs dispatched runs, missed and duplicate runs, dispatch lateness
(actual dispatch minus due time) p50/p99/max, the busiest 1-second window relative to
the mean, and the process CPU seconds. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from common import cpu_seconds, emit_json, expected_runs, percentile
from tocsin import Check, Engine, Result, _core


@dataclass
class Figures:
    name: str
    expected: int
    dispatched: int
    missed: int
    duplicates: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    busiest_second_vs_mean: float
    cpu_seconds: float


def analyse(
    name: str,
    runs: list[tuple[int, int, int]],
    ids: range,
    interval_ms: int,
    window: tuple[int, int],
    cpu: float,
) -> Figures:
    """`runs` are (check_id, due_ms, dispatched_us); only dues inside `window` (ms,
    exclusive start, inclusive end) count."""
    lo, hi = window
    seen: Counter[tuple[int, int]] = Counter()
    lateness: list[float] = []
    per_second: Counter[int] = Counter()
    for check_id, due_ms, dispatched_us in runs:
        if not lo < due_ms <= hi:
            continue
        seen[(check_id, due_ms)] += 1
        lateness.append((dispatched_us - due_ms * 1000) / 1000)
        per_second[dispatched_us // 1_000_000] += 1
    expected = expected_runs(ids, interval_ms, lo, hi)
    duplicates = sum(n - 1 for n in seen.values())
    # Busiest second among the whole seconds inside the window.
    first, last = lo // 1000 + 1, hi // 1000 - 1
    counts = [per_second.get(s, 0) for s in range(first, last + 1)]
    mean = sum(counts) / len(counts) if counts else math.nan
    lateness.sort()
    return Figures(
        name=name,
        expected=expected,
        dispatched=len(seen),
        missed=expected - len(seen),
        duplicates=duplicates,
        lateness_p50_ms=round(percentile(lateness, 0.50), 3),
        lateness_p99_ms=round(percentile(lateness, 0.99), 3),
        lateness_max_ms=round(lateness[-1] if lateness else math.nan, 3),
        busiest_second_vs_mean=round(max(counts) / mean, 3) if counts and mean else math.nan,
        cpu_seconds=round(cpu, 2),
    )


async def run_engine(n: int, interval_s: float, duration: float) -> Figures:
    runs: list[tuple[int, int, int]] = []

    def on_batch(results: Sequence[Result], _changes: Sequence[Any]) -> None:
        for r in results:
            assert r.due_at is not None
            runs.append((r.check_id, round(r.due_at * 1000), round(r.started_at * 1e6)))

    interval_ms = round(interval_s * 1000)
    ids = range(1, n + 1)
    async with Engine() as engine:
        engine.add_listener(on_batch)
        cpu0 = cpu_seconds()
        engine.upsert([Check(id=i, type="noop", interval=interval_s, timeout=1) for i in ids])
        # Runs due after the upsert returned are certainly scheduled; earlier grid
        # points may legitimately have been passed while loading.
        start_ms = int(time.time() * 1000) + 1
        await asyncio.sleep(duration)
        end_ms = int(time.time() * 1000)
        await asyncio.sleep(0.3)  # let the last batch drain
        cpu = cpu_seconds() - cpu0
    return analyse("tocsin engine", runs, ids, interval_ms, (start_ms, end_ms), cpu)


async def run_call_at(n: int, interval_s: float, duration: float) -> Figures:
    """The baseline: one `loop.call_at` timer per check, re-armed at due + interval."""
    loop = asyncio.get_running_loop()
    runs: list[tuple[int, int, int]] = []
    interval_ms = round(interval_s * 1000)
    handles: dict[int, asyncio.TimerHandle] = {}
    offset = time.time() - loop.time()

    def fire(check_id: int, due_ms: int) -> None:
        runs.append((check_id, due_ms, time.time_ns() // 1000))
        nxt = due_ms + interval_ms
        handles[check_id] = loop.call_at(nxt / 1000 - offset, fire, check_id, nxt)

    ids = range(1, n + 1)
    cpu0 = cpu_seconds()
    now_ms = int(time.time() * 1000)
    for i in ids:
        phase = _core.phase_ms(i, interval_ms)
        due = now_ms - now_ms % interval_ms + phase
        if due < now_ms:
            due += interval_ms
        handles[i] = loop.call_at(due / 1000 - offset, fire, i, due)
    start_ms = int(time.time() * 1000) + 1
    await asyncio.sleep(duration)
    end_ms = int(time.time() * 1000)
    await asyncio.sleep(0.3)
    for h in handles.values():
        h.cancel()
    cpu = cpu_seconds() - cpu0
    return analyse("asyncio call_at", runs, ids, interval_ms, (start_ms, end_ms), cpu)


ROWS = [
    ("expected runs", "expected", "{:d}"),
    ("dispatched runs", "dispatched", "{:d}"),
    ("missed runs", "missed", "{:d}"),
    ("duplicate runs", "duplicates", "{:d}"),
    ("lateness p50 (ms)", "lateness_p50_ms", "{:.3f}"),
    ("lateness p99 (ms)", "lateness_p99_ms", "{:.3f}"),
    ("lateness max (ms)", "lateness_max_ms", "{:.3f}"),
    ("busiest second / mean", "busiest_second_vs_mean", "{:.3f}"),
    ("CPU seconds", "cpu_seconds", "{:.2f}"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checks", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=1.0, help="seconds (1 to 86400)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (max 600)")
    p.add_argument("--no-baseline", action="store_true", help="skip the call_at baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args(argv)
    if not 1 <= args.checks <= 1_000_000 or not 0 < args.duration <= 600:
        p.error("--checks must be 1..1000000 and --duration 0..600")

    try:
        import uvloop

        runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner, loop_name = asyncio.run, "asyncio"

    figures = [runner(run_engine(args.checks, args.interval, args.duration))]
    if not args.no_baseline:
        figures.append(runner(run_call_at(args.checks, args.interval, args.duration)))

    print(
        f"scheduler lateness: {args.checks} checks, interval {args.interval:g} s,"
        f" {args.duration:g} s per run, {loop_name}, {platform.machine()}"
    )
    print(f"{'':24}" + "".join(f"{f.name:>20}" for f in figures))
    for label, key, fmt in ROWS:
        cells = "".join(f"{fmt.format(getattr(f, key)):>20}" for f in figures)
        print(f"{label:24}{cells}")
    if args.json:
        emit_json(
            {
                "bench": "scheduler_lateness",
                "checks": args.checks,
                "interval_s": args.interval,
                "duration_s": args.duration,
                "loop": loop_name,
                "results": {f.name: asdict(f) for f in figures},
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
