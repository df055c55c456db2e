"""The types of answers whose keys come from data (every check type's settings, the
figure windows): the keys the builders write are the keys the types declare (the
OpenAPI document's response schemas), and the answers validate against those schemas,
for a check of every type. The fixed keys of every answer mypy checks where the answer
is built; what stored rows hold is checked here against the declared value types."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from pydantic import TypeAdapter

from tocsin.api.check_figures import (
    WINDOWS,
    SlaJson,
    SloJson,
    StatsJson,
    StatsWindowJson,
    slo_json,
    stats_json,
)
from tocsin.api.checks import (
    CheckFields,
    CheckJson,
    ResultJson,
    RunJson,
    check_json,
    result_json,
    run_json,
    store_fields,
)
from tocsin.api.maintenance import WindowBody, WindowJson, window_fields, window_json
from tocsin.api.schemas import CHECK_SETTINGS, MASK, SECRET_FIELDS, SloBody, parse, parse_check
from tocsin.encryption import SecretBox
from tocsin.figures import figures
from tocsin.incidents import (
    IncidentJson,
    NoteJson,
    TimelineEventJson,
    incident_json,
    note_json,
    timeline_json,
)
from tocsin.models import Result, Status, Timings
from tocsin.store.sql import SqlStore
from tocsin.store.sqlite import SqliteStore

NOW = 1_790_000_000.0

# A body of every check type, with its secrets set where it has any.
BODIES: dict[str, dict[str, Any]] = {
    "uptime": {
        "url": "https://example.com/health",
        "auth_method": "basic",
        "auth_username": "u",
        "auth_password": "p",
        "http_headers": {"Authorization": "Bearer x"},
    },
    "heartbeat": {"schedule": "*/5 * * * *", "timezone": "Europe/Paris"},
    "icmp": {"host": "example.com"},
    "tcp": {"host": "example.com", "port": 5432},
    "udp": {"host": "example.com", "port": 53},
    "dns": {"host": "example.com", "dns_expected_ips": ["192.0.2.1"]},
    "tls": {"host": "example.com", "tls_server_name": "www.example.com"},
    "ftp": {"host": "example.com", "auth_password": "p", "ftp_password": "p"},
    "mail": {"host": "example.com"},
    "database": {"db_type": "postgresql", "db_host": "db.internal", "db_password": "p"},
    "api_scenario": {"steps": [{"url": "https://example.com/a", "extra": 1}]},
    "oidc": {"url": "https://issuer.example.com"},
}


def keys(tp: Any) -> set[str]:
    return set(tp.__required_keys__) | set(tp.__optional_keys__)


def conforms(tp: Any, answer: Any) -> None:
    """The answer, as JSON, is valid for the type's schema in the document."""
    schema = TypeAdapter(tp).json_schema(mode="serialization")
    jsonschema_rs.validator_for(schema).validate(json.loads(json.dumps(answer)))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = SqliteStore(tmp_path / "t.db", SecretBox.generate())
    await s.open()
    yield s
    await s.close()


def test_every_type_has_a_body() -> None:
    assert set(BODIES) == set(CHECK_SETTINGS)


