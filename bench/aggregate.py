"""Aggregation: results folded into verdicts and rollups per second per core, and the
time to compute 24 h / 7 d / 30 d / 90 d uptime and p99 latency for 10,000 checks from
rollups, measured natively (rust_core/benches/aggregate.rs) in a release build.

    python bench/aggregate.py [--json]
"""

from __future__ import annotations

import argparse
import sys

from common import cargo_bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    return cargo_bench("aggregate", p.parse_args(argv).json)


if __name__ == "__main__":
    sys.exit(main())
