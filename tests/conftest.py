"""Shared fixtures: real HTTP targets and real `tocsin serve` processes on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pgcluster import PgCluster, new_base_dir
from tocsin.security import hash_password, hash_token, new_token
from tocsin.store import Store, open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Target:
    """A real HTTP server on 127.0.0.1 that a test can take down and bring back on the
    same port. `/` answers 200, `/status/{code}` answers that code, `/slow` sleeps."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def _root(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text="ok")

    async def _status(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/slow", self._slow)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.start()
    yield t
    await t.stop()


class Server:
    """`tocsin serve` as a child process with its own data directory."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "serve.log"
        self.token = ""

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, *extra: str) -> None:
        """Start (or restart) it; `extra` CLI arguments are kept for later restarts."""
        self.extra = extra or getattr(self, "extra", ())
        extra = self.extra
        if self.host != "127.0.0.1":
            extra = ("--host", self.host, *extra)
        self.log_file = open(self.log, "ab")  # noqa: SIM115  closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tocsin.cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tocsin serve exited early:\n{self.log.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"tocsin serve did not start:\n{self.log.read_text()}")
        creds = (self.data_dir / "initial-credentials").read_text()
        self.token = dict(line.split("=", 1) for line in creds.split())["token"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.log_file.close()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.log_file.close()
            self.proc = None


async def api(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    *,
    token: str | None = None,
    **kw: Any,
) -> tuple[int, Any]:
    """One API call as the server's admin (or as `token`): (status, JSON or text)."""
    headers = {"Authorization": f"Bearer {token}"} if token else server.headers
    headers = {**headers, **kw.pop("headers", {})}
    async with http.request(method, server.base + path, headers=headers, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


def server_store(server: Server) -> Store:
    """A store on the running server's own database (SQLite allows a second writer in
    WAL mode), whichever backend it was started with, with its key."""
    args = list(server.extra)
    database = args[args.index("--database") + 1] if "--database" in args else None
    return open_store(database, server.data_dir)


async def other_org_user(
    server: Server, *, role: str = "OWNER", org_id: int | None = None
) -> tuple[str, int]:
    """A second user with a token: in a new organisation of their own, or with `role` in
    `org_id`. Written straight into the running server's database."""
    store = server_store(server)
    await store.open(migrate=False)
    try:
        email = f"user-{new_token()[4:12].lower()}@example.test"
        user_id = await store.create_user(email, hash_password("correct horse battery"))
        if org_id is None:
            org_id = int((await store.create_organization(f"Org of {email}"))["id"])
        await store.add_membership(org_id, user_id, role)
        token = new_token()
        await store.create_token(user_id, "test", token[:8], hash_token(token))
    finally:
        await store.close()
    return token, org_id


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL server for the whole session (see tests/pgcluster.py)."""
    # Not tmp_path_factory: pytest's temp root is 0700, closed to the server account
    # that runs the cluster when the tests run as root.
    base = new_base_dir()
    try:
        cluster = PgCluster(base)
        cluster.start()
    except RuntimeError as e:
        shutil.rmtree(base, ignore_errors=True)
        # Not a skip: scripts/test.sh installs PostgreSQL, so its absence is a broken setup.
        pytest.fail(f"cannot run the PostgreSQL test cluster: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh database, private to this test and dropped after it."""
    # The test name in the database name helps when reading server logs; the suffix keeps
    # it unique across parametrizations and reruns.
    hint = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    name = f"t_{hint}_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_database(name)
    yield url
    pg_cluster.drop_database(name)
