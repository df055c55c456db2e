"""`GET /api/openapi.json`: generated from the routes, the body models and the query
parameter objects, it covers every route and says what the server accepts: check bodies
per type, booleans as JSON booleans, path parameters by their template names. Fuzzing
the running server against it with schemathesis, operation by operation and in chains
of operations that follow the document's links, finds no server error and no answer
the document does not describe."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.inspect
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis.stateful import initialize
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import StepOutput
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from helpers import Server
from tocsin.api import openapi
from tocsin.api.app import create_app
from tocsin.api.errors import ValidationFailed
from tocsin.api.paths import PUBLIC_PREFIXES
from tocsin.api.schemas import CHECK_SETTINGS, SloBody, parse, parse_check
from tocsin.services import Services
from tocsin.store import open_store

# Examples per operation, half of them invalid input: bounded and deterministic.
EXAMPLES = 50
# Stateful runs: scenarios, each a chain of calls that follows the document's links.
SCENARIOS = 100
STEPS = 16
# What every answer is checked for: no server error, and a status, media type and body
# the document declares for the operation.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The SSE stream never ends: not fuzzed.
SKIP = {("GET", "/api/events")}
# These can lock the admin out (delete its token, deactivate or demote it): fuzzed last,
# and not in the stateful runs.
LAST = {
    ("DELETE", "/api/users/me/tokens/{token_id}"),
    ("PATCH", "/api/users/{user_id}"),
    ("PUT", "/api/users/{user_id}"),
    ("PATCH", "/api/users/me"),
    ("PUT", "/api/users/me"),
    ("PUT", "/api/organizations/{org_id}/members/{user_id}"),
    ("PATCH", "/api/organizations/{org_id}/members/{user_id}"),
    ("DELETE", "/api/organizations/{org_id}/members/{user_id}"),
}
# Creations that succeed once per value (an email has one account): the state machine
# replays its steps while it searches, and a step that answered 201 and then 409 makes
# hypothesis's generation inconsistent (FlakyStrategyDefinition). Fuzzed on their own.
UNIQUE = {("POST", "/api/users")}
_SETTINGS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
}


@pytest.fixture
def quiet_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_TOKEN", "0")
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_ADDRESS", "0")
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document as an app built by `create_app` serves it (no server needed)."""
    data = tmp_path_factory.mktemp("doc")
    app = create_app(Services.build(open_store(None, data), data))
    return openapi.build(openapi.app_routes(app), PUBLIC_PREFIXES)


