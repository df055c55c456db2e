"""Timing-wheel cost per operation (insert, cancel, reschedule, expire) at 10k, 100k and
1M pending timers, measured natively (rust_core/benches/wheel.rs) in a release build.

    python bench/wheel.py [--json]
"""

from __future__ import annotations

import argparse
import sys

from common import cargo_bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    return cargo_bench("wheel", p.parse_args(argv).json)


if __name__ == "__main__":
    sys.exit(main())
