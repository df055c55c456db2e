"""`api_scenario` checks against a real JSON API on loopback: a login that answers a
token, a request that uses it (extracted by JSONPath) and the check's secret, assertions
on status, JSONPath values, headers, body and latency; a failing assertion stops the run
(later steps skipped) with each step's outcome in `details`; secrets never appear in
results, logs or API answers, and are kept when sent back masked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers import Server, api, free_port, wait_for
from tocsin import Check, Engine, Status
from workflow_helpers import loc

SECRET = "s3cr3t-pa55word"


class JsonApi:
    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.seen_passwords: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen_passwords.append(body.get("password"))
        if body.get("password") != SECRET:
            return web.json_response({"error": "bad credentials"}, status=401)
        return web.json_response(
            {"token": "tok-123", "user": {"id": 7}}, headers={"X-Session": "abc"}
        )

    async def orders(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok-123":
            return web.json_response({"error": "unauthorised"}, status=401)
        return web.json_response(
            {"orders": [{"id": 1, "total": 10}, {"id": 2, "total": 35}], "count": 2}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/login", self.login)
        app.router.add_get("/orders/{user}", self.orders)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@pytest.fixture
async def json_api() -> AsyncIterator[JsonApi]:
    a = JsonApi()
    await a.start()
    yield a
    assert a.runner is not None
    await a.runner.cleanup()


def steps(a: JsonApi, expected_count: int = 2) -> list[dict[str, Any]]:
    return [
        {
            "name": "login",
            "method": "POST",
            "url": a.url("/login"),
            "body": {"user": "ops", "password": "{{secrets.password}}"},
            "extract": [
                {"var": "token", "from": "jsonpath", "path": "$.token"},
                {"var": "uid", "from": "jsonpath", "path": "$.user.id"},
                {"var": "session", "from": "header", "header": "X-Session"},
            ],
            "assertions": [
                {"type": "status", "value": 200},
                {"type": "header", "name": "Content-Type", "op": "contains", "value": "json"},
            ],
        },
        {
            "name": "orders",
            "url": a.url("/orders/{{uid}}"),
            "headers": {"Authorization": "Bearer {{token}}"},
            "assertions": [
                {"type": "status", "in": [200, 203]},
                {"type": "jsonpath", "path": "$.count", "op": "equals", "value": expected_count},
                {"type": "jsonpath", "path": "$.orders[1].total", "op": "gt", "value": 30},
                {"type": "body", "op": "contains", "value": "orders"},
                {"type": "latency", "lt_ms": 5000},
            ],
        },
        {
            "name": "again",
            "url": a.url("/orders/{{uid}}"),
            "headers": {"Authorization": "Bearer {{token}}"},
        },
    ]


def scenario(a: JsonApi, **options: Any) -> Check:
    return Check(
        id=1,
        type="api_scenario",
        timeout=10,
        options={
            "api_scenario_steps": steps(a),
            "api_scenario_secrets": {"password": SECRET},
            **options,
        },
    )


async def test_a_scenario_passes_and_a_failing_assertion_stops_it(json_api: JsonApi) -> None:
    async with Engine(threads=1) as engine:
        r = await engine.run_once(scenario(json_api))
        assert r.status is Status.UP, (r.error_kind, r.message, r.details)
        assert [s["status"] for s in r.details["steps"]] == ["passed"] * 3
        assert r.details["variables"] == ["session", "token", "uid"]
        assert json_api.seen_passwords == [SECRET]

        failing = scenario(json_api, api_scenario_steps=steps(json_api, expected_count=5))
        r = await engine.run_once(failing)
        assert (r.status, r.error_kind) == (Status.DOWN, "assertion_failed")
        assert [s["status"] for s in r.details["steps"]] == ["passed", "failed", "skipped"]
        assert "$.count is 2" in r.details["steps"][1]["message"]

        wrong = scenario(json_api, api_scenario_secrets={"password": "nope"})
        r = await engine.run_once(wrong)
        assert (r.status, r.error_kind) == (Status.DOWN, "assertion_failed")
        assert "status 401" in r.message
        # The secret is never in a result, even when the server echoes it.
        echo = Check(
            id=2,
            type="api_scenario",
            timeout=5,
            options={
                "api_scenario_steps": [
                    {
                        "url": json_api.url("/orders/{{secrets.password}}"),
                        "assertions": [
                            {"type": "body", "op": "contains", "value": "{{secrets.password}}"}
                        ],
                    }
                ],
                "api_scenario_secrets": {"password": SECRET},
            },
        )
        r = await engine.run_once(echo)
        assert SECRET not in repr((r.message, r.details))


async def test_scenarios_through_the_api_keep_secrets_secret(
    tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession, json_api: JsonApi
) -> None:
    server = Server(tmp_path_factory.mktemp("scenario") / "data")
    server.start()
    try:
        body = {
            "name": "checkout flow",
            "type": "api_scenario",
            "interval": 1,
            "timeout": 10,
            "api_scenario_steps": steps(json_api),
            "api_scenario_secrets": {"password": SECRET},
        }
        for bad, where in (
            ({"api_scenario_steps": []}, ["api_scenario_steps"]),
            ({"api_scenario_steps": [{"url": "ftp://x"}]}, ["api_scenario_steps", 0, "url"]),
            (
                {"api_scenario_steps": [{"url": json_api.url("/{{later}}")}]},
                ["api_scenario_steps", 0],
            ),
            (
                {
                    "api_scenario_steps": [
                        {"url": json_api.url("/x"), "assertions": [{"type": "size"}]}
                    ]
                },
                ["api_scenario_steps", 0, "assertions", 0, "type"],
            ),
            (
                {"api_scenario_secrets": {"bad name": "x"}},
                ["api_scenario_secrets", "bad name", "[key]"],
            ),
        ):
            code, err = await api(http, server, "POST", "/api/checks/", json={**body, **bad})
            assert code == 422 and loc(err) == where, (bad, err)
        code, check = await api(http, server, "POST", "/api/checks/", json=body)
        assert code == 200, check
        assert check["api_scenario_secrets"] == {"password": "******"}
        assert check["api_scenario_steps"][0]["extract"][0]["from"] == "jsonpath"

        async def up() -> Any:
            _, c = await api(http, server, "GET", f"/api/checks/{check['id']}")
            return c if c["status"] == "UP" else None

        await wait_for(up)
        # Sent back masked (a client's round trip), the secret is kept.
        code, again = await api(http, server, "PUT", f"/api/checks/{check['id']}", json={**check})
        assert code == 200, again
        before = len(json_api.seen_passwords)
        await wait_for(lambda: _more(json_api, before))
        assert set(json_api.seen_passwords) == {SECRET}
        async with http.get(
            server.base + f"/api/checks/{check['id']}/logs", headers=server.headers
        ) as resp:
            logs = await resp.text()
        assert SECRET not in logs and "passed" in logs
        assert SECRET not in server.log.read_text()
    finally:
        server.kill()


async def _more(a: JsonApi, before: int) -> bool:
    return len(a.seen_passwords) > before
