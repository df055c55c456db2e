"""`/api/checks/…` end to end over real HTTP against `tocsin serve`: every check type,
validation, replace and patch, masked secrets, the engine following every change,
run-now, filters, figures (stats, SLA, SLO), CSV exports and organisation isolation."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import sqlite3
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers import Server, Target, api, free_port, server_store, wait_for
from tocsin.models import Rollup
from tocsin.security import hash_token, new_token
from tocsin.store import Store


async def create(http: aiohttp.ClientSession, server: Server, **body: Any) -> dict[str, Any]:
    code, check = await api(http, server, "POST", "/api/checks/", json={"name": "c", **body})
    assert code == 200, check
    return dict(check)


def fields(resp: Any) -> set[str]:
    return {e["loc"][1] for e in resp["detail"] if len(e["loc"]) > 1}


@pytest.fixture
async def store(server: Server) -> AsyncIterator[Store]:
    """The running server's own database (SQLite in WAL mode allows a second writer)."""
    s = server_store(server)
    await s.open()
    yield s
    await s.close()


async def user_in(store: Store, org_id: int, role: str, email: str) -> str:
    """A user with `role` in `org_id` and a personal access token for them."""
    user_id = await store.create_user(email, "x")
    await store.add_membership(org_id, user_id, role)
    token = new_token()
    await store.create_token(user_id, "test", token[:8], hash_token(token))
    return token