def registered_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(METHOD, path) of every responder of an app built by `create_app`, as Falcon's
    public inspection module lists them (not the generator's own walk of the router)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    app = create_app(Services.build(open_store(None, probe), probe))
    out: set[tuple[str, str]] = set()
    for route in falcon.inspect.inspect_routes(app):
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.path)
        # `internal`: the OPTIONS and 405 responders Falcon adds by itself.
        out.update((m.method, path) for m in route.methods if not m.internal)
    return out


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_schema(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    body = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
    return resolve(doc, body["schema"])


def validator(doc: dict[str, Any], name: str) -> Any:
    """A JSON Schema validator of components/schemas/`name`, its references resolved
    within the document."""
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema_rs.validator_for(root)


# Operations whose success body is not one typed schema: the document itself (any
# JSON), and adding a member (200 for a role change, 201 for a superuser's direct add,
# 202 for an invitation: declared as 2XX with the union of those bodies).
UNTYPED_SUCCESS = {
    ("GET", "/api/openapi.json"),
    ("POST", "/api/organizations/{org_id}/members"),
}


def test_every_json_operation_declares_its_typed_success_body(document: dict[str, Any]) -> None:
    doc = document
    untyped = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            success = {k: v for k, v in op["responses"].items() if k[0] == "2"}
            assert success, (method, path)
            for code, answer in success.items():
                if code == "2XX" or not answer.get("content", {}).get("application/json", {}).get(
                    "schema", True
                ):
                    untyped.add((method.upper(), path))
                elif code != "204":
                    (media,) = answer["content"]
                    schema = answer["content"][media]["schema"]
                    # (`*/*`: a document in the format it was asked for, any body)
                    assert schema or media == "*/*", (method, path, code)
    assert untyped == UNTYPED_SUCCESS


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
    # Path parameters: every field of the template, by the template's name.
    for path, item in doc["paths"].items():
        assert [p["name"] for p in item.get("parameters", [])] == re.findall(r"\{(\w+)\}", path)
    # Bodies come from the validating models, with their limits.
    check = body_schema(doc, "post", "/api/checks")
    assert check["required"] == ["name"]
    assert check["properties"]["interval"]["anyOf"][0]["maximum"] == 86_400
    # A PATCH changes only the fields sent: nothing required.
    patch = body_schema(doc, "patch", "/api/checks/{check_id}")
    assert "required" not in patch
    # A PATCH routed to the PUT responder is documented with the PUT's body.
    org = body_schema(doc, "patch", "/api/organizations/{org_id}")
    assert {"name", "slug"} <= set(org["properties"])
    assert org == body_schema(doc, "put", "/api/organizations/{org_id}")
    # Path converters become typed parameters; public routes need no token.
    (org_id,) = doc["paths"]["/api/organizations/{org_id}"]["parameters"]
    assert org_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    assert doc["paths"]["/api/ping/{uuid}"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/api/checks"]["get"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # Query parameters come from the objects that read them, with their limits; an
    # empty value is no value.
    listing = {p["name"]: p for p in doc["paths"]["/api/checks"]["get"]["parameters"]}
    assert {"limit", "offset", "org_id", "type", "status", "tag", "q"} <= set(listing)
    assert listing["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
        "default": 100,
    }
    assert "heartbeat" in listing["type"]["schema"]["anyOf"][0]["enum"]
    assert all(p["in"] == "query" and p["allowEmptyValue"] for p in listing.values())
    incidents = doc["paths"]["/api/incidents"]["get"]["parameters"]
    assert {p["name"] for p in incidents} >= {"organization_id", "status", "since", "until"}
    confirm = doc["paths"]["/api/organizations/{org_id}"]["delete"]["parameters"]
    assert [p["name"] for p in confirm] == ["confirm"]
    # Time zones are the names the server knows.
    zones = doc["components"]["schemas"]["TimeZone"]["enum"]
    assert "Europe/Paris" in zones and "UTC" in zones and "Mars/Olympus" not in zones
    # A create links to its item's operations, the id taken from the answer.
    created = openapi.success_response(doc["paths"]["/api/checks"]["post"])
    assert created is not None
    links = created["links"]
    assert {link["operationId"] for link in links.values()} == {
        f"{m}_api_checks_check_id" for m in ("get", "put", "patch", "delete")
    }
    assert {json.dumps(link["parameters"]) for link in links.values()} == {
        '{"check_id": "$response.body#/id"}'
    }
    projects = openapi.success_response(
        doc["paths"]["/api/organizations/{org_id}/projects"]["post"]
    )
    assert projects is not None
    assert projects["links"]["get-project_id"]["parameters"] == {
        "org_id": "$request.path.org_id",
        "project_id": "$response.body#/id",
    }
    # Every $ref resolves.
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs
    assert all(r in doc["components"]["schemas"] for r in refs)


def _variant(doc: dict[str, Any], check: dict[str, Any], kind: str) -> dict[str, Any]:
    """The settings schema the document applies to a check body of type `kind`."""
    (clause,) = [c for c in check["allOf"] if kind in c["if"]["properties"]["type"]["enum"]]
    return resolve(doc, clause["then"])


def test_check_settings_per_type(document: dict[str, Any]) -> None:
    """Which settings a check body needs depends on its type: the document says so for
    every type of CHECK_SETTINGS, and agrees with the validation on each."""
    check = body_schema(document, "post", "/api/checks")
    valid = validator(document, "CheckCreate")
    assert {k for c in check["allOf"] for k in c["if"]["properties"]["type"]["enum"]} == {
        *CHECK_SETTINGS,
        None,  # null is the default type
    }
    for kind, model in CHECK_SETTINGS.items():
        required = sorted(n for n, f in model.model_fields.items() if f.is_required())
        settings_schema = _variant(document, check, kind)
        assert sorted(settings_schema.get("required", [])) == required, kind
        # Without its required settings a body is invalid, and the server refuses it
        # naming each of them.
        body = {"name": "n", "type": kind}
        assert valid.is_valid(body) == (not required), kind
        try:
            parse_check(body)
            refused: set[str] = set()
        except ValidationFailed as exc:
            refused = {e["loc"][1] for e in exc.errors}
        assert refused == set(required), kind
    # No type is uptime, and so is a null one; a null setting is its default.
    assert not valid.is_valid({"name": "n"})
    assert valid.is_valid({"name": "n", "url": "https://example.com", "interval": None})
    assert not valid.is_valid({"name": "n", "type": None})
    # The settings of other types are never looked at, whatever they hold.
    junk = {"name": "n", "type": "heartbeat", "url": 5, "port": "x", "host": []}
    assert valid.is_valid(junk)
    parse_check(junk)
    # Conditions inside a type: a bearer token for bearer auth.
    bearer = {"name": "n", "url": "http://h/", "auth_method": "bearer"}
    assert not valid.is_valid(bearer)
    assert valid.is_valid({**bearer, "auth_bearer_token": "t"})
    # A PATCH needs nothing, but what it sends is checked against the type it names.
    patch = validator(document, "CheckCreatePatch")
    assert patch.is_valid({"type": "tcp"})
    assert not patch.is_valid({"type": "tcp", "port": 0})
    assert patch.is_valid({"port": 0})  # the stored type decides


def test_formats_as_the_server_reads_them(document: dict[str, Any]) -> None:
    """Patterns of URLs, hosts, time zones, IP addresses and times: what the document
    allows the server accepts, and what it forbids the server refuses."""
    valid = validator(document, "CheckCreate")
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"url": "https://example.com:8443/x?y#z"}, True),
        ({"url": "HTTP://[::1]/"}, True),
        ({"url": "ftp://example.com/"}, False),
        ({"url": "http://user:pw@example.com/"}, False),
        ({"url": "http://example.com:65536/"}, False),
        ({"url": "http://exa mple.com/"}, False),
        ({"url": "http://e.com", "http_method": "post"}, True),
        ({"url": "http://e.com", "http_method": "BREW"}, False),
        ({"url": "http://e.com", "http_headers": {"X-A": "1"}}, True),
        ({"url": "http://e.com", "http_headers": {"X A": "1"}}, False),
        ({"url": "http://e.com", "http_headers": {"X-A": "1\r\nX-B: 2"}}, False),
        ({"url": "http://e.com", "expected_status_codes": [600]}, False),
        ({"url": "http://e.com", "runbook_url": ""}, True),
        ({"url": "http://e.com", "tags": [" "]}, False),
        ({"url": "http://e.com", "check_source_critical": {"geo:eu": True}}, True),
        ({"url": "http://e.com", "check_source_critical": {"region:eu": True}}, False),
        ({"type": "heartbeat", "timezone": "Europe/Paris"}, True),
        ({"type": "heartbeat", "timezone": "Europe/Atlantis"}, False),
        ({"type": "heartbeat", "timezone": ""}, False),
        ({"type": "heartbeat", "schedule": "*/5 * * * *"}, True),
        ({"type": "heartbeat", "schedule": "* * * * * *"}, False),
        ({"type": "icmp", "host": "[2001:db8::1]"}, True),
        ({"type": "icmp", "host": "a/b"}, False),
        ({"type": "dns", "host": "e.com", "dns_server": "[2001:db8::1]:53"}, True),
        ({"type": "dns", "host": "e.com", "dns_server": "1.2.3.4:0"}, False),
        ({"type": "dns", "host": "e.com", "dns_record_type": "aaaa"}, True),
        ({"type": "dns", "host": "e.com", "dns_expected_ips": ["1.2.3.256"]}, False),
        ({"type": "tcp", "host": "h", "port": True}, False),
        ({"type": "tcp", "host": "h", "port": "80"}, False),
        ({"type": "tcp", "host": "h", "port": 80.0}, True),
    ]
    for fields, ok in cases:
        body = {"name": "n", **fields}
        assert valid.is_valid(body) == ok, fields
        try:
            parse_check(body)
            accepted = True
        except ValidationFailed:
            accepted = False
        assert accepted == ok, fields
    slo = validator(document, "SloBody")
    assert not slo.is_valid({"target_percentage": 99, "sli_type": "latency"})
    assert slo.is_valid({"target_percentage": 99, "sli_type": "latency", "latency_threshold_ms": 5})
    assert not slo.is_valid({"target_percentage": 99, "budget_warn_pct": False})
    # Time query parameters: the pattern is what the server parses.
    (until,) = [
        p for p in document["paths"]["/api/incidents"]["get"]["parameters"] if p["name"] == "until"
    ]
    time_ok = jsonschema_rs.validator_for(until["schema"])
    for text, ok in [
        ("1714564800", True),
        ("1714564800.5", True),
        ("2024-05-01", True),
        ("2024-05-01T12:00:00.123456+02:00", True),
        ("2024-05-01T12:00Z", True),
        ("2024-13-01", False),
        ("yesterday", False),
        ("1e9", False),
        ("nan", False),
    ]:
        assert time_ok.is_valid(text) == ok, text


