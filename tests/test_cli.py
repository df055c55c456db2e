"""The `tocsin` command: clear refusals instead of stack traces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tocsin.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    proc = run("version")
    assert proc.returncode == 0
    assert proc.stdout.strip()[0].isdigit()


def test_serve_refuses_an_unsupported_or_unreachable_database_with_a_message(
    tmp_path: Path,
) -> None:
    proc = run("serve", "--data-dir", str(tmp_path), "--database", "mysql://127.0.0.1/x")
    assert proc.returncode == 2
    assert "unsupported database URL" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Port 1 on loopback: nothing listens there.
    url = "postgresql://tocsin:sekrit@127.0.0.1:1/x"
    proc = run("serve", "--data-dir", str(tmp_path), "--database", url)
    assert proc.returncode == 2
    assert "postgresql://tocsin:***@127.0.0.1:1/x is unavailable" in proc.stderr
    assert "sekrit" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_db_upgrade_migrates_and_then_reports_up_to_date(tmp_path: Path, pg_url: str) -> None:
    for database in (None, pg_url):
        extra = ["--database", database] if database else []
        first = run("db", "upgrade", "--data-dir", str(tmp_path / "d"), *extra)
        assert first.returncode == 0, first.stderr
        assert "upgraded from schema version 0 to" in first.stdout
        second = run("db", "upgrade", "--data-dir", str(tmp_path / "d"), *extra)
        assert second.returncode == 0, second.stderr
        assert "up to date" in second.stdout


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run("serve", "--data-dir", str(tmp_path), "--port", str(port))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


def test_serve_refuses_an_unreadable_ca_file_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    proc = run("serve", "--data-dir", str(tmp_path / "d"), "--extra-ca-file", str(bad))
    assert proc.returncode == 2
    assert "extra_ca_pem: no certificate found" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("serve", "--data-dir", str(tmp_path / "d"), "--max-in-flight", "0")
    assert proc.returncode == 2
    assert "--max-in-flight" in proc.stderr


def test_serve_refuses_a_negative_retention(tmp_path: Path) -> None:
    proc = run("serve", "--data-dir", str(tmp_path), "--keep-raw-days", "-1")
    assert proc.returncode == 2
    assert "--keep-raw-days must be >= 0" in proc.stderr
    assert not (tmp_path / "tocsin.db").exists()
