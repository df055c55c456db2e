"""Aggregation: results folded into verdicts and rollups per second per core, and the
time to compute 24 h / 7 d / 30 d / 90 d uptime and p99 latency for 10,000 checks from
rollups, measured natively (rust_core/benches/aggregate.rs) in a release build.

    python bench/aggregate.py [--json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args(argv)
    cmd = ["cargo", "bench", "--quiet", "--bench", "aggregate", "--"]
    if args.json:
        cmd.append("--json")
    return subprocess.run(cmd, cwd=ROOT, check=False, timeout=900).returncode


if __name__ == "__main__":
    sys.exit(main())
