"""Real database servers for the database checks' tests, each a throwaway instance on
loopback from Debian's packages (scripts/test.sh installs them): MariaDB
(`mariadb-install-db` + `mariadbd`) and Redis (`redis-server`). PostgreSQL is the
session's cluster (pgcluster.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import free_port

READY_TIMEOUT = 60.0


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited early:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not listen within {READY_TIMEOUT} s")


class MariaDb:
    """A MariaDB server with a database `shop` (a table `orders` of 3 rows) and a user
    `probe` (password `probe-secret`) that may read it."""

    user = "probe"
    password = "probe-secret"
    database = "shop"

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="tocsin-mariadb-"))
        self.port = free_port()
        self.sock = self.base / "mysqld.sock"
        self.log = self.base / "mariadb.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists():
            raise RuntimeError("mariadbd not found: install mariadb-server (scripts/test.sh does)")
        user = ["--user=root"] if os.geteuid() == 0 else []
        data = self.base / "data"
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    "/usr/sbin/mariadbd",
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={self.sock}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--pid-file={self.base / 'mariadb.pid'}",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=16M",
                    *user,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, self.proc, self.log)
        self.sql(
            f"CREATE DATABASE {self.database};"
            f" CREATE TABLE {self.database}.orders (id INT PRIMARY KEY, total INT);"
            f" INSERT INTO {self.database}.orders VALUES (1, 10), (2, 20), (3, 30);"
            f" CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}';"
            f" GRANT SELECT ON {self.database}.* TO '{self.user}'@'%';"
        )

    def sql(self, statements: str) -> None:
        subprocess.run(
            ["mariadb", "--no-defaults", "-S", str(self.sock), "-u", "root", "-e", statements],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.base, ignore_errors=True)


class Redis:
    """A Redis server (no persistence) with a password and a key `queue:depth` = 7."""

    password = "redis-secret"

    def __init__(self) -> None:
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="tocsin-redis-"))
        self.log = self.base / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--requirepass",
                    self.password,
                    "--dir",
                    str(self.base),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, self.proc, self.log)
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "-a", self.password, "--no-auth-warning",
             "SET", "queue:depth", "7"],
            check=True,
            capture_output=True,
            timeout=10,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.base, ignore_errors=True)
