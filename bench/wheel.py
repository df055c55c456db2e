"""Timing-wheel cost per operation (insert, cancel, reschedule, expire) at 10k, 100k and
1M pending timers, measured natively (rust_core/benches/wheel.rs) in a release build.

    python bench/wheel.py [--json]
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
    cmd = ["cargo", "bench", "--quiet", "--bench", "wheel", "--"]
    if args.json:
        cmd.append("--json")
    proc = subprocess.run(cmd, cwd=ROOT, check=False, timeout=900)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