class AuthTarget:
    """An HTTP endpoint that answers 200 only to `Authorization: Bearer s3cret`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/private"

    async def _private(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers.get("Authorization"))
        ok = request.headers.get("Authorization") == "Bearer s3cret"
        return web.Response(status=200 if ok else 401, text="ok" if ok else "no")

    async def __aenter__(self) -> AuthTarget:
        app = web.Application()
        app.router.add_get("/private", self._private)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def valid_bodies(target: Target) -> dict[str, dict[str, Any]]:
    return {
        "uptime": {"url": target.url, "expected_status_codes": [200]},
        "heartbeat": {"schedule": "*/5 * * * *", "timezone": "Europe/Warsaw", "grace_period": 30},
        "icmp": {"host": "127.0.0.1", "ping_count": 1},
        "tcp": {"host": "127.0.0.1", "port": target.port},
        "udp": {"host": "127.0.0.1", "port": 9},
        "dns": {"host": "localhost", "dns_record_type": "aaaa", "dns_server": "127.0.0.1:53"},
        "tls": {"host": "localhost", "port": 0},
        "ftp": {"host": "ftp.example.test"},
        "mail": {"host": "smtp.example.test", "port": 587},
        "database": {"db_type": "postgresql", "db_host": "db.example.test", "db_password": "pw"},
        "api_scenario": {"steps": [{"url": target.url, "method": "GET"}]},
        "oidc": {"url": "https://issuer.example.test/"},
    }


@pytest.mark.both_backends
async def test_every_check_type_is_created_and_read_back(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    for check_type, body in valid_bodies(target).items():
        check = await create(http, server, type=check_type, is_active=False, **body)
        assert check["type"] == check_type
        assert check["status"] == "PAUSED"
        code, again = await api(http, server, "GET", f"/api/checks/{check['id']}")
        # When the status last changed is the engine's to say (the transition to PAUSED
        # is written after the answer, asynchronously); every other field reads back.
        assert code == 200
        again.pop("status_changed_at")
        assert again == {k: v for k, v in check.items() if k != "status_changed_at"}
    _, checks = await api(http, server, "GET", "/api/checks/")
    by_type = {c["type"]: c for c in checks}
    assert set(by_type) == set(valid_bodies(target))
    # Columns, type settings and the normalised zero values come back.
    assert by_type["tcp"]["host"] == "127.0.0.1" and by_type["tcp"]["port"] == target.port
    assert by_type["dns"]["dns_record_type"] == "AAAA"
    assert by_type["ftp"]["port"] == 21
    assert by_type["database"]["db_port"] == 5432
    assert by_type["database"]["db_password"] == "******"
    assert by_type["heartbeat"]["timezone"] == "Europe/Warsaw"
    assert by_type["heartbeat"]["grace_period"] == 30
    # `steps` (the older name) is taken as `api_scenario_steps`.
    assert by_type["api_scenario"]["api_scenario_steps"][0]["url"] == target.url
    assert by_type["tls"]["port"] == 443
    assert by_type["uptime"]["expected_status_codes"] == [200]
    assert by_type["uptime"]["auth_password"] == ""


async def test_each_type_refuses_bad_settings_naming_every_bad_field(
    server: Server, http: aiohttp.ClientSession
) -> None:
    url = "http://127.0.0.1:1/"
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"type": "uptime"}, {"url"}),
        ({"type": "uptime", "url": "ftp://x.test/"}, {"url"}),
        ({"type": "uptime", "url": url, "http_method": "FETCH"}, {"http_method"}),
        ({"type": "uptime", "url": url, "auth_method": "bearer"}, {"auth_bearer_token"}),
        ({"type": "uptime", "url": url, "content_match_type": "fuzzy"}, {"content_match_type"}),
        ({"type": "uptime", "url": url, "http_body_type": "json", "http_body": "{"}, {"http_body"}),
        ({"type": "heartbeat", "schedule": "every day"}, {"schedule"}),
        (
            {"type": "heartbeat", "timezone": "Mars/Base", "grace_period": -1},
            {"timezone", "grace_period"},
        ),
        ({"type": "icmp"}, {"host"}),
        ({"type": "icmp", "host": "h", "ping_count": 101}, {"ping_count"}),
        ({"type": "tcp", "host": "h"}, {"port"}),
        ({"type": "tcp", "host": "", "port": 70_000}, {"host", "port"}),
        ({"type": "udp", "host": "h", "port": 0}, {"port"}),
        ({"type": "dns"}, {"host"}),
        ({"type": "dns", "host": "h", "dns_record_type": "ZZZ"}, {"dns_record_type"}),
        ({"type": "dns", "host": "h", "dns_server": "not-an-ip"}, {"dns_server"}),
        ({"type": "dns", "host": "h", "dns_expected_ips": ["1.2.3"]}, {"dns_expected_ips"}),
        ({"type": "ftp", "host": "a b"}, {"host"}),
        ({"type": "mail", "host": "m", "port": 70_000}, {"port"}),
        ({"type": "database", "db_type": "oracle"}, {"db_type", "db_host"}),
        ({"type": "api_scenario", "steps": []}, {"api_scenario_steps"}),
        ({"type": "oidc", "url": "issuer"}, {"url"}),
        ({"type": "telepathy"}, {"type"}),
        # Refused by the native engine (no look-around in its regex dialect): not stored.
        (
            {
                "type": "uptime",
                "url": url,
                "content_match_enabled": True,
                "content_match_type": "regex",
                "content_match_text": "(?=x)",
            },
            {"content_match_text"},
        ),
        (
            {"type": "tcp", "host": "h", "port": 1, "interval": 0, "tags": [""]},
            {"interval", "tags"},
        ),
        (
            {"type": "uptime", "url": url, "check_source_critical": {"moon": True}},
            {"check_source_critical"},
        ),
        ({"type": "uptime", "url": url, "runbook_url": "wiki"}, {"runbook_url"}),
    ]
    for body, want in cases:
        code, resp = await api(http, server, "POST", "/api/checks/", json={"name": "x", **body})
        assert code == 422, (body, resp)
        assert fields(resp) == want, (body, resp)
    assert (await api(http, server, "GET", "/api/checks/"))[1] == []


@pytest.mark.both_backends
async def test_a_body_with_every_field_of_every_type_at_zero_values_is_accepted(
    server: Server, http: aiohttp.ClientSession, store: Store
) -> None:
    agent = await store.insert("agents", 1, {"name": "edge-1"})
    union: dict[str, Any] = {
        "name": "db port",
        "type": "tcp",
        "description": "",
        "host": "127.0.0.1",
        "port": 5432,
        "url": "",
        "http_method": "",
        "http_headers": {},
        "http_body": "",
        "http_body_type": "",
        "http_follow_redirects": False,
        "expected_status_codes": [],
        "ssl_verify": False,
        "auth_method": "",
        "auth_username": "",
        "auth_password": "",
        "auth_bearer_token": "",
        "content_match_enabled": False,
        "content_match_text": "",
        "content_match_type": "",
        "content_match_case_sensitive": False,
        "degraded_threshold_ms": 0,
        "ping_count": 0,
        "dns_server": "",
        "dns_record_type": "",
        "dns_expected_value": "",
        "dns_expected_ips": [],
        "db_type": "",
        "db_host": "",
        "db_port": 0,
        "db_name": "",
        "db_username": "",
        "db_password": "",
        "db_query": "",
        "db_expected_result": "",
        "schedule": "",
        "timezone": "",
        "steps": [],
        "grace_period": 0,
        "alert_after_failures": 0,
        "runbook_url": "",
        "escalation_policy_id": 0,
        "project_id": 0,
        "tags": [],
        "assigned_agent_ids": [],
        "assigned_agent_id": agent["id"],
        "geo_monitoring_enabled": False,
        "check_source_critical": {},
        "agent_location_statuses": {"agent:99": "DOWN"},
        "some_future_field": {"x": 1},
        "is_active": False,
    }
    code, check = await api(http, server, "POST", "/api/checks/", json=union)
    assert code == 200, check
    assert (check["type"], check["host"], check["port"]) == ("tcp", "127.0.0.1", 5432)
    assert check["grace_period"] == 0 and check["alert_after_failures"] == 1
    assert check["runbook_url"] is None and check["escalation_policy_id"] is None
    assert check["project_id"] is not None
    # The deprecated single agent became the list; the read-only field was ignored.
    assert check["assigned_agent_ids"] == [agent["id"]]
    assert "assigned_agent_id" not in check
    assert check["agent_location_statuses"] == {}
    assert "some_future_field" not in check
    # Nulls mean "the default" too.
    code, check = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": "n", "url": "http://127.0.0.1:1/", "tags": None, "interval": None},
    )
    assert code == 200 and check["tags"] == [] and check["interval"] == 60
    code, resp = await api(
        http, server, "POST", "/api/checks/", json={**union, "assigned_agent_ids": [987654]}
    )
    assert code == 422 and fields(resp) == {"assigned_agent_ids"}


@pytest.mark.both_backends
async def test_put_replaces_patch_changes_only_what_is_sent_and_delete_removes(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    check = await create(
        http, server, url=target.url, tags=["web", "prod"], description="d", interval=120
    )
    cid = check["id"]
    code, patched = await api(http, server, "PATCH", f"/api/checks/{cid}", json={"interval": 30})
    assert code == 200
    assert patched["interval"] == 30 and patched["tags"] == ["web", "prod"]
    assert patched["description"] == "d" and patched["uuid"] == check["uuid"]

    code, replaced = await api(
        http, server, "PUT", f"/api/checks/{cid}", json={"name": "r", "url": target.url}
    )
    assert code == 200
    # Full replace: what was not sent is back to its default.
    assert (replaced["name"], replaced["interval"], replaced["tags"]) == ("r", 60, [])
    assert replaced["description"] == "" and replaced["id"] == cid

    # A PATCH may change the type; the result is validated as a whole.
    code, resp = await api(http, server, "PATCH", f"/api/checks/{cid}", json={"type": "tcp"})
    assert code == 422 and fields(resp) == {"host", "port"}
    code, tcp = await api(
        http,
        server,
        "PATCH",
        f"/api/checks/{cid}",
        json={"type": "tcp", "host": "127.0.0.1", "port": target.port, "id": 999, "uuid": "x"},
    )
    assert code == 200 and tcp["type"] == "tcp" and tcp["id"] == cid
    assert tcp["uuid"] == check["uuid"]
    code, resp = await api(http, server, "PUT", f"/api/checks/{cid}", json={"url": target.url})
    assert code == 422 and fields(resp) == {"name"}
    code, resp = await api(http, server, "PATCH", f"/api/checks/{cid}", json={"project_id": 424242})
    assert code == 422 and fields(resp) == {"project_id"}

    assert (await api(http, server, "DELETE", f"/api/checks/{cid}"))[0] == 204
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        code, _ = await api(http, server, method, f"/api/checks/{cid}", json={"name": "x"})
        assert code == 404, method


async def test_secrets_are_masked_and_kept_when_sent_back_masked(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with AuthTarget() as private:
        check = await create(
            http,
            server,
            url=private.url,
            auth_method="bearer",
            auth_bearer_token="s3cret",
            is_active=False,
        )
        cid = check["id"]
        assert check["auth_bearer_token"] == "******"

        async def run_now() -> dict[str, Any]:
            code, result = await api(http, server, "POST", f"/api/checks/{cid}/run-now")
            assert code == 200, result
            return dict(result)

        first = await run_now()
        assert (first["status"], first["status_code"]) == ("UP", 200)
        assert first["timings"]["connect_ms"] is not None

        # A client writes back what it read: the masked secret keeps the stored one.
        code, back = await api(
            http, server, "PUT", f"/api/checks/{cid}", json={**check, "name": "renamed"}
        )
        assert code == 200 and back["auth_bearer_token"] == "******"
        assert (await run_now())["status"] == "UP"
        code, _ = await api(http, server, "PATCH", f"/api/checks/{cid}", json={"timeout": 5})
        assert code == 200
        assert (await run_now())["status"] == "UP"

        # A new value replaces it; an empty one clears it.
        await api(http, server, "PATCH", f"/api/checks/{cid}", json={"auth_bearer_token": "bad"})
        wrong = await run_now()
        assert (wrong["status"], wrong["status_code"]) == ("DOWN", 401)
        code, resp = await api(
            http, server, "PATCH", f"/api/checks/{cid}", json={"auth_bearer_token": ""}
        )
        assert code == 422 and fields(resp) == {"auth_bearer_token"}
        code, cleared = await api(
            http,
            server,
            "PATCH",
            f"/api/checks/{cid}",
            json={"auth_method": "none", "auth_bearer_token": ""},
        )
        assert code == 200 and cleared["auth_bearer_token"] == ""
        assert (await run_now())["status_code"] == 401
        assert private.seen == ["Bearer s3cret"] * 3 + ["Bearer bad", None]

    # At rest the secret is encrypted, never in clear.
    await create(http, server, type="database", db_type="mysql", db_host="h", db_password="pw1")
    with sqlite3.connect(server.data_dir / "tocsin.db") as db:
        configs = [r[0] for r in db.execute("SELECT config FROM checks WHERE type = 'database'")]
    assert "pw1" not in configs[0] and "enc:v1:" in configs[0]


async def test_the_engine_follows_create_pause_change_and_delete(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    check = await create(http, server, url=target.url, interval=1, timeout=2)
    cid = check["id"]

    async def status(want: str) -> dict[str, Any]:
        async def probe() -> Any:
            code, body = await api(http, server, "GET", f"/api/checks/{cid}")
            return body if code == 200 and body["status"] == want else None

        return dict(await wait_for(probe, timeout=20))

    await status("UP")
    await api(http, server, "PATCH", f"/api/checks/{cid}", json={"is_active": False})
    await status("PAUSED")
    await wait_for(_quiet(target))
    await api(
        http,
        server,
        "PATCH",
        f"/api/checks/{cid}",
        json={"is_active": True, "url": target.url + "status/503"},
    )
    down = await status("DOWN")
    assert down["last_result"]["status_code"] == 503
    assert (await api(http, server, "DELETE", f"/api/checks/{cid}"))[0] == 204
    await wait_for(_quiet(target))

    # A type without a probe (mail, for now) is stored but not scheduled, and cannot be
    # run now.
    mail = await create(http, server, type="mail", host="127.0.0.1", interval=1)
    code, resp = await api(http, server, "POST", f"/api/checks/{mail['id']}/run-now")
    assert code == 409 and "no probe" in resp["detail"]
    code, resp = await api(http, server, "GET", f"/api/checks/{mail['id']}")
    assert resp["status"] == "UNKNOWN"
    hb = await create(http, server, type="heartbeat", interval=60)
    assert (await api(http, server, "POST", f"/api/checks/{hb['id']}/run-now"))[0] == 409


def _quiet(target: Target) -> Any:
    """A predicate: the target got no request for 2.5 s."""

    async def check() -> bool:
        before = target.hits
        await _sleep(2.5)
        return target.hits == before

    return check


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


@pytest.mark.both_backends
async def test_filters_and_paging(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    a = await create(
        http, server, name="Shop front", url=target.url, tags=["shop"], is_active=False
    )
    b = await create(
        http, server, name="db", type="tcp", host="db.internal", port=5432, tags=["db"]
    )
    c = await create(http, server, name="api", url="http://api.internal/", tags=["shop", "api"])

    async def ids(query: str) -> list[int]:
        code, body = await api(http, server, "GET", "/api/checks/" + query)
        assert code == 200, body
        return [x["id"] for x in body]

    assert await ids("") == [a["id"], b["id"], c["id"]]
    assert await ids("?type=tcp") == [b["id"]]
    assert await ids("?tag=shop") == [a["id"], c["id"]]
    assert await ids("?q=SHOP") == [a["id"]]
    assert await ids("?search=internal") == [b["id"], c["id"]]
    assert await ids("?status=paused") == [a["id"]]
    assert await ids("?org_id=1&limit=2") == [a["id"], b["id"]]
    assert await ids("?limit=2&offset=2") == [c["id"]]
    assert await ids("?org_id=777") == []
    for bad in ("type=x", "status=SLEEPY", "limit=0", "limit=501", "offset=-1"):
        code, resp = await api(http, server, "GET", "/api/checks/?" + bad)
        assert code == 422, bad
        assert resp["detail"][0]["loc"][0] == "query"


@pytest.mark.both_backends
async def test_another_organisation_cannot_see_or_change_a_check(
    server: Server, target: Target, http: aiohttp.ClientSession, store: Store
) -> None:
    check = await create(http, server, url=target.url, is_active=False)
    cid = check["id"]
    other = await store.create_organization("Other")
    stranger = await user_in(store, other["id"], "OWNER", "stranger@example.test")
    viewer = await user_in(store, 1, "VIEWER", "viewer@example.test")

    assert (await api(http, server, "GET", "/api/checks/", token=stranger))[1] == []
    paths = ["", "/logs", "/stats", "/sla", "/slo", "/incidents", "/export/logs.csv"]
    for path in paths:
        code, _ = await api(http, server, "GET", f"/api/checks/{cid}{path}", token=stranger)
        assert code == 404, path
    for method, path in [
        ("PUT", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/run-now"),
        ("POST", "/slo"),
        ("DELETE", "/slo"),
    ]:
        code, _ = await api(
            http, server, method, f"/api/checks/{cid}{path}", token=stranger, json={"name": "x"}
        )
        assert code == 404, (method, path)
    # A check cannot be created in, or moved to, someone else's organisation or project.
    code, resp = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        token=stranger,
        json={"name": "x", "url": target.url, "org_id": 1},
    )
    assert code == 422 and fields(resp) == {"org_id"}
    code, resp = await api(
        http,
        server,
        "PATCH",
        f"/api/checks/{cid}",
        json={"project_id": other["default_project_id"]},
    )
    assert code == 422 and fields(resp) == {"project_id"}

    # A viewer reads but does not write.
    assert (await api(http, server, "GET", f"/api/checks/{cid}", token=viewer))[0] == 200
    for method, path in [("PATCH", ""), ("DELETE", ""), ("POST", "/run-now"), ("POST", "/slo")]:
        code, _ = await api(
            http, server, method, f"/api/checks/{cid}{path}", token=viewer, json={"name": "x"}
        )
        assert code == 403, (method, path)
    assert (await api(http, server, "GET", f"/api/checks/{cid}"))[1]["name"] == check["name"]


# -- figures ----------------------------------------------------------------------------

MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
LN_GAMMA = 0.020_000_666_706_669_05


def sketch(latencies_ms: list[float]) -> bytes:
    """The native latency sketch (rust_core/stats.rs) holding these samples."""
    counts: dict[int, int] = {}
    for ms in latencies_ms:
        i = math.ceil(math.log(ms) / LN_GAMMA)
        counts[i] = counts.get(i, 0) + 1
    return struct.pack("<I", 0) + b"".join(
        struct.pack("<hI", i, n) for i, n in sorted(counts.items())
    )


def minute(check_id: int, start_ms: int, *, down_ms: int = 0, incidents: int = 0) -> Rollup:
    latencies = [100.0] * 4 if down_ms == 0 else [100.0]
    return Rollup(
        check_id=check_id,
        start_ms=start_ms,
        span_ms=MINUTE_MS,
        runs_up=len(latencies),
        runs_down=0 if down_ms == 0 else 3,
        runs_degraded=0,
        downtime_ms=down_ms,
        excluded_ms=0,
        incidents=incidents,
        sketch=sketch(latencies),
    )


async def test_stats_and_sla_add_up_the_stored_rollups(
    server: Server, http: aiohttp.ClientSession, store: Store
) -> None:
    # A type the engine does not run, so only the rollups written here count.
    check = await create(http, server, type="mail", host="smtp.example.test")
    cid = check["id"]
    now_ms = int(time.time() * 1000)
    # The check has existed for ten days (the figures ignore time before it existed).
    with sqlite3.connect(server.data_dir / "tocsin.db") as db:
        db.execute("UPDATE checks SET created_at = ? WHERE id = ?", (time.time() - 10 * 86400, cid))
    # Two whole hours (2 h ago fully up, 3 h ago with 60 s down) and 5 days ago, 1 h down.
    hour = now_ms - now_ms % HOUR_MS
    rollups = [minute(cid, hour - 2 * HOUR_MS + m * MINUTE_MS) for m in range(60)]
    rollups += [
        minute(
            cid,
            hour - 3 * HOUR_MS + m * MINUTE_MS,
            down_ms=MINUTE_MS if m == 0 else 0,
            incidents=int(m == 0),
        )
        for m in range(60)
    ]
    five_days = hour - 5 * DAY_MS
    rollups += [
        minute(cid, five_days + m * MINUTE_MS, down_ms=MINUTE_MS, incidents=int(m == 0))
        for m in range(60)
    ]
    await store.write_batch([], [], rollups)

    code, stats = await api(http, server, "GET", f"/api/checks/{cid}/stats")
    assert code == 200, stats
    assert set(stats["windows"]) == {"24h", "7d", "30d", "90d"}
    day = stats["windows"]["24h"]
    assert day["runs"] == 2 * 60 * 4
    assert abs(day["p50_ms"] - 100) < 2 and abs(day["p99_ms"] - 100) < 2
    assert abs(stats["uptime_24h"] - (7200 - 60) * 100 / 7200) < 1e-3
    assert stats["windows"]["7d"]["runs"] == 2 * 60 * 4 + 60 * 4
    assert stats["uptime_7d"] < stats["uptime_24h"]
    assert stats["uptime_30d"] == stats["uptime_90d"] == stats["uptime_7d"]

    code, sla = await api(http, server, "GET", f"/api/checks/{cid}/sla?apdex_t_ms=200")
    assert code == 200, sla
    assert sla["apdex_t_ms"] == 200
    w = sla["windows"]["24h"]
    assert (w["total_s"], w["downtime_s"], w["incidents"]) == (7200, 60, 1)
    assert (w["mttr_s"], w["mtbf_s"]) == (60, 7200 - 60)
    # Every successful run took 100 ms (satisfied); the 3 failed runs are frustrated.
    assert abs(w["apdex"] - (480 - 3) / 480) < 1e-3
    w = sla["windows"]["7d"]
    assert (w["downtime_s"], w["incidents"]) == (60 + 3600, 2)
    # Whole days come from the day tier, whose buckets span their whole day.
    assert w["total_s"] >= 7200 + 86400
    assert w["mttr_s"] == 1830
    assert (await api(http, server, "GET", f"/api/checks/{cid}/sla?apdex_t_ms=0"))[0] == 422

    # A fresh check has no figures yet: nulls, not zeros or errors.
    fresh = await create(http, server, type="mail", host="m")
    code, empty = await api(http, server, "GET", f"/api/checks/{fresh['id']}/sla")
    assert code == 200
    assert empty["windows"]["24h"]["uptime_pct"] is None
    assert empty["windows"]["24h"]["mttr_s"] is None


async def test_slo_create_read_replace_delete_with_its_budget(
    server: Server, http: aiohttp.ClientSession, store: Store
) -> None:
    check = await create(http, server, type="mail", host="smtp.example.test")
    cid = check["id"]
    with sqlite3.connect(server.data_dir / "tocsin.db") as db:
        db.execute("UPDATE checks SET created_at = ? WHERE id = ?", (time.time() - 86400, cid))
    now_ms = int(time.time() * 1000)
    hour = now_ms - now_ms % HOUR_MS
    # One hour ago: 60 minutes, 6 minutes of them down (90 % available).
    await store.write_batch(
        [],
        [],
        [
            minute(cid, hour - HOUR_MS + m * MINUTE_MS, down_ms=MINUTE_MS if m < 6 else 0)
            for m in range(60)
        ],
    )
    path = f"/api/checks/{cid}/slo"
    assert await api(http, server, "GET", path) == (200, {"check_id": cid, "slo": None})
    for body, want in [
        ({"target_percentage": 100}, {"target_percentage"}),
        ({"target_percentage": 0}, {"target_percentage"}),
        ({"target_percentage": 99, "window_days": 400}, {"window_days"}),
        ({"target_percentage": 99, "sli_type": "latency"}, {"latency_threshold_ms"}),
        ({"target_percentage": 99, "sli_type": "happiness"}, {"sli_type"}),
        ({}, {"target_percentage"}),
    ]:
        code, resp = await api(http, server, "POST", path, json=body)
        assert code == 422 and fields(resp) == want, (body, resp)

    # A one-day window is made of whole hours (longer ones of whole days).
    code, made = await api(
        http, server, "POST", path, json={"target_percentage": 95, "window_days": 1}
    )
    assert code == 200, made
    slo = made["slo"]
    assert slo["check_id"] == cid and slo["sli_type"] == "availability"
    assert abs(slo["current_sli_pct"] - 90) < 1e-6
    # 10 % unavailable against a 5 % budget: overspent by as much again.
    assert abs(slo["error_budget_remaining_pct"] + 100) < 1e-3
    assert slo["budget_exhausted"] is True
    assert (await api(http, server, "POST", path, json={"target_percentage": 90}))[0] == 409
    assert (await api(http, server, "GET", path))[1] == made

    code, latency = await api(
        http,
        server,
        "PUT",
        f"{path}/{slo['id']}",
        json={"sli_type": "latency", "target_percentage": 50, "latency_threshold_ms": 150},
    )
    assert code == 200, latency
    assert latency["slo"]["id"] == slo["id"] and latency["slo"]["window_days"] == 30
    # Runs within 150 ms: 54 minutes x 4 + 6 x 1 out of 54 x 4 + 6 x 4 runs.
    assert abs(latency["slo"]["current_sli_pct"] - 222 * 100 / 240) < 1e-3
    assert latency["slo"]["budget_exhausted"] is False
    assert (
        await api(http, server, "PUT", f"{path}/{slo['id'] + 1}", json={"target_percentage": 9})
    )[0] == 404
    assert (await api(http, server, "DELETE", f"{path}/{slo['id']}"))[0] == 204
    assert (await api(http, server, "DELETE", path))[0] == 404
    code, again = await api(http, server, "PUT", path, json={"target_percentage": 99.9})
    assert code == 200 and again["slo"]["target_percentage"] == 99.9
    assert (await api(http, server, "DELETE", path))[0] == 204
    assert (await api(http, server, "GET", path))[1]["slo"] is None


@pytest.mark.both_backends
async def test_incidents_and_csv_exports_for_a_date_range(
    server: Server, target: Target, http: aiohttp.ClientSession, store: Store
) -> None:
    check = await create(http, server, url=target.url + "status/500", interval=1, timeout=2)
    cid = check["id"]

    async def logs() -> list[dict[str, Any]]:
        return list((await api(http, server, "GET", f"/api/checks/{cid}/logs?limit=500"))[1])

    async def enough() -> bool:
        return len(await logs()) >= 3

    await wait_for(enough)
    await api(http, server, "PATCH", f"/api/checks/{cid}", json={"is_active": False})
    stored = await logs()

    code, text = await api(http, server, "GET", f"/api/checks/{cid}/export/logs.csv")
    assert code == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in rows] == [r["id"] for r in stored]
    assert {r["status"] for r in rows} == {"DOWN"} and {r["status_code"] for r in rows} == {"500"}
    # Only the range asked for, in ISO or Unix seconds.
    middle = stored[len(stored) // 2]["started_at"]
    start = dt.datetime.fromisoformat(middle.replace("Z", "+00:00")).timestamp()
    for query in (f"?from={start}", f"?from={middle}"):
        _, text = await api(http, server, "GET", f"/api/checks/{cid}/export/logs.csv{query}")
        got = [r["started_at"] for r in csv.DictReader(io.StringIO(text))]
        assert got == [r["started_at"] for r in stored if r["started_at"] >= middle]
    _, text = await api(http, server, "GET", f"/api/checks/{cid}/export/logs.csv?to=2000-01-01")
    assert text.splitlines() == [text.splitlines()[0]]
    code, resp = await api(http, server, "GET", f"/api/checks/{cid}/export/logs.csv?from=soon")
    assert code == 422 and resp["detail"][0]["loc"] == ["query", "from"]

    # Incidents: two stored directly (one resolved), newest first, on a check the engine
    # does not run (so no incident of its own opens meanwhile).
    cid = (await create(http, server, type="mail", host="smtp.example.test"))["id"]
    now = time.time()
    old = await store.insert(
        "incidents",
        1,
        {
            "check_id": cid,
            "title": "old",
            "started_at": now - 7200,
            "status": "RESOLVED",
            "resolved_at": now - 7000,
        },
    )
    await store.insert("incidents", 1, {"check_id": cid, "title": "new", "started_at": now - 60})
    code, page = await api(http, server, "GET", f"/api/checks/{cid}/incidents?limit=1")
    assert code == 200 and page["total"] == 2 and page["limit"] == 1
    assert page["incidents"][0]["title"] == "new"
    code, page = await api(http, server, "GET", f"/api/checks/{cid}/incidents?limit=1&offset=1")
    assert page["incidents"][0]["title"] == "old"
    assert page["incidents"][0]["duration_s"] == 200
    async with http.get(
        f"{server.base}/api/checks/{cid}/export/incidents.csv?from={now - 3600}",
        headers=server.headers,
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/csv"
        assert "attachment" in resp.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert "new" in [r["title"] for r in rows] and "old" not in [r["title"] for r in rows]
    assert old["id"] not in [int(r["id"]) for r in rows]


async def test_every_change_is_announced_as_a_check_update_event(
    server: Server, http: aiohttp.ClientSession
) -> None:
    check = await create(http, server, type="mail", host="smtp.example.test")
    cid = check["id"]
    await api(http, server, "PATCH", f"/api/checks/{cid}", json={"port": 587})
    await api(http, server, "DELETE", f"/api/checks/{cid}")
    seen: list[dict[str, Any]] = []
    headers = {**server.headers, "Last-Event-ID": "0"}
    url = f"{server.base}/api/events?types=check.update"
    async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.startswith(b"data:"):
                seen.append(json.loads(line[5:]))
            if len(seen) == 3:
                break
    assert seen == [
        {"id": cid, "action": "created"},
        {"id": cid, "action": "updated"},
        {"id": cid, "action": "deleted"},
    ]
