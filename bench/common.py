"""Helpers shared by the benchmark programs: CPU time, percentiles, expected runs on a
check's phase grid, and the JSON/table output convention."""

from __future__ import annotations

import json
import math
import platform
import resource
from collections.abc import Sequence
from typing import Any

from tocsin import _core


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def expected_runs(ids: Sequence[int] | range, interval_ms: int, lo_ms: int, hi_ms: int) -> int:
    """Grid points of every check's schedule in (lo, hi]."""
    total = 0
    for i in ids:
        phase = _core.phase_ms(i, interval_ms)
        total += (hi_ms - phase) // interval_ms - (lo_ms - phase) // interval_ms
    return total


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                platform.processor(),
            )
    except OSError:
        model = platform.processor()
    import os

    return f"{os.cpu_count()} CPU ({model}), {platform.system()} {platform.machine()}"


def emit_json(payload: dict[str, Any]) -> None:
    """The last line of a benchmark's output with --json."""
    print(json.dumps(payload))


def cargo_bench(name: str, json_out: bool) -> int:
    """Run a native benchmark program (`rust_core/benches/NAME.rs`, release build)."""
    import subprocess
    from pathlib import Path

    cmd = ["cargo", "bench", "--quiet", "--bench", name, "--"]
    if json_out:
        cmd.append("--json")
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(cmd, cwd=root, check=False, timeout=900).returncode