# What a check body's fields must satisfy beyond the document (each field's description
# says so): a cron rule that matches, JSON that parses, a regular expression that compiles.
BEYOND_THE_DOCUMENT = {"schedule", "http_body", "content_match_text"}


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/api/checks", parse_check),
        ("/api/checks/{check_id}/slo", lambda body: parse(SloBody, body)),
    ],
)
def test_generated_bodies_are_accepted(document: dict[str, Any], path: str, parser: Any) -> None:
    """Bodies schemathesis generates from the document as valid are valid for the
    models that validate them (on their own: without the store and the engine)."""
    op = schemathesis.openapi.from_dict(document)[path]["POST"]

    @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))
    @settings(max_examples=150, phases=[Phase.generate], **_SETTINGS)
    def accepted(case: Any) -> None:
        errors: list[dict[str, Any]] = []
        try:
            parser(case.body)
        except ValidationFailed as exc:
            errors = exc.errors
        assert {e["loc"][1] for e in errors} <= BEYOND_THE_DOCUMENT, (case.body, errors)

    accepted()


def fuzz(server: Server, op: Any) -> None:
    """Valid and invalid requests to one operation: never a 5xx, and every answer is
    one the document describes (status, media type, schema)."""
    modes = schemathesis.GenerationMode

    @given(
        case=op.as_strategy(generation_mode=modes.POSITIVE)
        | op.as_strategy(generation_mode=modes.NEGATIVE)
    )
    @settings(max_examples=EXAMPLES, phases=[Phase.explicit, Phase.generate], **_SETTINGS)
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=server.base, headers=server.headers, checks=CHECKS, timeout=10
        )

    run()


