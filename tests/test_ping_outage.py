"""A ping refused during a PostgreSQL outage changes nothing: a 503 (plain text, with
Retry-After) means it was neither stored nor judged, so a client that retries it after
the outage applies it once. In a module of its own: it stops the session's PostgreSQL
cluster, which no other server may be using meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from helpers import Server, api, server_store, wait_for
from pgcluster import PgCluster


async def heartbeat(http: aiohttp.ClientSession, server: Server, name: str) -> dict[str, Any]:
    body = {"name": name, "type": "heartbeat", "interval": 60, "grace_period": 60}
    code, check = await api(http, server, "POST", "/api/checks", json=body)
    assert code == 200, check
    return dict(check)


async def ping(http: aiohttp.ClientSession, server: Server, path: str) -> tuple[int, str, str]:
    async with http.get(f"{server.base}/api/ping/{path}") as resp:
        return resp.status, resp.content_type, await resp.text()


async def restarts(server: Server, http: aiohttp.ClientSession) -> None:
    assert server.stop() == 0
    server.start()
    code, _ = await api(http, server, "GET", "/api/checks")
    assert code == 200


async def test_a_ping_refused_during_a_database_outage_changes_nothing(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str, http: aiohttp.ClientSession
) -> None:
    """A 503 means the ping did not happen: not stored and not judged, so a client
    that retries it after the outage applies it once."""
    server = Server(tmp_path / "data")
    server.start("--database", pg_url)
    try:
        check = await heartbeat(http, server, "job")
        assert (await ping(http, server, check["uuid"]))[0] == 200
        await wait_for(lambda: _status(http, server, check["id"], "UP"))
        pg_cluster.stop()
        try:
            status, kind, text = await ping(http, server, f"{check['uuid']}/fail")
            assert (status, kind) == (503, "text/plain"), text
        finally:
            pg_cluster.start()
        code, now = await api(http, server, "GET", f"/api/checks/{check['id']}")
        assert code == 200 and now["status"] == "UP", now
        code, incidents = await api(http, server, "GET", f"/api/checks/{check['id']}/incidents")
        assert incidents["incidents"] == [], incidents
        # The client retries until it is answered OK: applied once.
        await wait_for(lambda: _ok(http, server, f"{check['uuid']}/fail"))
        await wait_for(lambda: _status(http, server, check["id"], "DOWN"))
        store = server_store(server)
        await store.open(migrate=False)
        try:
            pings = await store.list_pings(
                [check["organization_id"]], check["id"], limit=10, before=None
            )
        finally:
            await store.close()
        assert [p["kind"] for p in pings] == ["fail", "success"]
        await restarts(server, http)
    finally:
        server.kill()


async def _status(http: aiohttp.ClientSession, server: Server, check_id: int, want: str) -> bool:
    code, check = await api(http, server, "GET", f"/api/checks/{check_id}")
    return code == 200 and check["status"] == want


async def _ok(http: aiohttp.ClientSession, server: Server, path: str) -> bool:
    status, _, text = await ping(http, server, path)
    assert status in (200, 503), text
    return status == 200
