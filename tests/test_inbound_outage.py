"""An inbound event refused during a PostgreSQL outage changes nothing: a 503 (with
Retry-After) means it was neither stored nor applied, so a sender that retries it after
the outage applies it once, on the incident it would have reached. In a module of its
own: it stops the session's PostgreSQL cluster, which no other server may be using
meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, server_store, wait_for
from pgcluster import PgCluster


async def trigger(http: aiohttp.ClientSession, server: Server, key: str) -> tuple[int, Any, Any]:
    body = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": "db-outage",
        "payload": {"summary": "Queue backing up", "source": "worker-1"},
    }
    async with http.post(server.base + "/api/events/ingest", json=body) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_an_event_refused_during_a_database_outage_changes_nothing(
    tmp_path: Path,
    pg_cluster: PgCluster,
    pg_url: str,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_ADDRESS", "0")
    server = Server(tmp_path / "data")
    server.start("--database", pg_url)
    try:
        code, orgs = await api(http, server, "GET", "/api/organizations/")
        org = orgs[0]["id"]
        code, key = await api(
            http, server, "POST", f"/api/organizations/{org}/integration-keys", json={"name": "k"}
        )
        assert code == 201, key
        code, first, _ = await trigger(http, server, key["key"])
        assert code == 200, first
        iid = first["incident_id"]

        pg_cluster.stop()
        try:
            code, body, headers = await trigger(http, server, key["key"])
            assert code == 503, body
            assert int(headers["Retry-After"]) >= 1 and body["detail"]
        finally:
            pg_cluster.start()

        async def answered() -> Any:
            code, got = await api(
                http, server, "GET", f"/api/organizations/{org}/inbound-incidents/{iid}"
            )
            return got if code == 200 else None

        got = await wait_for(answered)
        assert got["event_count"] == 1 and len(got["events"]) == 1, got

        # The sender retries until it is answered: applied once, to the same incident.
        async def retried() -> Any:
            code, answer, _ = await trigger(http, server, key["key"])
            return answer if code == 200 else None

        assert (await wait_for(retried))["incident_id"] == iid
        assert (await wait_for(answered))["event_count"] == 2
        store = server_store(server)
        await store.open(migrate=False)
        try:
            assert await store.count("inbound_events", [org]) == 2
        finally:
            await store.close()
    finally:
        server.kill()
