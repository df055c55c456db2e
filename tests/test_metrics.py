"""Metrics export against a real `tocsin serve` probing real checks on loopback: the
Prometheus text (parsed with prometheus_client's parser, and scraped by a real
Prometheus), OTLP JSON (parsed into opentelemetry-proto's message), metrics keys and
their isolation, and the server's own operational metrics (`GET /metrics`)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from helpers import Server, free_port, other_org_user, server_store

PROMETHEUS = "/usr/bin/prometheus"
OPS_TOKEN = "ops-secret-token-for-tests"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 200
        body = b"status"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    """A real HTTP target for the whole module (`/status/{code}` answers that code),
    in a thread: the module's server probes it across tests and event loops."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _api(server: Server, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token or server.token}"}
    return requests.request(method, server.base + path, headers=headers, timeout=10, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, target: str) -> Iterator[dict[str, Any]]:
    """One server (with the operational endpoint on), two checks of the admin's
    organisation (one UP, one DOWN), a metrics key of it, and a second organisation
    with a check and a key of its own."""
    s = Server(tmp_path_factory.mktemp("metrics") / "data")
    with pytest.MonkeyPatch.context() as mp:
        # Rollup figures recomputed at every scrape, so a minute's rollup shows at once.
        mp.setenv("TOCSIN_METRICS_FIGURES_TTL_S", "0")
        s.start("--operational-metrics-token", OPS_TOKEN)
    try:
        org_a = _api(s, "GET", "/api/organizations/").json()[0]["id"]
        checks = {}
        for name, code, tags in (("web-up", 200, ["prod", "eu"]), ("web-down", 500, ["prod"])):
            r = _api(
                s,
                "POST",
                "/api/checks/",
                json={
                    "name": name,
                    "type": "uptime",
                    "url": f"{target}/status/{code}",
                    "interval": 1,
                    "timeout": 2,
                    "tags": tags,
                },
            )
            assert r.status_code == 200, r.text
            checks[name] = r.json()
        r = _api(s, "POST", f"/api/organizations/{org_a}/metrics-keys", json={"name": "prom"})
        assert r.status_code == 201, r.text
        key_a = r.json()
        token_b, org_b = asyncio.run(other_org_user(s))
        r = _api(
            s,
            "POST",
            "/api/checks/",
            token_b,
            json={"name": "b-only", "type": "uptime", "url": f"{target}/status/200", "interval": 1},
        )
        assert r.status_code == 200, r.text
        r = _api(s, "POST", f"/api/organizations/{org_b}/metrics-keys", token_b, json={"name": "b"})
        assert r.status_code == 201, r.text
        yield {
            "server": s,
            "org_a": org_a,
            "org_b": org_b,
            "token_b": token_b,
            "checks": checks,
            "key_a": key_a,
            "key_b": r.json(),
        }
    finally:
        s.kill()


def _scrape(server: Server, key: str, **params: str) -> requests.Response:
    return requests.get(f"{server.base}/api/metrics/{key}", params=params, timeout=10)


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _wait_for_text(server: Server, key: str, ready: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = _scrape(server, key)
        assert r.status_code == 200, r.text
        fams = _families(r.text)
        if ready(fams):
            return fams
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics not ready within {timeout} s:\n{r.text[:3000]}")
        time.sleep(0.5)


def _by_check(family: Any, **match: str) -> dict[str, Any]:
    return {
        s.labels["check_name"]: s
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in match.items())
    }


def _up_and_down(fams: dict[str, Any]) -> bool:
    up = _by_check(fams["tocsin_check_up"]) if "tocsin_check_up" in fams else {}
    return (
        up.get("web-up") is not None
        and up["web-up"].value == 1
        and up.get("web-down") is not None
        and up["web-down"].value == 0
        and "tocsin_check_response_time_seconds" in fams
        and len(_by_check(fams["tocsin_check_response_time_seconds"])) == 2
        and len(_by_check(fams["tocsin_check_last_check_timestamp_seconds"])) == 2
    )


def test_prometheus_text(world: dict[str, Any]) -> None:
    s, key = world["server"], world["key_a"]["key"]
    fams = _wait_for_text(s, key, _up_and_down)
    r = _scrape(s, key)
    assert r.headers["Content-Type"] == TEXT_TYPE
    assert "# HELP tocsin_check_up " in r.text
    assert "# TYPE tocsin_check_up gauge" in r.text

    up = _by_check(fams["tocsin_check_up"])
    assert set(up) == {"web-up", "web-down"}  # never another organisation's
    web_up = world["checks"]["web-up"]
    labels = up["web-up"].labels
    assert labels["check_id"] == str(web_up["id"])
    assert labels["check_type"] == "uptime"
    assert labels["tags"] == "eu,prod"
    assert labels["project"]  # the default project's name
    assert up["web-down"].labels["tags"] == "prod"

    status = fams["tocsin_check_status"]
    assert status.type == "gauge"
    ones = {(x.labels["check_name"], x.labels["status"]) for x in status.samples if x.value == 1}
    assert ones == {("web-up", "UP"), ("web-down", "DOWN")}
    assert len(_by_check(status, status="PAUSED")) == 2  # one series per status, one-hot

    last = _by_check(fams["tocsin_check_last_check_timestamp_seconds"])
    assert abs(last["web-up"].value - time.time()) < 600
    response = _by_check(fams["tocsin_check_response_time_seconds"])
    assert 0 <= response["web-up"].value < 10
    for fam in fams.values():
        assert fam.documentation, fam.name