async def test_a_check_of_every_type_has_the_keys_of_its_type(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    fixed = keys(CheckFields)
    assert fixed < keys(CheckJson)
    for kind, settings in BODIES.items():
        common, parsed = parse_check({"name": kind, "type": kind, **settings})
        row = await store.create_check(org, store_fields(common, parsed))
        for answer in (check_json(row), check_json(await store.get_check([org], row["id"]))):
            assert set(answer) == keys(CheckJson), kind
            conforms(CheckJson, answer)
        # Secrets are masked, whatever the type.
        assert all(answer[s] in ("", MASK) for s in SECRET_FIELDS), kind
        # Each type's own settings are among the keys.
        assert set(CHECK_SETTINGS[kind].model_fields) <= set(answer), kind

        # With a last result, and the results' own answers.
        result = Result(
            row["id"],
            Status.DOWN,
            NOW,
            12.3456,
            due_at=NOW - 1,
            error_kind="timeout",
            message="no answer",
            timings=Timings(dns_ms=1.5, connect_ms=None),
            details_json='{"address": "192.0.2.1"}',
        )
        await store.write_batch([result], [])
        stored = await store.get_check([org], row["id"])
        assert stored is not None and stored["last_result"] is not None
        answer = check_json(stored)
        assert set(answer) == keys(CheckJson), kind
        conforms(CheckJson, answer)
        (logged,) = await store.list_results([org], row["id"], limit=10, before=None)
        conforms(ResultJson, result_json(logged))
        assert set(result_json(logged)) == keys(ResultJson)
        conforms(RunJson, run_json(result))
        assert set(run_json(result)) == keys(RunJson)


def test_stats_have_a_key_per_window() -> None:
    windows: dict[str, StatsWindowJson] = {
        name: {
            "uptime_pct": f["uptime_pct"],
            "runs": int(f["runs"] or 0),
            "p50_ms": f["p50_ms"],
            "p95_ms": f["p95_ms"],
            "p99_ms": f["p99_ms"],
        }
        for name in WINDOWS
        for f in [figures([])]
    }
    answer = stats_json(7, windows)
    expected = {"check_id", "windows", *(f"uptime_{name}" for name in WINDOWS)}
    assert set(answer) == keys(StatsJson) == expected
    conforms(StatsJson, answer)
    stats_windows = TypeAdapter(StatsJson).json_schema()["$defs"]["StatsWindows"]
    assert set(stats_windows["properties"]) == set(WINDOWS)
    sla_windows = TypeAdapter(SlaJson).json_schema()["$defs"]["SlaWindows"]
    assert set(sla_windows["properties"]) == set(WINDOWS)


def test_an_slo_shows_every_setting() -> None:
    assert set(SloBody.model_fields) < keys(SloJson)


async def test_stored_rows_have_the_declared_types(store: SqlStore) -> None:
    """Incidents, their notes and timeline, maintenance windows and SLOs as the store
    gives them back: each answer validates against its type's schema."""
    org = (await store.create_organization("o"))["id"]
    check = await store.create_check(
        org, {"name": "c", "type": "uptime", "url": "http://e.com/", "interval": 60, "timeout": 5}
    )
    incident = await store.insert(
        "incidents",
        org,
        {
            "check_id": check["id"],
            "kind": "check",
            "status": "ACKNOWLEDGED",
            "severity": "critical",
            "title": "c is DOWN",
            "cause": None,
            "sources": {"central": "DOWN", "agent:3": "UP"},
            "started_at": NOW,
            "acknowledged_at": NOW + 5,
            "acknowledged_by": None,
        },
    )
    for row in (incident, await store.get("incidents", [org], incident["id"])):
        assert set(incident_json(row)) == keys(IncidentJson)
        conforms(IncidentJson, incident_json(row))
    note = await store.insert(
        "incident_notes", org, {"incident_id": incident["id"], "author_id": None, "body": "b"}
    )
    conforms(NoteJson, note_json(note))
    event = await store.insert(
        "incident_events",
        org,
        {
            "incident_id": incident["id"],
            "kind": "opened",
            "actor_id": None,
            "detail": {"status": "DOWN", "reason": None},
            "at": NOW,
        },
    )
    conforms(TimelineEventJson, timeline_json(event))

    body = parse(WindowBody, {"name": "w", "starts_at": NOW, "duration": 60, "rrule": "FREQ=DAILY"})
    window = await store.insert("maintenance_windows", org, window_fields(body, None))
    for row in (window, await store.get("maintenance_windows", [org], window["id"])):
        assert row is not None
        assert set(window_json(row)) == keys(WindowJson)
        conforms(WindowJson, window_json(row))

    for settings in (
        {"target_percentage": 99},
        {"target_percentage": 99.5, "sli_type": "latency", "latency_threshold_ms": 250},
    ):
        model = parse(SloBody, settings)
        slo = await store.insert("slos", org, {"check_id": check["id"], **model.model_dump()})
        answer = await slo_json(store, [org], check, slo)
        assert set(answer) == keys(SloJson)
        conforms(SloJson, answer)
        assert await store.delete("slos", [org], slo["id"])
