"""`tocsin serve` end to end over real HTTP: auth, checks, results, bad input, restarts."""

from __future__ import annotations

import io
import os
import signal
import stat
from typing import Any

import aiohttp
import pytest

from helpers import Server, Target, api, wait_for


async def check_status(
    http: aiohttp.ClientSession, server: Server, check_id: int, want: str
) -> Any:
    async def probe() -> Any:
        code, body = await api(http, server, "GET", f"/api/checks/{check_id}")
        return body if code == 200 and body["status"] == want else None

    return await wait_for(probe, timeout=20)


async def test_every_api_route_needs_the_token(server: Server, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer pat_wrong"}, {"Authorization": "Basic x"}):
        async with http.get(server.base + "/api/checks/", headers=headers) as resp:
            assert resp.status == 401
            assert "detail" in await resp.json()
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_initial_credentials_are_private(server: Server) -> None:
    mode = stat.S_IMODE(os.stat(server.data_dir / "initial-credentials").st_mode)
    assert mode == 0o600
    assert server.token.startswith("pat_")


@pytest.mark.both_backends
async def test_a_check_follows_its_target_down_and_up(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    code, check = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": "web", "type": "uptime", "url": target.url, "interval": 1, "timeout": 2},
    )
    assert code == 200, check
    assert check["status"] == "UNKNOWN"
    assert check["last_result"] is None
    cid = check["id"]

    up = await check_status(http, server, cid, "UP")
    assert up["last_result"]["status_code"] == 200
    assert up["last_result"]["timings"]["connect_ms"] is not None
    assert up["last_result"]["details"]["address"].startswith("127.0.0.1:")
    await target.stop()
    down = await check_status(http, server, cid, "DOWN")
    assert down["last_result"]["error_kind"] == "connect_refused"
    await target.start()
    await check_status(http, server, cid, "UP")

    code, logs = await api(http, server, "GET", f"/api/checks/{cid}/logs?limit=500")
    assert code == 200
    assert [r["id"] for r in logs] == sorted((r["id"] for r in logs), reverse=True)
    assert all(r["timings"]["first_byte_ms"] is not None for r in logs if r["status"] == "UP")
    statuses = [r["status"] for r in reversed(logs)]
    assert "DOWN" in statuses
    assert statuses[0] == "UP" and statuses[-1] == "UP"
    # Keyset paging: two pages of two, no overlap, continuing from the first.
    _, page1 = await api(http, server, "GET", f"/api/checks/{cid}/logs?limit=2")
    _, page2 = await api(
        http, server, "GET", f"/api/checks/{cid}/logs?limit=2&before={page1[-1]['id']}"
    )
    assert [r["id"] for r in page1 + page2] == [r["id"] for r in logs[:4]]


@pytest.mark.both_backends
async def test_list_get_delete_and_trailing_slashes(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    ids = []
    for i in range(3):
        code, body = await api(
            http, server, "POST", "/api/checks", json={"name": f"c{i}", "url": target.url}
        )
        assert code == 200
        ids.append(body["id"])
    for path in ("/api/checks", "/api/checks/"):
        async with http.get(server.base + path, headers=server.headers, allow_redirects=False) as r:
            assert r.status == 200
            assert [c["id"] for c in await r.json()] == ids
    code, page = await api(http, server, "GET", "/api/checks/?limit=1&offset=1")
    assert [c["id"] for c in page] == [ids[1]]
    code, body = await api(http, server, "GET", f"/api/checks/{ids[0]}/")
    assert code == 200 and body["name"] == "c0" and body["interval"] == 60
    assert (await api(http, server, "DELETE", f"/api/checks/{ids[0]}"))[0] == 204
    assert (await api(http, server, "DELETE", f"/api/checks/{ids[0]}"))[0] == 404
    code, body = await api(http, server, "GET", f"/api/checks/{ids[0]}")
    assert (code, body) == (404, {"detail": "Check not found"})
    assert (await api(http, server, "GET", "/api/checks/?limit=501"))[0] == 422
    assert (await api(http, server, "GET", "/api/nowhere"))[0] == 404


@pytest.mark.both_backends
async def test_bad_input_is_refused_with_the_field_and_nothing_is_stored(
    server: Server, http: aiohttp.ClientSession
) -> None:
    good = {"name": "x", "url": "http://127.0.0.1:1/", "interval": 60}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "x", "interval": 60}, "url"),
        ({**good, "url": "not a url"}, "url"),
        ({**good, "url": "ftp://example.test/"}, "url"),
        ({**good, "url": "http://127.0.0.1:99999/"}, "url"),
        ({**good, "interval": 0}, "interval"),
        ({**good, "interval": 86_401}, "interval"),
        ({**good, "interval": "often"}, "interval"),
        ({**good, "type": "telepathy"}, "type"),
        ({**good, "name": ""}, "name"),
        ({**good, "timeout": 0}, "timeout"),
        ({**good, "expected_status_codes": [700]}, "expected_status_codes"),
    ]
    for body, field in cases:
        code, resp = await api(http, server, "POST", "/api/checks/", json=body)
        assert code == 422, (body, resp)
        assert ["body", field] in [e["loc"][:2] for e in resp["detail"]], (body, resp)

    code, resp = await api(http, server, "POST", "/api/checks/", data=b'{"name": ')
    assert code == 400 and "malformed JSON" in resp["detail"]
    code, resp = await api(http, server, "POST", "/api/checks/", json=[good])
    assert code == 422 and resp["detail"][0]["loc"] == ["body"]
    code, resp = await api(http, server, "POST", "/api/checks/", data=io.BytesIO(b"x" * (2 << 20)))
    assert code == 413
    # Unknown fields are ignored, not refused: clients send the union of every type's.
    code, resp = await api(
        http, server, "POST", "/api/checks/", json={**good, "dns_server": "", "port": 0}
    )
    assert code == 200
    code, checks = await api(http, server, "GET", "/api/checks/")
    assert [c["id"] for c in checks] == [resp["id"]]


@pytest.mark.both_backends
async def test_results_survive_a_restart_and_checks_keep_their_phase(
    server: Server, target: Target, http: aiohttp.ClientSession
) -> None:
    _, check = await api(
        http, server, "POST", "/api/checks/", json={"name": "w", "url": target.url, "interval": 1}
    )
    cid = check["id"]
    await check_status(http, server, cid, "UP")

    async def logs() -> list[dict[str, Any]]:
        return (await api(http, server, "GET", f"/api/checks/{cid}/logs?limit=500"))[1]

    await wait_for(lambda: _at_least(logs, 3))
    hits_before_stop = target.hits
    assert server.stop(signal.SIGTERM) == 0
    # Every probe the server ran before stopping was written: one row per hit.
    server.start()
    stored = await logs()
    assert len(stored) == hits_before_stop

    await wait_for(lambda: _at_least(logs, len(stored) + 2))
    after = await logs()
    phases = {round(_epoch(r["due_at"]) * 1000) % 1000 for r in after}
    assert len(phases) == 1, f"runs left their phase after a restart: {phases}"
    code, body = await api(http, server, "GET", f"/api/checks/{cid}")
    assert code == 200
    assert body["status"] == "UP"
    assert server.stop(signal.SIGINT) == 0


async def _at_least(fetch: Any, n: int) -> bool:
    return len(await fetch()) >= n


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
