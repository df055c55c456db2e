"""Badges against a real `tocsin serve` probing real checks on loopback: the SVG parses,
its value and colour follow the check's real status, the label and style options, the
uptime badge's windows, ETag/If-None-Match, errors (422 naming the parameter, 404 for an
unknown uuid), and a cached badge being served without a build."""

from __future__ import annotations

import http.server
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import Server

SVG = "{http://www.w3.org/2000/svg}"
OPS_TOKEN = "badge-test-ops-token"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server (operational metrics on, to read the public cache's counters), a
    target in a thread, and two checks: one answered 200, one answered 500."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    target = f"http://127.0.0.1:{httpd.server_address[1]}"
    s = Server(tmp_path_factory.mktemp("badges") / "data")
    s.start("--operational-metrics-token", OPS_TOKEN)
    try:
        checks = {}
        for name, code in (("up", 200), ("down", 500)):
            r = requests.post(
                s.base + "/api/checks/",
                headers=s.headers,
                json={
                    "name": f"web-{name}",
                    "type": "uptime",
                    "url": f"{target}/status/{code}",
                    "interval": 1,
                    "timeout": 2,
                },
                timeout=10,
            )
            assert r.status_code == 200, r.text
            checks[name] = r.json()
        yield {"server": s, "checks": checks}
    finally:
        s.kill()
        httpd.shutdown()
        httpd.server_close()


def _get(s: Server, path: str, **kw: Any) -> requests.Response:
    return requests.get(s.base + path, timeout=10, **kw)


def _parse(body: bytes) -> dict[str, Any]:
    """What a badge says: its title, aria-label, texts (without shadows) and fills."""
    root = ET.fromstring(body)  # noqa: S314  (our own server's SVG)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    texts = [t.text for t in root.iter(f"{SVG}text") if t.get("aria-hidden") != "true"]
    return {
        "root": root,
        "aria": root.get("aria-label"),
        "title": root.find(f"{SVG}title").text,  # type: ignore[union-attr]
        "texts": texts,
        "fills": [r.get("fill") for r in root.iter(f"{SVG}rect")],
    }


def _wait_badge(s: Server, path: str, value: str, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = _get(s, path)
        assert r.status_code == 200, r.text
        got = _parse(r.content)
        if got["texts"][-1] == value:
            return {**got, "response": r}
        if time.monotonic() > deadline:
            raise AssertionError(f"badge {path} says {got['texts']}, not {value!r}")
        time.sleep(0.3)


def test_status_badges_follow_the_checks(world: dict[str, Any]) -> None:
    s, checks = world["server"], world["checks"]
    up = _wait_badge(s, f"/api/badges/{checks['up']['uuid']}", "up")
    r = up["response"]
    assert r.headers["Content-Type"].startswith("image/svg+xml")
    assert "max-age=" in r.headers["Cache-Control"]
    assert r.headers["ETag"]
    assert up["texts"] == ["status", "up"]
    assert up["aria"] == "status: up" == up["title"]
    assert "#4c1" in up["fills"] and "#555" in up["fills"]
    down = _wait_badge(s, f"/api/badges/{checks['down']['uuid']}", "down")
    assert "#e05d44" in down["fills"]
    assert down["title"] == "status: down"


def test_label_and_style(world: dict[str, Any]) -> None:
    s, uuid = world["server"], world["checks"]["up"]["uuid"]
    _wait_badge(s, f"/api/badges/{uuid}", "up")
    r = _get(s, f"/api/badges/{uuid}", params={"label": 'api <"prod"> & co', "style": "flat"})
    assert r.status_code == 200
    flat = _parse(r.content)
    assert flat["texts"][0] == 'api <"prod"> & co'  # escaped in the XML, whole once parsed
    assert flat["title"] == 'api <"prod"> & co: up'
    assert flat["root"].find(f"{SVG}linearGradient") is not None
    r = _get(s, f"/api/badges/{uuid}", params={"style": "FLAT-SQUARE"})
    assert r.status_code == 200
    square = _parse(r.content)
    assert square["root"].find(f"{SVG}linearGradient") is None
    assert all(rect.get("rx") is None for rect in square["root"].iter(f"{SVG}rect"))
    # A longer label makes a wider badge.
    short = _parse(_get(s, f"/api/badges/{uuid}", params={"label": "ab"}).content)
    long = _parse(_get(s, f"/api/badges/{uuid}", params={"label": "a much longer label"}).content)
    assert int(long["root"].get("width")) > int(short["root"].get("width")) + 50


def test_uptime_badge(world: dict[str, Any]) -> None:
    s, checks = world["server"], world["checks"]
    for window in ("24h", "7d", "30d", "90d"):
        r = _get(s, f"/api/badges/{checks['up']['uuid']}/uptime", params={"window": window})
        assert r.status_code == 200, r.text
        got = _parse(r.content)
        assert got["texts"][0] == f"uptime {window}"
        value = got["texts"][-1]
        assert value == "no data" or value.endswith("%"), value
    r = _get(s, f"/api/badges/{checks['up']['uuid']}/uptime", params={"label": "SLA"})
    assert _parse(r.content)["texts"][0] == "SLA"


def test_bad_parameters_are_422(world: dict[str, Any]) -> None:
    s, uuid = world["server"], world["checks"]["up"]["uuid"]
    for path, params, name in (
        (f"/api/badges/{uuid}/uptime", {"window": "1y"}, "window"),
        (f"/api/badges/{uuid}", {"style": "plastic-3d"}, "style"),
        (f"/api/badges/{uuid}", {"label": "x" * 51}, "label"),
        (f"/api/badges/{uuid}/uptime", {"label": "x" * 51}, "label"),
    ):
        r = _get(s, path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert r.json()["detail"][0]["loc"] == ["query", name]
    assert _get(s, f"/api/badges/{uuid}", params={"label": "x" * 50}).status_code == 200


def test_unknown_uuid_is_404(world: dict[str, Any]) -> None:
    s = world["server"]
    for path in (
        "/api/badges/00000000-0000-4000-8000-000000000000",
        "/api/badges/00000000-0000-4000-8000-000000000000/uptime",
        "/api/badges/not-a-uuid",
    ):
        r = _get(s, path)
        assert r.status_code == 404, path
        assert r.json()["detail"]


def _cache_counters(s: Server) -> dict[str, float]:
    r = _get(s, "/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    assert r.status_code == 200
    return {
        sample.name: sample.value
        for fam in text_string_to_metric_families(r.text)
        if fam.name.startswith("tocsin_public_cache")
        for sample in fam.samples
        if sample.labels.get("cache") == "badges"
    }


def test_etag_and_cached_answers(world: dict[str, Any]) -> None:
    s, uuid = world["server"], world["checks"]["down"]["uuid"]
    _wait_badge(s, f"/api/badges/{uuid}", "down")
    path = f"/api/badges/{uuid}/uptime?window=7d"
    first = _get(s, path)
    etag = first.headers["ETag"]
    before = _cache_counters(s)
    again = _get(s, path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    assert _get(s, path, headers={"If-None-Match": '"other"'}).status_code == 200
    after = _cache_counters(s)
    # Served from the cache: hits, and nothing built (so no database query).
    assert after["tocsin_public_cache_hits_total"] >= before["tocsin_public_cache_hits_total"] + 2
    assert after["tocsin_public_cache_builds_total"] == before["tocsin_public_cache_builds_total"]