# Every operation in one test (so the admin's last operations run last): more than the
# default per-test timeout on a loaded 2-core machine.
@pytest.mark.timeout(600)
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


def test_stateful_links_find_no_server_error(quiet_server: Server) -> None:
    """Chains of calls that follow the document's links (a check created, then read,
    changed and deleted by its id; an organisation's project likewise, …): no server
    error and only answers the document describes, on resources that exist."""
    doc = requests.get(quiet_server.base + "/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc).exclude(
        func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in SKIP | LAST | UNIQUE
    )
    server = quiet_server
    followed: dict[str, int] = {}
    base = schema.as_state_machine()

    class Workflow(base):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.base, "headers": server.headers, "timeout": 10}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if response.status_code < 300:
                label = f"{case.method} {case.path}"
                followed[label] = followed.get(label, 0) + 1

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    # Every scenario starts with one (generated) call to each create operation that has
    # links, a body and no path parameter: schemathesis starts only from operations it
    # expects to succeed with random input, and its guess skips a check body (`org_id`,
    # `project_id`, … look like references to resources no operation returns, as
    # answers are not typed).
    def seed(op: Any, bundle: Any) -> Any:
        @initialize(target=bundle, case=op.as_strategy(schemathesis.GenerationMode.POSITIVE))
        def create(self: Any, case: Any) -> StepOutput:
            self.recorder.record_case(case=case)
            response = self.call(case, **self.get_call_kwargs(case))
            self.after_call(response, case)
            self.validate_response(response, case)
            # Kept for the links when it succeeded (the machine sorts answers by status).
            return StepOutput(response, case)

        return create

    seeds = {}
    for name, bundle in sorted(base.bundles.items()):
        method, path = name.split(" -> ")[0].split(" ", 1)
        op = doc["paths"][path][method.lower()]
        if method == "POST" and "{" not in path and "requestBody" in op:
            seeds[f"seed {path}"] = seed(schema[path][method], bundle)
    assert {"seed /api/checks", "seed /api/organizations"} <= set(seeds), seeds
    machine = type("SeededWorkflow", (Workflow,), seeds)
    # Which rules can run depends on what the server answered (a link can only be
    # followed from a resource that was created), so the same choices can lead to other
    # draws in a later scenario; hypothesis then stops the run as an inconsistent
    # strategy (FlakyStrategyDefinition), which says nothing about the server. Such a run
    # is started again (a failure of a check is another exception and is not retried).
    for attempt in range(3):
        try:
            machine.run(
                settings=settings(
                    max_examples=SCENARIOS,
                    stateful_step_count=STEPS,
                    phases=[Phase.generate],
                    **_SETTINGS,
                )
            )
            break
        except FlakyStrategyDefinition:
            if attempt == 2:
                raise
    # The links were followed to resources that exist.
    for item in ("/api/checks/{check_id}", "/api/organizations/{org_id}"):
        assert sum(n for k, n in followed.items() if k.endswith(" " + item)) > 0, followed
    me = requests.get(server.base + "/api/users/me", headers=server.headers, timeout=10)
    assert me.status_code == 200


