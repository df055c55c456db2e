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

from helpers import Server, Target, api, call, create_check, other_org_user, wait_for
from workflow_helpers import admin_org, loc, module_server, unique, user_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from module_server(request, tmp_path_factory, "postmortems")


async def real_incident(
    http: aiohttp.ClientSession, server: Server, target: Target, org: int, *, escalate: bool
) -> tuple[Any, Any]:
    """An uptime check's incident: the real target stops answering (DOWN: opened; with
    `escalate`, its escalation policy's first step fires), the incident is acknowledged
    over the API, the target answers again (UP: resolved). Answers (check, incident as
    the API shows it once resolved)."""
    fields: dict[str, Any] = {"name": unique("checkout")}
    if escalate:
        me = await user_id(http, server)
        code, policy = await api(
            http,
            server,
            "POST",
            f"/api/organizations/{org}/escalation-policies",
            json={
                "name": unique("policy"),
                "steps": [{"delay_seconds": 0, "targets": [{"type": "user", "id": me}]}],
            },
        )
        assert code == 201, policy
        fields["escalation_policy_id"] = policy["id"]
    check = await create_check(http, server, target.url, **fields)
    cid = check["id"]

    async def status(wanted: str) -> Any:
        code, body = await api(http, server, "GET", f"/api/checks/{cid}")
        assert code == 200, body
        return body if body["status"] == wanted else None

    await wait_for(lambda: status("UP"))
    await target.stop()

    async def opened() -> Any:
        code, page = await api(http, server, "GET", f"/api/checks/{cid}/incidents")
        assert code == 200, page
        return page["incidents"][0] if page["incidents"] else None

    incident = await wait_for(opened)
    timeline = f"/api/organizations/{org}/incidents/check/{incident['id']}/timeline"

    async def escalated() -> Any:
        code, body = await api(http, server, "GET", timeline)
        assert code == 200, body
        return any(e["kind"] == "escalated" for e in body["timeline"]) or None

    if escalate:
        await wait_for(escalated)
    code, acked = await api(
        http, server, "POST", f"/api/checks/{cid}/incidents/{incident['id']}/ack"
    )
    assert code == 200, acked
    await target.start()

    async def resolved() -> Any:
        _, page = await api(http, server, "GET", f"/api/checks/{cid}/incidents")
        inc = page["incidents"][0]
        return inc if inc["status"] == "RESOLVED" else None

    return check, await wait_for(resolved)


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