@pytest.mark.timeout(200)
def test_uptime_and_latency_from_rollups(world: dict[str, Any]) -> None:
    """Minute rollups close at minute boundaries: wait for the first of the checks'."""
    s, key = world["server"], world["key_a"]["key"]

    def ready(fams: dict[str, Any]) -> bool:
        if "tocsin_check_uptime_ratio" not in fams:
            return False
        got = _by_check(fams["tocsin_check_uptime_ratio"], window="24h")
        # The first minute may close before the first DOWN result: wait for downtime.
        return "web-up" in got and "web-down" in got and got["web-down"].value < 1.0

    fams = _wait_for_text(s, key, ready, timeout=150)
    uptime = fams["tocsin_check_uptime_ratio"]
    for window in ("24h", "7d", "30d"):
        got = _by_check(uptime, window=window)
        assert got["web-up"].value == 1.0
        # DOWN since its first result; the time before it is not downtime.
        assert 0.0 <= got["web-down"].value < 1.0
    latency = fams["tocsin_check_latency_seconds"]
    assert latency.type == "summary"
    q = {
        x.labels["quantile"]: x.value for x in latency.samples if x.labels["check_name"] == "web-up"
    }
    assert set(q) == {"0.5", "0.95", "0.99"}
    assert 0 <= q["0.5"] <= q["0.95"] <= q["0.99"]
    # The failing check has no successful run: no quantiles rather than NaN.
    assert all(x.labels["check_name"] != "web-down" for x in latency.samples)


def test_otlp_json(world: dict[str, Any]) -> None:
    s, key = world["server"], world["key_a"]["key"]
    _wait_for_text(s, key, _up_and_down)
    r = _scrape(s, key, format="otlp")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    msg = json_format.Parse(r.text, ExportMetricsServiceRequest())
    (rm,) = msg.resource_metrics
    attrs = {a.key: a.value for a in rm.resource.attributes}
    assert attrs["service.name"].string_value == "tocsin"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    up = metrics["tocsin_check_up"]
    points = {}
    for p in up.gauge.data_points:
        a = {x.key: x.value for x in p.attributes}
        points[a["check_name"].string_value] = (p.as_int, a)
        assert p.time_unix_nano > 1_600_000_000 * 10**9
    assert points["web-up"][0] == 1
    assert points["web-down"][0] == 0
    assert points["web-up"][1]["check_id"].int_value == world["checks"]["web-up"]["id"]
    assert metrics["tocsin_check_response_time_seconds"].unit == "s"
    # 64-bit integers are strings in OTLP/JSON.
    raw = json.loads(r.text)
    point = raw["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    assert isinstance(point["timeUnixNano"], str)


def test_bad_format_is_422(world: dict[str, Any]) -> None:
    r = _scrape(world["server"], world["key_a"]["key"], format="xml")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "format"]


def test_real_prometheus_scrapes(world: dict[str, Any], tmp_path: Path) -> None:
    s, key = world["server"], world["key_a"]["key"]
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: tocsin\n"
        f"    metrics_path: /api/metrics/{key}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{s.port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        found: list[Any] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                r = requests.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": "tocsin_check_up"},
                    timeout=5,
                )
                if r.status_code == 200:
                    found = r.json()["data"]["result"]
                    if len(found) == 2:
                        break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"Prometheus found {found!r}; log:\n{(tmp_path / 'prometheus.log').read_text()}"
            )
        by_name = {x["metric"]["check_name"]: x for x in found}
        assert set(by_name) == {"web-up", "web-down"}
        assert by_name["web-up"]["value"][1] == "1"
        assert by_name["web-down"]["value"][1] == "0"
        assert by_name["web-up"]["metric"]["job"] == "tocsin"
        assert by_name["web-up"]["metric"]["tags"] == "eu,prod"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_keys_are_shown_once_and_stored_hashed(world: dict[str, Any]) -> None:
    s, org_a, created = world["server"], world["org_a"], world["key_a"]
    key = created["key"]
    assert key.startswith("tmk_") and len(key) == 36
    assert created["prefix"] == key[:8]
    listed = _api(s, "GET", f"/api/organizations/{org_a}/metrics-keys").json()
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine
    assert key not in json.dumps(listed)

    async def row() -> Any:
        store = server_store(s)
        await store.open(migrate=False)
        try:
            return await store.get("metrics_keys", [org_a], created["id"])
        finally:
            await store.close()

    stored = asyncio.run(row())
    assert key not in json.dumps(stored, default=str)
    assert stored["key_hash"] != key and len(stored["key_hash"]) == 64


