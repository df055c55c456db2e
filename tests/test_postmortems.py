"""Postmortems over a real server on each backend: one is started from a real incident
(a heartbeat check failed by a ping, acknowledged, then brought back by a ping), its
timeline filled in from the incident's with times and durations that agree with the
incident's own; sections, action items, statuses, the Markdown export; validation,
roles and isolation between organisations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, call, other_org_user, wait_for
from workflow_helpers import admin_org, loc, module_server, unique, user_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from module_server(request, tmp_path_factory, "postmortems")


async def real_incident(http: aiohttp.ClientSession, server: Server) -> tuple[Any, Any]:
    """A heartbeat check's incident: opened by a failure ping, acknowledged, resolved by
    a success ping. Answers (check, incident as the API shows it when resolved)."""
    code, check = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": unique("nightly-backup"), "type": "heartbeat", "interval": 3600},
    )
    assert code == 200, check
    async with http.post(server.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200

    async def opened() -> Any:
        code, page = await api(http, server, "GET", f"/api/checks/{check['id']}/incidents")
        assert code == 200, page
        return page["incidents"][0] if page["incidents"] else None

    incident = await wait_for(opened)
    code, acked = await api(
        http, server, "POST", f"/api/checks/{check['id']}/incidents/{incident['id']}/ack"
    )
    assert code == 200, acked
    async with http.post(server.base + f"/api/ping/{check['uuid']}") as resp:
        assert resp.status == 200

    async def resolved() -> Any:
        _, page = await api(http, server, "GET", f"/api/checks/{check['id']}/incidents")
        inc = page["incidents"][0]
        return inc if inc["status"] == "RESOLVED" else None

    return check, await wait_for(resolved)


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


async def test_a_postmortem_is_prefilled_from_a_real_incident_and_exported(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/postmortems"
    me = await user_id(http, shared)
    check, incident = await real_incident(http, shared)

    code, review = await api(
        http,
        shared,
        "POST",
        base,
        json={
            "incident_ids": [incident["id"]],
            "summary": "The nightly backup failed once.",
            "action_items": [
                {"title": "Alert on disk space", "owner_id": me, "due_date": "2027-01-15"},
                {"title": "Write the runbook", "owner_id": 0, "due_date": "", "status": "todo"},
            ],
            "unknown": "ignored",
        },
    )
    assert code == 201, review
    assert review["status"] == "draft" and review["author_id"] == me
    assert review["title"] == f"Postmortem: {incident['title']}"
    assert check["name"] in review["impact"] and "Duration" in review["impact"]
    t = review["timeline"]
    # The overall figures are the incident's own.
    assert t["detected_at"] == incident["started_at"]
    assert t["acknowledged_at"] == incident["acknowledged_at"]
    assert t["resolved_at"] == incident["resolved_at"]
    assert t["time_to_acknowledge_s"] == pytest.approx(
        ts(incident["acknowledged_at"]) - ts(incident["started_at"]), abs=0.002
    )
    assert t["time_to_resolve_s"] == pytest.approx(incident["duration_s"], abs=0.002)
    # The milestones, in order.
    kinds = [e["kind"] for e in t["events"]]
    assert kinds[0] == "opened" and kinds[-1] == "resolved" and "acknowledged" in kinds, kinds
    assert kinds.index("opened") < kinds.index("acknowledged") < kinds.index("resolved")
    offsets = [e["offset_s"] for e in t["events"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    (one,) = t["incidents"]
    assert one["id"] == incident["id"] and one["check_id"] == check["id"]
    assert review["action_items"] == [
        {
            "title": "Alert on disk space",
            "owner_id": me,
            "due_date": "2027-01-15",
            "status": "open",
        },
        {"title": "Write the runbook", "owner_id": None, "due_date": None, "status": "open"},
    ]

    # Sections are written; a change changes only what it sends; published once.
    pid = review["id"]
    code, changed = await api(
        http,
        shared,
        "PUT",
        f"{base}/{pid}",
        json={"root_cause": "The disk was full.", "status": "review"},
    )
    assert code == 200, changed
    assert changed["status"] == "in_review" and changed["summary"] == review["summary"]
    assert changed["published_at"] is None
    code, published = await api(
        http, shared, "PATCH", f"{base}/{pid}", json={"status": "published"}
    )
    assert code == 200 and published["published_at"] is not None, published
    code, listed = await api(http, shared, "GET", f"{base}?status=published")
    assert code == 200 and pid in [r["id"] for r in listed]
    code, by_incident = await api(http, shared, "GET", f"{base}?incident_id={incident['id']}")
    assert code == 200 and [r["id"] for r in by_incident] == [pid]
    code, again = await api(http, shared, "POST", f"{base}/{pid}/refresh-timeline")
    assert code == 200 and again["timeline"]["resolved_at"] == incident["resolved_at"]

    # The Markdown export.
    async with http.get(shared.base + f"{base}/{pid}/export.md", headers=shared.headers) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/markdown"
        text = await resp.text()
    assert text.startswith(f"# Postmortem: {incident['title']}")
    for heading in (
        "## Summary",
        "## Impact",
        "## Timeline",
        "## Root cause",
        "## What went well",
        "## Action items",
    ):
        assert heading in text, heading
    assert "The disk was full." in text and "| Time (UTC) |" in text
    assert "- [ ] Alert on disk space (owner: " in text and "due 2027-01-15" in text


async def test_postmortem_validation_roles_and_isolation(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/postmortems"
    _, incident = await real_incident(http, shared)
    for body, where in (
        ({}, ["incident_ids"]),
        ({"incident_ids": []}, ["incident_ids"]),
        ({"incident_ids": [999999]}, ["incident_ids", 0]),
        ({"incident_ids": [incident["id"]], "status": "final"}, ["status"]),
        (
            {"incident_ids": [incident["id"]], "action_items": [{"title": ""}]},
            ["action_items", 0, "title"],
        ),
        (
            {
                "incident_ids": [incident["id"]],
                "action_items": [{"title": "x", "owner_id": 999999}],
            },
            ["action_items", 0, "owner_id"],
        ),
        (
            {
                "incident_ids": [incident["id"]],
                "action_items": [{"title": "x", "due_date": "soon"}],
            },
            ["action_items", 0, "due_date"],
        ),
    ):
        code, err = await api(http, shared, "POST", base, json=body)
        assert code == 422 and loc(err) == where, (body, err)

    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=org)
    member, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    code, _ = await call(
        http, shared, "POST", base, viewer, json={"incident_ids": [incident["id"]]}
    )
    assert code == 403
    code, mine = await call(
        http, shared, "POST", base, member, json={"incident_ids": [incident["id"]]}
    )
    assert code == 201, mine
    code, admins = await api(http, shared, "POST", base, json={"incident_ids": [incident["id"]]})
    assert code == 201
    # A member deletes their own review, not someone else's.
    code, _ = await call(http, shared, "DELETE", f"{base}/{admins['id']}", member)
    assert code == 403
    code, _ = await call(http, shared, "DELETE", f"{base}/{mine['id']}", member)
    assert code == 204

    outsider, other_org = await other_org_user(shared)
    for method in ("GET", "PUT", "DELETE"):
        code, _ = await call(
            http,
            shared,
            method,
            f"/api/organizations/{other_org}/postmortems/{admins['id']}",
            outsider,
            **({"json": {"summary": "x"}} if method == "PUT" else {}),
        )
        assert code == 404, method
    code, _ = await call(http, shared, "GET", f"{base}/{admins['id']}", outsider)
    assert code == 404
    # Another organisation's incident cannot be reviewed.
    code, err = await call(
        http,
        shared,
        "POST",
        f"/api/organizations/{other_org}/postmortems",
        outsider,
        json={"incident_ids": [incident["id"]]},
    )
    assert code == 422 and loc(err) == ["incident_ids", 0], err
