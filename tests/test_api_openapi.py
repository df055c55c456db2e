"""`GET /api/openapi.json`: generated from the routes and body models, it covers every
route, and schemathesis fuzzing the running server against it finds no server error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.inspect
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from conftest import Server
from tocsin.api.app import create_app
from tocsin.api.context import AppContext
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.store import open_store

# Examples per operation, half of them invalid input: bounded (well under a minute in
# all) and deterministic.
EXAMPLES = 10
# The SSE stream never ends: not fuzzed.
SKIP = {("GET", "/api/events")}
# These can lock the admin out (delete its token, deactivate or demote it): fuzzed last.
LAST = {
    ("DELETE", "/api/users/me/tokens/{token_id}"),
    ("PATCH", "/api/users/{user_id}"),
    ("PATCH", "/api/users/me"),
    ("PUT", "/api/organizations/{org_id}/members/{user_id}"),
    ("DELETE", "/api/organizations/{org_id}/members/{user_id}"),
}


@pytest.fixture
def quiet_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_TOKEN", "0")
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_ADDRESS", "0")
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.kill()


def registered_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(METHOD, path) of every responder of an app built by `create_app`, as Falcon's
    public inspection module lists them (not the generator's own walk of the router)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    ctx = AppContext(
        store=open_store(None, probe), engine=Engine(), events=EventHub(), data_dir=probe
    )
    out: set[tuple[str, str]] = set()
    for route in falcon.inspect.inspect_routes(create_app(ctx)):
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.path)
        # `internal`: the OPTIONS and 405 responders Falcon adds by itself.
        out.update((m.method, path) for m in route.methods if not m.internal)
    return out


def test_document_covers_every_route(quiet_server: Server, tmp_path: Path) -> None:
    resp = requests.get(quiet_server.base + "/api/openapi.json", timeout=10)  # no token
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    doc = resp.json()
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    documented = {
        (m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"
    }
    routes = registered_routes(tmp_path)
    assert len(routes) > 40
    assert routes == documented
    for path in ("/api/checks", "/api/openapi.json", "/api/ping/{uuid}/{signal}"):
        assert path in doc["paths"]
    # Bodies come from the validating models, with their limits.
    body = doc["paths"]["/api/checks"]["post"]["requestBody"]["content"]["application/json"]
    check = doc["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert check["required"] == ["name"]
    assert check["properties"]["interval"]["maximum"] == 86_400
    # A PATCH changes only the fields sent: nothing required.
    patch = doc["paths"]["/api/checks/{check_id}"]["patch"]["requestBody"]
    ref = patch["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "required" not in doc["components"]["schemas"][ref]
    # Path converters become typed parameters; public routes need no token.
    (org,) = doc["paths"]["/api/organizations/{org_id}"]["parameters"]
    assert org["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    assert doc["paths"]["/api/ping/{uuid}"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/api/checks"]["get"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # Query parameters come from the objects that read them, with their limits.
    listing = {p["name"]: p for p in doc["paths"]["/api/checks"]["get"]["parameters"]}
    assert {"limit", "offset", "org_id", "type", "status", "tag", "q"} <= set(listing)
    assert listing["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
        "default": 100,
    }
    assert "heartbeat" in listing["type"]["schema"]["enum"]
    assert all(p["in"] == "query" for p in listing.values())
    incidents = doc["paths"]["/api/incidents"]["get"]["parameters"]
    assert {p["name"] for p in incidents} >= {"organization_id", "status", "since", "until"}
    confirm = doc["paths"]["/api/organizations/{org_id}"]["delete"]["parameters"]
    assert [p["name"] for p in confirm] == ["confirm"]
    # Every $ref resolves.
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs
    assert all(r in doc["components"]["schemas"] for r in refs)


def fuzz(server: Server, op: Any) -> None:
    """Valid and invalid requests to one operation: never a 5xx, and every answer is
    one the document describes (status, media type, schema)."""
    checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
    modes = schemathesis.GenerationMode

    @given(
        case=op.as_strategy(generation_mode=modes.POSITIVE)
        | op.as_strategy(generation_mode=modes.NEGATIVE)
    )
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=server.base, headers=server.headers, checks=checks, timeout=10
        )

    run()


def test_schemathesis_finds_no_server_error(quiet_server: Server) -> None:
    doc = requests.get(quiet_server.base + "/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    ops = [result.ok() for result in schema.get_all_operations()]
    key = {id(op): (op.method.upper(), op.path) for op in ops}
    assert set(key.values()) >= SKIP | LAST
    first = [op for op in ops if key[id(op)] not in SKIP | LAST]
    assert len(first) > 40
    for op in first:
        fuzz(quiet_server, op)
    # The admin can still work after all that.
    me = requests.get(quiet_server.base + "/api/users/me", headers=quiet_server.headers, timeout=10)
    assert me.status_code == 200
    for op in ops:
        if key[id(op)] in LAST:
            fuzz(quiet_server, op)
