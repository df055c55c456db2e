"""Micro-benchmarks of the API's request path without a socket: the real app
(`create_app` over `Services.build`, every route and middleware) on a real SQLite store
in a temporary directory, its services started (engine, result writer, ping recorder…),
driven in-process by Falcon's ASGI test conductor on a uvloop loop, one request per
round. No HTTP server and no client: what is timed is the ASGI app (Falcon, the guard,
auth, rate limiting, the handler, the store's reads and writes, the JSON encoding) plus
the conductor's simulated ASGI events and one `run_until_complete`
(`test_harness_floor` times those two alone).

Setup: bootstrap's admin and token; 100 paused `uptime` checks and one heartbeat
check, straight into the store, then `services.start()` loads them into the engine.
The rate limits are on but set to 10^9 requests/s (TOCSIN_RATE_LIMIT_PER_TOKEN and
_PER_ADDRESS), so their bookkeeping runs and never refuses.

    .venv/bin/python -m pytest bench/micro --benchmark-only
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import falcon.testing
import pytest
import uvloop

from tocsin.api.app import create_app
from tocsin.api.ratelimit import ENV_PER_ADDRESS, ENV_PER_TOKEN
from tocsin.encryption import SecretBox
from tocsin.server import bootstrap
from tocsin.services import Services
from tocsin.store.sqlite import SqliteStore

pytestmark = pytest.mark.benchmark(group="api (in-process ASGI)")

CHECKS = 100
T = TypeVar("T")


@dataclass
class App:
    loop: asyncio.AbstractEventLoop
    conductor: falcon.testing.ASGIConductor
    services: Services
    token: str
    check_ids: list[int]
    heartbeat_id: int
    heartbeat_uuid: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def request(self, method: str, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.run(self.conductor.simulate_request(method, path, **kwargs))


async def _store_checks(store: SqliteStore) -> tuple[list[int], int, str]:
    """The checks, straight into the store: (uptime ids, heartbeat id, heartbeat uuid)."""
    ids = []
    for i in range(CHECKS):
        row = await store.create_check(
            1,
            {
                "name": f"paused {i}",
                "type": "uptime",
                "url": f"https://shop.example.com/{i}",
                "interval": 60,
                "timeout": 5,
                "is_active": False,
                "tags": ["shop", "eu"],
            },
        )
        ids.append(int(row["id"]))
    hb = await store.create_check(
        1,
        {
            "name": "nightly backup",
            "type": "heartbeat",
            "interval": 3600,
            "timeout": 60,
            "grace_period": 3600,
            "config": {"grace_period": 3600},
        },
    )
    return ids, int(hb["id"]), str(hb["uuid"])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    data_dir: Path = tmp_path_factory.mktemp("micro-api") / "data"
    data_dir.mkdir()
    with (
        pytest.MonkeyPatch.context() as mp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        mp.setenv(ENV_PER_TOKEN, "1000000000")
        mp.setenv(ENV_PER_ADDRESS, "1000000000")
        loop = runner.get_loop()
        store = SqliteStore(data_dir / "tocsin.db", SecretBox.from_environment(data_dir))
        loop.run_until_complete(store.open())
        try:
            loop.run_until_complete(bootstrap(store, data_dir))
            creds = (data_dir / "initial-credentials").read_text()
            token = dict(line.split("=", 1) for line in creds.split())["token"]
            ids, hb_id, hb_uuid = loop.run_until_complete(_store_checks(store))
            services = Services.build(store, data_dir)
            loop.run_until_complete(services.start())
            try:
                conductor = falcon.testing.ASGIConductor(create_app(services))
                loop.run_until_complete(conductor.__aenter__())
                try:
                    yield App(loop, conductor, services, token, ids, hb_id, hb_uuid)
                finally:
                    loop.run_until_complete(conductor.__aexit__(None, None, None))
            finally:
                services.close_streams()
                loop.run_until_complete(services.stop())
        finally:
            loop.run_until_complete(store.close())


async def _nothing() -> None:
    return None


def test_harness_floor(benchmark: Any, app: App) -> None:
    """What every request below pays outside the app: one `run_until_complete` and
    the conductor's ASGI scope and events, around an app that answers at once."""

    async def asgi_noop(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    # Not entered: this app speaks no lifespan protocol, and requests need none.
    noop = falcon.testing.ASGIConductor(asgi_noop)
    result = benchmark(lambda: app.run(noop.simulate_request("GET", "/")))
    assert result.status_code == 204


def test_get_check(benchmark: Any, app: App) -> None:
    """`GET /api/checks/{id}` with the bootstrap token."""
    check_id = app.check_ids[CHECKS // 2]
    path = f"/api/checks/{check_id}"
    warm = app.request("GET", path, headers=app.auth)
    assert warm.status_code == 200, warm.text
    result = benchmark(app.request, "GET", path, headers=app.auth)
    assert result.status_code == 200, result.text
    doc = result.json
    assert doc["id"] == check_id
    assert doc["name"] == f"paused {CHECKS // 2}"
    assert doc["status"] == "PAUSED"
    assert doc["type"] == "uptime"


def test_list_100_checks(benchmark: Any, app: App) -> None:
    """`GET /api/checks?limit=100` with the bootstrap token: 100 of the 101 checks."""
    result = benchmark(
        app.request, "GET", "/api/checks", query_string="limit=100", headers=app.auth
    )
    assert result.status_code == 200, result.text
    assert [c["id"] for c in result.json] == app.check_ids


def test_heartbeat_ping(benchmark: Any, app: App) -> None:
    """`POST /api/ping/{uuid}` with an empty body, no credentials: looked up, stored
    (group commit on the SQLite writer), then applied to the engine."""
    path = f"/api/ping/{app.heartbeat_uuid}"
    warm = app.request("POST", path)
    assert warm.status_code == 200, warm.text
    assert warm.text == "OK"
    result = benchmark(app.request, "POST", path)
    assert result.status_code == 200, result.text
    assert result.text == "OK"
    # The pings reached the engine: the next one is now expected an interval away.
    due = app.services.engine.heartbeat_due(app.heartbeat_id)
    assert due is not None


def test_authenticated_404(benchmark: Any, app: App) -> None:
    """`GET /api/no-such-route` with the token (bench/api.py's floor): no resource, no
    handler. NB: with no resource the auth middleware returns before reading the token
    (any token, or none, gets this 404), so this floor includes no authentication."""
    result = benchmark(app.request, "GET", "/api/no-such-route", headers=app.auth)
    assert result.status_code == 404, result.text
    assert result.json == {"detail": "404 Not Found"}


def test_authenticated_404_missing_check(benchmark: Any, app: App) -> None:
    """`GET /api/checks/{id}` of no check, with the token: the floor with
    authentication (token hash, cached principal), rate limiting and a store point
    read that finds nothing."""
    path = f"/api/checks/{app.heartbeat_id + 1_000}"
    result = benchmark(app.request, "GET", path, headers=app.auth)
    assert result.status_code == 404, result.text
    assert result.json == {"detail": "Check not found"}
    refused = app.request("GET", path, headers={"Authorization": "Bearer pat_wrong"})
    assert refused.status_code == 401, refused.text


def test_loop_round_trip(benchmark: Any, app: App) -> None:
    """One `run_until_complete` of a coroutine that returns at once (part of the
    harness floor above)."""
    assert benchmark(lambda: app.run(_nothing())) is None