async def test_a_postmortem_is_prefilled_from_a_real_incident_and_exported(
    shared: Server, http: aiohttp.ClientSession, target: Target
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/postmortems"
    me = await user_id(http, shared)
    check, incident = await real_incident(http, shared, target, org, escalate=True)

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
    assert t["escalations"] == 1
    # The milestones, in order: detection, the policy's first step, acknowledgement,
    # resolution; each at the time the incident's own timeline has.
    kinds = [e["kind"] for e in t["events"]]
    assert kinds == ["opened", "escalated", "acknowledged", "resolved"], kinds
    assert [e["milestone"] for e in t["events"]] == [
        "detected",
        "escalated",
        "acknowledged",
        "resolved",
    ]
    code, own = await api(
        http, shared, "GET", f"/api/organizations/{org}/incidents/check/{incident['id']}/timeline"
    )
    assert code == 200, own
    own_at = {e["kind"]: ts(e["at"]) for e in own["timeline"]}
    for e in t["events"]:
        assert ts(e["at"]) == pytest.approx(own_at[e["kind"]], abs=0.002), e
    offsets = [e["offset_s"] for e in t["events"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert offsets[-1] == pytest.approx(t["time_to_resolve_s"], abs=0.002)
    assert t["events"][2]["actor_id"] == me  # who acknowledged
    (one,) = t["incidents"]
    assert one["id"] == incident["id"] and one["check_id"] == check["id"]
    assert one["status"] == "RESOLVED" and one["escalations"] == 1
    assert one["time_to_acknowledge_s"] == t["time_to_acknowledge_s"]
    assert one["time_to_resolve_s"] == t["time_to_resolve_s"]
    assert t["time_to_acknowledge_s"] < t["time_to_resolve_s"]
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
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| #" in line]
    assert [r.split("|")[3].strip() for r in rows] == [
        "detected",
        "escalated",
        "acknowledged",
        "resolved",
    ], rows
    assert "- [ ] Alert on disk space (owner: " in text and "due 2027-01-15" in text


async def test_postmortem_validation_roles_and_isolation(
    shared: Server, http: aiohttp.ClientSession, target: Target
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/postmortems"
    _, incident = await real_incident(http, shared, target, org, escalate=False)
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


async def test_postmortem_bodies_with_every_field_and_zero_values(
    shared: Server, http: aiohttp.ClientSession, target: Target
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/postmortems"
    me = await user_id(http, shared)
    _, incident = await real_incident(http, shared, target, org, escalate=False)

    # Every field, as a client sends them; published at once; unknown fields ignored.
    every = {
        "title": "  Checkout outage  ",
        "incident_ids": [incident["id"], incident["id"]],
        "summary": "Payments failed.",
        "impact": "All EU customers.",
        "root_cause": "A full disk.",
        "what_went_well": "Paged fast.",
        "what_went_wrong": "No disk alert.",
        "action_items": [
            {
                "title": "Disk alert",
                "owner_id": me,
                "due_date": "2027-02-01T00:00:00Z",
                "status": "completed",
                "priority": "high",
            }
        ],
        "status": "published",
        "severity": "sev1",
        "id": 12345,
        "author_id": 999,
    }
    code, full = await api(http, shared, "POST", base, json=every)
    assert code == 201, full
    assert full["title"] == "Checkout outage" and full["incident_ids"] == [incident["id"]]
    assert full["impact"] == "All EU customers." and full["author_id"] == me
    assert full["status"] == "published" and full["published_at"] is not None
    assert full["id"] != 12345
    assert full["action_items"] == [
        {"title": "Disk alert", "owner_id": me, "due_date": "2027-02-01", "status": "done"}
    ]
    for name in ("summary", "root_cause", "what_went_well", "what_went_wrong"):
        assert full[name] == every[name]
    assert set(full) >= {"id", "created_at", "updated_at", "timeline", "organization_id"}

    # Zero values: empty strings and lists; the title and the impact are filled in.
    code, zero = await api(
        http,
        shared,
        "POST",
        base,
        json={
            "title": "",
            "incident_ids": [incident["id"]],
            "summary": "",
            "impact": "",
            "root_cause": "",
            "what_went_well": "",
            "what_went_wrong": "",
            "action_items": [],
            "status": "draft",
        },
    )
    assert code == 201, zero
    assert zero["title"] == f"Postmortem: {incident['title']}"
    assert zero["impact"].startswith("Affected:") and zero["summary"] == ""
    assert zero["action_items"] == [] and zero["published_at"] is None

    # A change: only what it sends; an empty title keeps the old one; back to draft
    # clears published_at; a bad field is 422 naming it and changes nothing.
    pid = full["id"]
    code, back = await api(
        http, shared, "PUT", f"{base}/{pid}", json={"title": "", "status": "draft", "x": 1}
    )
    assert code == 200, back
    assert back["title"] == "Checkout outage" and back["published_at"] is None
    assert back["root_cause"] == "A full disk." and back["action_items"] == full["action_items"]
    for body, where in (
        ({"incident_ids": []}, ["incident_ids"]),
        ({"incident_ids": list(range(1, 52))}, ["incident_ids"]),
        ({"summary": "x" * 50_001}, ["summary"]),
        ({"action_items": [{"title": "t", "status": "later"}]}, ["action_items", 0, "status"]),
        ({"status": 3}, ["status"]),
        ({"action_items": [{"title": "t", "owner_id": "7"}]}, ["action_items", 0, "owner_id"]),
    ):
        code, err = await api(http, shared, "PUT", f"{base}/{pid}", json=body)
        assert code == 422, (body, err)
        assert loc(err)[: len(where)] == where, (body, err)
    code, same = await api(http, shared, "GET", f"{base}/{pid}")
    assert code == 200 and same == back

    async with http.get(shared.base + f"{base}?limit=1", headers=shared.headers) as resp:
        assert resp.status == 200
        assert int(resp.headers["X-Total-Count"]) >= 2 and len(await resp.json()) == 1
