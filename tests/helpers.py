"""What the tests share besides fixtures (those are in conftest.py): real HTTP targets,
`tocsin serve` as a child process, calling its API as the admin or another user, polling,
and reading its event stream. The store-level tests' helpers are in store_helpers.py,
the probe and notification receivers in probe_servers.py and notify_receivers.py, the
throwaway PostgreSQL cluster in pgcluster.py. Test modules import from these, never from
one another."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tocsin.security import hash_password, hash_token, new_token
from tocsin.store import Store, open_store

# -- processes and targets on loopback -------------------------------------------------------


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


# -- calling the API ---------------------------------------------------------------------


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


async def call(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    auth: str | None = "admin",
    **kw: Any,
) -> tuple[int, Any]:
    """`auth`: "admin" (the first start's token), None (no credentials) or a bearer token."""
    headers = dict(kw.pop("headers", {}))
    if auth == "admin":
        headers.update(server.headers)
    elif auth is not None:
        headers["Authorization"] = f"Bearer {auth}"
    async with http.request(method, server.base + path, headers=headers, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def session(http: aiohttp.ClientSession, server: Server, email: str, password: str) -> str:
    """A session token from a password login."""
    async with http.post(
        server.base + "/api/auth/token", data={"username": email, "password": password}
    ) as resp:
        assert resp.status == 200
        token: str = (await resp.json())["access_token"]
    return token


async def new_user(http: aiohttp.ClientSession, server: Server, email: str) -> tuple[int, str]:
    """A user created by the admin; returns (id, session token)."""
    code, user = await call(
        http, server, "POST", "/api/users", json={"email": email, "password": "password-" + email}
    )
    assert code == 201, user
    return user["id"], await session(http, server, email, "password-" + email)


async def new_org(http: aiohttp.ClientSession, server: Server, name: str, auth: str) -> Any:
    """An organisation created by `auth` (see `call`), which becomes its OWNER."""
    code, org = await call(http, server, "POST", "/api/organizations/", auth, json={"name": name})
    assert code == 201, org
    return org


async def create_check(
    http: aiohttp.ClientSession, server: Server, url: str, **fields: Any
) -> dict[str, Any]:
    """An uptime check on `url` probed every second (`fields` override)."""
    body = {"name": "web", "type": "uptime", "url": url, "interval": 1, "timeout": 2, **fields}
    code, check = await api(http, server, "POST", "/api/checks/", json=body)
    assert code == 200, check
    return check  # type: ignore[no-any-return]


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


# -- the event stream (`GET /api/events`) --------------------------------------------------


class EventStream:
    """A Server-Sent Events reader: `next()` gives the next event as a dict (`id`,
    `event`, `data` parsed from JSON) or a comment as `{"comment": …}`; None at the end
    of the stream."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.seen: list[dict[str, Any]] = []

    async def next(self, timeout: float = 20.0) -> dict[str, Any] | None:
        block: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line == "":
                    if block:
                        self.seen.append(block)
                        return block
                    continue
                if line.startswith(":"):
                    block["comment"] = line[1:].strip()
                    continue
                field, _, value = line.partition(": ")
                block[field] = json.loads(value) if field == "data" else value

    async def wait(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        """The first event (not comment) that satisfies `predicate`, including those
        read already."""
        for event in self.seen:
            if "event" in event and predicate(event):
                return event
        return await self.wait_new(predicate, timeout)

    async def wait_new(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        """The next event (not comment) not read yet that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout} s")
            event = await self.next(left)
            if event is None:
                raise AssertionError("the stream ended")
            if "event" in event and predicate(event):
                return event


def is_event(kind: str, **data: Any) -> Any:
    return lambda e: e["event"] == kind and all(e["data"].get(k) == v for k, v in data.items())


def stream_opener(http: aiohttp.ClientSession) -> Any:
    """`async with open_stream(server, "?heartbeat=1", token=…, headers=…) as stream:`"""

    def open_stream(server: Server, query: str = "", *, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or server.token}", **kw.pop("headers", {})}
        return _stream(http, server.base + "/api/events" + query, headers)

    return open_stream


class _stream:
    def __init__(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        self._http, self._url, self._headers = http, url, headers
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> EventStream:
        self._resp = await self._http.get(
            self._url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=None)
        )
        assert self._resp.status == 200, await self._resp.text()
        assert self._resp.headers["Content-Type"].startswith("text/event-stream")
        stream = EventStream(self._resp)
        first = await stream.next(5)
        assert first == {"comment": "connected"}
        return stream

    async def __aexit__(self, *exc: object) -> None:
        assert self._resp is not None
        self._resp.close()