# Path parameters of the operations below, filled with resources made for the test.
def _resources(server: Server) -> dict[str, int]:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(server.base + path, json=body, headers=server.headers, timeout=10)
        assert resp.status_code in (200, 201), resp.text
        return dict(resp.json())

    check = post("/api/checks", {"name": "c", "url": "http://127.0.0.1:9/", "is_active": False})
    slo = post(f"/api/checks/{check['id']}/slo", {"target_percentage": 99})
    channel = post(
        "/api/notification-channels",
        {"name": "w", "channel_type": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
    )
    window = post(
        "/api/maintenance", {"name": "m", "starts_at": "2030-01-01T00:00:00Z", "duration": 60}
    )
    user = post("/api/users", {"email": "other@example.test", "password": "long enough pw"})
    project = post("/api/organizations/1/projects", {"name": "p"})
    page = post("/api/status-pages", {"name": "Status", "slug": "booleans", "is_public": False})
    watch = post("/api/organizations/1/lifecycle-watches", {"platform": "python"})
    playbook = post(
        "/api/organizations/1/playbooks",
        {
            "name": "p",
            "trigger_type": "incident_opened",
            "steps": [{"type": "add_note", "body": "x"}],
        },
    )
    return {
        "check_id": check["id"],
        "slo_id": slo["slo"]["id"],
        "channel_id": channel["id"],
        "window_id": window["id"],
        "user_id": user["id"],
        "org_id": 1,
        "project_id": project["id"],
        "page_id": page["id"],
        "slug": page["slug"],
        "watch_id": watch["id"],
        "playbook_id": playbook["id"],
    }


def _boolean(schema: dict[str, Any]) -> bool:
    kinds = [schema, *schema.get("anyOf", [])]
    return any(k.get("type") == "boolean" for k in kinds)


def boolean_fields(doc: dict[str, Any], schema: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """(field, body fields that make the server read it) for every property of a body
    schema that the document declares boolean, in the schema itself and in the
    settings its conditions apply (a check type's)."""
    schema = resolve(doc, schema)
    for name, prop in schema.get("properties", {}).items():
        if _boolean(prop):
            yield name, {}
    for top in schema.get("allOf", []):
        clause = top
        while isinstance(clause, dict) and "then" in clause:  # an if/then(/else…) chain
            condition = clause.get("if", {}).get("properties", {})
            given = {
                k: next(v for v in c["enum"] if v is not None)
                for k, c in condition.items()
                if "enum" in c
            }
            for name, context in boolean_fields(doc, clause["then"]):
                yield name, {**given, **context}
            clause = clause.get("else")


def test_booleans_in_bodies_are_json_booleans(quiet_server: Server) -> None:
    """Every body field the document declares boolean refuses 1 and "true" with a 422
    naming the field (the document is the list: no field is named here)."""
    server = quiet_server
    doc = requests.get(server.base + "/api/openapi.json", timeout=10).json()
    ids = _resources(server)
    tried: set[tuple[str, str, str]] = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            fields = list(boolean_fields(doc, content["application/json"]["schema"]))
            if not fields:
                continue
            url = server.base + re.sub(r"\{(\w+)\}", lambda m: str(ids[m[1]]), path)
            for field, context in fields:
                for value in (1, "true"):
                    body = {**context, field: value}
                    resp = requests.request(
                        method, url, json=body, headers=server.headers, timeout=10
                    )
                    assert resp.status_code == 422, (method, path, body, resp.text)
                    locs = [e["loc"] for e in resp.json()["detail"]]
                    assert ["body", field] in locs, (method, path, body, locs)
                tried.add((method.upper(), path, field))
    # The check body's own booleans and those of its types' settings were all tried.
    assert ("POST", "/api/checks", "is_active") in tried
    assert ("PATCH", "/api/checks/{check_id}", "content_match_enabled") in tried
    assert ("PUT", "/api/checks/{check_id}/slo/{slo_id}", "burn_rate_alert_enabled") in tried
    assert ("PUT", "/api/status-pages/{page_id}", "is_public") in tried
    assert len(tried) > 30
