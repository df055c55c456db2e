"""The embedding example in the README is the one in examples/, and it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_embeds_the_example_verbatim() -> None:
    example = (ROOT / "examples" / "embed.py").read_text()
    assert example.strip() in (ROOT / "README.md").read_text()


def test_the_embedding_example_runs_and_sees_its_checks_come_up() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "run_once: UP" in proc.stdout
    assert "check 1: UNKNOWN -> UP" in proc.stdout
    assert "check 2: UNKNOWN ->" in proc.stdout