def test_organisation_isolation(world: dict[str, Any]) -> None:
    s = world["server"]
    fams = _wait_for_text(
        s,
        world["key_b"]["key"],
        lambda f: "tocsin_check_up" in f and _by_check(f["tocsin_check_up"]),
    )
    assert set(_by_check(fams["tocsin_check_up"])) == {"b-only"}
    # Another organisation's key id is missing, not forbidden.
    org_a, org_b, token_b = world["org_a"], world["org_b"], world["token_b"]
    key_a_id = world["key_a"]["id"]
    r = _api(s, "DELETE", f"/api/organizations/{org_b}/metrics-keys/{key_a_id}", token_b)
    assert r.status_code == 404
    r = _api(s, "DELETE", f"/api/organizations/{org_a}/metrics-keys/{key_a_id}", token_b)
    assert r.status_code == 404
    r = _api(s, "GET", f"/api/organizations/{org_a}/metrics-keys", token_b)
    assert r.status_code == 404
    assert _scrape(s, world["key_a"]["key"]).status_code == 200


@pytest.mark.parametrize("role", ["VIEWER", "MEMBER"])
def test_only_admins_manage_keys(world: dict[str, Any], role: str) -> None:
    s, org_a = world["server"], world["org_a"]
    token, _ = asyncio.run(other_org_user(s, role=role, org_id=org_a))
    path = f"/api/organizations/{org_a}/metrics-keys"
    assert _api(s, "POST", path, token, json={"name": "x"}).status_code == 403
    assert _api(s, "GET", path, token).status_code == 403
    assert _api(s, "DELETE", f"{path}/{world['key_a']['id']}", token).status_code == 403


def test_bad_key_bodies(world: dict[str, Any]) -> None:
    s, org_a = world["server"], world["org_a"]
    path = f"/api/organizations/{org_a}/metrics-keys"
    r = _api(s, "POST", path, json={"name": ""})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]
    r = _api(s, "POST", path, json={})
    assert r.status_code == 422
    assert _api(s, "DELETE", f"{path}/999999").status_code == 404


def test_revoked_key_stops_working(world: dict[str, Any]) -> None:
    s, org_a = world["server"], world["org_a"]
    r = _api(s, "POST", f"/api/organizations/{org_a}/metrics-keys", json={"name": "short"})
    assert r.status_code == 201
    created = r.json()
    assert _scrape(s, created["key"]).status_code == 200
    r = _api(s, "DELETE", f"/api/organizations/{org_a}/metrics-keys/{created['id']}")
    assert r.status_code == 204
    revoked = _scrape(s, created["key"])
    unknown = _scrape(s, "tmk_" + "A" * 32)
    # A revoked key and an unknown one are answered alike.
    assert revoked.status_code == unknown.status_code == 404
    assert revoked.json() == unknown.json()
    assert _scrape(s, "nonsense").status_code == 404
    listed = _api(s, "GET", f"/api/organizations/{org_a}/metrics-keys").json()
    assert next(k for k in listed if k["id"] == created["id"])["revoked_at"] is not None
    # Its last use was recorded (at most once a minute).
    assert next(k for k in listed if k["id"] == created["id"])["last_used_at"] is not None


def test_operational_metrics(world: dict[str, Any]) -> None:
    s = world["server"]
    url = s.base + "/metrics"
    assert requests.get(url, timeout=10).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert requests.get(url, headers=bad, timeout=10).status_code == 401
    # An API token is not the operational token.
    assert requests.get(url, headers=s.headers, timeout=10).status_code == 401
    r = requests.get(url, headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == TEXT_TYPE
    fams = _families(r.text)
    for name in (
        "tocsin_engine_checks",
        "tocsin_engine_probes_dispatched",
        "tocsin_engine_probes_in_flight",
        "tocsin_engine_backlog",
        "tocsin_writer_buffered",
        "tocsin_writer_results_written",
        "tocsin_outbox_pending",
        "tocsin_outbox_sent",
        "tocsin_live_subscribers",
        "tocsin_public_cache_hits",
        "tocsin_store_reads",
        "tocsin_store_writes",
        "process_resident_memory_bytes",
        "process_cpu_seconds",
    ):
        assert name in fams, name
    assert fams["tocsin_engine_checks"].samples[0].value >= 3
    assert fams["tocsin_engine_probes_dispatched"].type == "counter"


def test_operational_metrics_off_by_default(tmp_path: Path) -> None:
    s = Server(tmp_path / "data")
    s.start()
    try:
        r = requests.get(s.base + "/metrics", timeout=10)
        assert r.status_code == 404
        r = requests.get(s.base + "/metrics", headers=s.headers, timeout=10)
        assert r.status_code == 404
    finally:
        s.kill()
