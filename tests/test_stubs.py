"""The hand-written `_core.pyi` matches the built native module."""

from __future__ import annotations

import subprocess
import sys


def test_core_stub_matches_the_native_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "tocsin._core"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
