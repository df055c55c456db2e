"""A throwaway PostgreSQL cluster for tests and benchmarks.

The PostgreSQL store has to be tested against a real server, but a system service is the
wrong thing to depend on: it may not run in a container, its configuration and
credentials are the machine's business, and tests that restart the server (to exercise
reconnects) must not disturb anything else. So this module runs a private cluster from
the installed server binaries: its own data directory, its own port on 127.0.0.1, trust
authentication, durability switched off for speed (the data is thrown away anyway).
Only the standard library and the PostgreSQL client and server binaries are used, so
the harness works before any Python database driver is installed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

SUPERUSER = "tocsin"
# Debian's postgresql package creates `postgres`; without it a dedicated account is made,
# because initdb and postgres refuse to run as root.
_SYSTEM_USERS = ("postgres", "tocsin-pg")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LOG_TAIL_LINES = 40

INITDB_TIMEOUT = 120.0
PG_CTL_WAIT = 60  # seconds pg_ctl itself waits for start or stop
SQL_TIMEOUT = 60.0


def find_pg_bin() -> Path | None:
    """The newest server bin directory (`initdb`, `pg_ctl`, `postgres`), or None."""
    required = ("initdb", "pg_ctl", "postgres")

    def complete(d: Path) -> bool:
        return all((d / exe).is_file() for exe in required)

    def version(d: Path) -> tuple[int, ...]:
        # Directory names are versions ("15", "9.6"); anything else sorts as oldest.
        try:
            return tuple(int(part) for part in d.parent.name.split("."))
        except ValueError:
            return ()

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in candidates:
        if complete(d):
            return d
    found = shutil.which("pg_ctl")
    if found is None:
        return None
    # PATH may hold only a symlink to pg_ctl; its siblings live next to the target.
    for d in (Path(found).parent, Path(found).resolve().parent):
        if complete(d):
            return d
    return None


def new_base_dir() -> Path:
    """A fresh directory for a cluster that the server account can reach.

    pytest's tmp_path lives under /tmp/pytest-of-USER/, which is mode 0700, so when the
    tests run as root the server account could not even traverse to a cluster there.
    mkdtemp directly under the system temp directory (world-traversable /tmp) avoids
    that; PgCluster then hands the directory itself to the server account.
    """
    return Path(tempfile.mkdtemp(prefix="tocsin-pg-"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_account() -> str:
    """The OS account that owns and runs the cluster when we are root."""
    for name in _SYSTEM_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    name = _SYSTEM_USERS[-1]
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # A concurrent run may have created it between the lookup and useradd.
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"could not create system user {name}: {result.stderr}") from None
    return name


def _clean_env() -> dict[str, str]:
    # PGHOST, PGDATA, PGPORT and friends from the caller's shell would silently redirect
    # the binaries to some other server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["PGCONNECT_TIMEOUT"] = "10"
    return env


class PgCluster:
    """One private PostgreSQL server: data in `base_dir/data`, listening on 127.0.0.1."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found under "
                "/usr/lib/postgresql/*/bin or on PATH; install the Debian package "
                "`postgresql` (scripts/test.sh does this through scripts/setup.sh)"
            )
        self.bin_dir = bin_dir
        self.base_dir = base_dir.resolve()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self._port = port if port is not None else _free_port()
        self._os_user = _server_account() if os.geteuid() == 0 else None
        psql = bin_dir / "psql"
        which_psql = shutil.which("psql")
        if psql.is_file():
            self._psql = str(psql)
        elif which_psql is not None:
            self._psql = which_psql
        else:
            raise RuntimeError("psql not found next to the server binaries or on PATH")

    @property
    def port(self) -> int:
        return self._port

    @property
    def user(self) -> str:
        """The database superuser (fixed, independent of the OS account)."""
        return SUPERUSER

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _as_server(self, args: list[str]) -> list[str]:
        if self._os_user is None:
            return args
        # runuser -u execs the command directly (no login shell), so the account needs
        # neither a home directory nor a usable shell.
        return ["runuser", "-u", self._os_user, "--", *args]

    def _run(
        self, args: list[str], timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # cwd: the caller's working directory may not be readable by the server account.
        result = subprocess.run(
            self._as_server(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base_dir,
            env=_clean_env(),
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _prepare_base_dir(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._os_user is None:
            return
        account = pwd.getpwnam(self._os_user)
        for root, dirs, files in os.walk(self.base_dir):
            os.chown(root, account.pw_uid, account.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid)
        # Ownership is not enough if an ancestor is closed to the account (a 0700
        # pytest tmp dir, for one); ask the kernel instead of reimplementing its rules.
        if self._run(["test", "-w", str(self.base_dir)], timeout=10, check=False).returncode:
            raise RuntimeError(
                f"{self.base_dir} is not reachable by the server account {self._os_user}: "
                "every parent directory must be traversable; use new_base_dir()"
            )

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=INITDB_TIMEOUT,
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """initdb on first use, then start the server and wait until it accepts connections."""
        self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            return
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c shared_buffers=256MB",
            ]
        )
        pg_ctl = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l"]
        args = [*pg_ctl, str(self.log_path), "-o", options, "-w", "-t", str(PG_CTL_WAIT), "start"]
        try:
            # -l matters beyond logging: without it the postmaster would inherit our
            # capture pipes and subprocess.run would wait for the server to exit.
            result = self._run(args, timeout=PG_CTL_WAIT + 30, check=False)
            failure = None if result.returncode == 0 else result.stdout + result.stderr
        except subprocess.TimeoutExpired:
            failure = "pg_ctl start did not return"
        if failure is None:
            return
        # A server that came up too late must not outlive the failed start.
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._stop("immediate")
        raise RuntimeError(
            f"PostgreSQL did not start on 127.0.0.1:{self.port}: {failure.strip()}\n"
            f"--- tail of {self.log_path} ---\n{self.log_tail()}"
        )

    def _stop(self, mode: str) -> None:
        if not self.is_running():
            return
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(PG_CTL_WAIT),
                "stop",
            ],
            timeout=PG_CTL_WAIT + 30,
        )

    def stop(self) -> None:
        """Fast shutdown (open sessions are disconnected); the data directory stays."""
        self._stop("fast")

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        # pg_ctl status answers 0 while a postmaster for this data directory is alive,
        # 3 when not; it reads postmaster.pid, so it needs no connection.
        status = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        return self._run(status, timeout=30, check=False).returncode == 0

    def psql(self, sql: str, url: str | None = None) -> str:
        """Run SQL through psql (default: the `postgres` database); unaligned tuples only."""
        # -X: no ~/.psqlrc; -A -t: bare values, so callers can compare output directly.
        args = [self._psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        result = subprocess.run(
            [*args, "-d", url or self.url, "-c", sql],
            capture_output=True,
            text=True,
            timeout=SQL_TIMEOUT,
            env=_clean_env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed (exit {result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        self.psql(f'CREATE DATABASE "{_checked(name)}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` (if it exists), disconnecting whoever is still in it."""
        self.psql(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')


def _checked(name: str) -> str:
    # Names go into SQL and URLs unquoted/unescaped, so only plain identifiers are allowed.
    if not _NAME.fullmatch(name):
        raise ValueError(f"database name must match {_NAME.pattern}: {name!r}")
    return name
