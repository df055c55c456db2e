"""Inbound events over a real server: integration keys (shown once, listed, changed,
revoked), tocsin's own events, PagerDuty's Events API v2, Alertmanager's and Grafana's
webhooks end to end, deduplication and each grouping, validation, the per-key rate
limit, isolation between organisations, escalation columns, notifications planned with
the change, the inbound incidents' API, and durability: every event answered is stored,
and a restart keeps the open incidents a dedup key reaches."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, is_event, other_org_user, server_store, wait_for
from tocsin.events import EventHub
from tocsin.paging.inbound import InboundProcessor
from tocsin.paging.inbound_formats import InboundEvent
from tocsin.paging.inbound_keys import IntegrationKey
from tocsin.store.sqlite import SqliteStore

INGEST = "/api/events/ingest"
PAGERDUTY = "/api/events/v2/enqueue"
ALERTMANAGER = "/api/events/alertmanager"
GRAFANA = "/api/events/grafana"
NOT_FOUND = {"detail": "Integration key not found"}
QUIET = {"TOCSIN_RATE_LIMIT_PER_TOKEN": "0", "TOCSIN_RATE_LIMIT_PER_ADDRESS": "0"}

# An Alertmanager 0.25 notification (notify/webhook: template.Data, version, groupKey,
# truncatedAlerts), two alerts of one group firing.
AM_BODY: dict[str, Any] = {
    "receiver": "tocsin",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "InstanceDown",
                "instance": "web-1:9100",
                "job": "node",
                "severity": "critical",
            },
            "annotations": {"summary": "web-1 is down", "description": "no scrape for 5m"},
            "startsAt": "2024-05-01T10:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
            "fingerprint": "5b2f0c7e1d3a4b69",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "InstanceDown",
                "instance": "web-2:9100",
                "job": "node",
                "severity": "warning",
            },
            "annotations": {"summary": "web-2 is down"},
            "startsAt": "2024-05-01T10:00:30Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
            "fingerprint": "8e1a2b3c4d5e6f70",
        },
    ],
    "groupLabels": {"alertname": "InstanceDown"},
    "commonLabels": {"alertname": "InstanceDown", "job": "node"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="InstanceDown"}',
    "truncatedAlerts": 0,
}

# A Grafana webhook contact point's notification (version 1).
GRAFANA_BODY: dict[str, Any] = {
    "receiver": "tocsin",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {"summary": "Memory above 90% in us-1"},
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://grafana.example/alerting/1afz29v7z/edit?orgId=1",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://grafana.example/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "https://grafana.example/d/abcd?orgId=1",
            "panelURL": "https://grafana.example/d/abcd?orgId=1&viewPanel=2",
            "values": {"B": 91.5, "C": 1},
            "valueString": "[ var='B' labels={} value=91.5 ]",
            "orgId": 1,
        }
    ],
    "groupLabels": {"alertname": ""},
    "commonLabels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
    "commonAnnotations": {"summary": "Memory above 90% in us-1"},
    "externalURL": "https://grafana.example/",
    "version": "1",
    "groupKey": '{}:{alertname=""}',
    "truncatedAlerts": 0,
    "title": "[FIRING:1]  (High memory usage blue us-1)",
    "state": "alerting",
    "message": "**Firing**\n\nValue: B=91.5, C=1\n",
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started by a test take requests at line rate (the per-key limit stays)."""
    for name, value in QUIET.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in QUIET.items():
            mp.setenv(name, value)
        s = Server(tmp_path_factory.mktemp("inbound") / "data")
        s.start()
    yield s
    s.kill()


# -- helpers --------------------------------------------------------------------------------


async def admin_org(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


def keys_path(org: int) -> str:
    return f"/api/organizations/{org}/integration-keys"


def incidents_path(org: int) -> str:
    return f"/api/organizations/{org}/inbound-incidents"


async def new_key(
    http: aiohttp.ClientSession, server: Server, org: int, token: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {"name": "prometheus", **fields}
    code, key = await api(http, server, "POST", keys_path(org), token=token, json=body)
    assert code == 201, key
    return dict(key)


async def post(
    http: aiohttp.ClientSession, server: Server, path: str, method: str = "POST", **kw: Any
) -> tuple[int, Any, Any]:
    """An unauthenticated call of an inbound route: (status, JSON body, headers)."""
    async with http.request(method, server.base + path, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, resp.headers


async def event(
    http: aiohttp.ClientSession,
    server: Server,
    key: str,
    action: str,
    dedup_key: str | None = None,
    **payload: Any,
) -> dict[str, Any]:
    """One native event, which must be accepted."""
    body: dict[str, Any] = {"routing_key": key, "event_action": action}
    if dedup_key is not None:
        body["dedup_key"] = dedup_key
    if action == "trigger":
        body["payload"] = {"summary": "Disk full on srv01", "source": "srv01", **payload}
    code, answer, _ = await post(http, server, INGEST, json=body)
    assert code == 200, answer
    return dict(answer)


async def incident(
    http: aiohttp.ClientSession, server: Server, org: int, iid: int, token: str | None = None
) -> dict[str, Any]:
    code, got = await api(http, server, "GET", f"{incidents_path(org)}/{iid}", token=token)
    assert code == 200, got
    return dict(got)


async def listed(
    http: aiohttp.ClientSession, server: Server, org: int, query: str = ""
) -> dict[str, Any]:
    code, page = await api(http, server, "GET", incidents_path(org) + query)
    assert code == 200, page
    return dict(page)


async def stored_events(server: Server, org: int) -> int:
    store = server_store(server)
    await store.open(migrate=False)
    try:
        return await store.count("inbound_events", [org])
    finally:
        await store.close()


# -- integration keys ----------------------------------------------------------------------------


async def test_integration_keys_are_shown_once_listed_changed_and_revoked(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    key = await new_key(http, shared, org, name="alertmanager")
    secret = key["key"]
    assert secret.startswith("ik_") and len(secret) == 35
    assert key["prefix"] == secret[:7] and key["grouping_type"] == "dedup_key"
    assert key["revoked_at"] is None and key["last_event_at"] is None

    code, keys = await api(http, shared, "GET", keys_path(org))
    assert code == 200
    mine = next(k for k in keys if k["id"] == key["id"])
    assert "key" not in mine and mine["prefix"] == key["prefix"]
    assert secret not in str(keys)
    code, one = await api(http, shared, "GET", f"{keys_path(org)}/{key['id']}")
    assert code == 200 and one == mine

    assert (await event(http, shared, secret, "trigger", "k1"))["incident_id"] is not None
    code, one = await api(http, shared, "GET", f"{keys_path(org)}/{key['id']}")
    assert one["last_event_at"] is not None

    code, changed = await api(
        http,
        shared,
        "PATCH",
        f"{keys_path(org)}/{key['id']}",
        json={"name": "am", "grouping_type": "time_window", "grouping_window_seconds": 60},
    )
    assert code == 200, changed
    assert (changed["name"], changed["grouping_type"], changed["grouping_window_seconds"]) == (
        "am",
        "time_window",
        60,
    )

    code, _ = await api(http, shared, "DELETE", f"{keys_path(org)}/{key['id']}")
    assert code == 204
    body = {
        "routing_key": secret,
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "x"},
    }
    assert (await post(http, shared, INGEST, json=body))[:2] == (404, NOT_FOUND)
    fake = "ik_" + "A" * 32
    assert (await post(http, shared, INGEST, json={**body, "routing_key": fake}))[:2] == (
        404,
        NOT_FOUND,
    )
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await post(http, shared, ALERTMANAGER, json=AM_BODY, headers=headers))[:2] == (
        404,
        NOT_FOUND,
    )
    code, keys = await api(http, shared, "GET", keys_path(org))
    assert key["id"] not in [k["id"] for k in keys]
    code, keys = await api(http, shared, "GET", keys_path(org) + "?include_revoked=true")
    assert next(k for k in keys if k["id"] == key["id"])["revoked_at"] is not None
    # Revoking again changes nothing; a revoked key cannot be changed.
    assert (await api(http, shared, "DELETE", f"{keys_path(org)}/{key['id']}"))[0] == 204
    code, _ = await api(http, shared, "PATCH", f"{keys_path(org)}/{key['id']}", json={"name": "x"})
    assert code == 409


def loc_of(body: Any) -> list[list[Any]]:
    return [e["loc"] for e in body["detail"]]


async def test_key_settings_are_checked_naming_the_field(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    for fields, loc in (
        ({"grouping_type": "time_window"}, ["body", "grouping_window_seconds"]),
        ({"grouping_type": "payload_field"}, ["body", "grouping_field"]),
        (
            {"grouping_type": "payload_field", "grouping_field": "custom_details..x"},
            ["body", "grouping_field"],
        ),
        ({"grouping_type": "clustered"}, ["body", "grouping_type"]),
        ({"grouping_window_seconds": 86_401}, ["body", "grouping_window_seconds"]),
        ({"grouping_window_seconds": "60"}, ["body", "grouping_window_seconds"]),
        ({"name": ""}, ["body", "name"]),
        ({"escalation_policy_id": 0}, ["body", "escalation_policy_id"]),
    ):
        code, body = await api(http, shared, "POST", keys_path(org), json={"name": "k", **fields})
        assert code == 422, (fields, body)
        assert loc_of(body) == [loc], (fields, body)

    # A policy of another organisation is not one of this organisation's.
    _, other = await other_org_user(shared)
    store = server_store(shared)
    await store.open(migrate=False)
    try:
        policy = await store.insert("escalation_policies", other, {"name": "theirs"})
    finally:
        await store.close()
    code, body = await api(
        http,
        shared,
        "POST",
        keys_path(org),
        json={"name": "k", "escalation_policy_id": policy["id"]},
    )
    assert code == 422 and loc_of(body) == [["body", "escalation_policy_id"]], body

    key = await new_key(http, shared, org)
    item = f"{keys_path(org)}/{key['id']}"
    code, body = await api(http, shared, "PATCH", item, json={"grouping_type": "time_window"})
    assert code == 422 and loc_of(body) == [["body", "grouping_window_seconds"]]
    code, body = await api(http, shared, "PATCH", item, json={"name": None})
    assert code == 422 and loc_of(body) == [["body", "name"]]
    code, body = await api(
        http,
        shared,
        "PATCH",
        item,
        json={"grouping_type": "payload_field", "grouping_field": "custom_details.cluster"},
    )
    assert code == 200 and body["grouping_field"] == "custom_details.cluster", body


async def test_only_admins_manage_keys_members_see_and_acknowledge_inbound_incidents(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    member, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=org)
    code, _ = await api(http, shared, "GET", keys_path(org), token=member)
    assert code == 403
    code, _ = await api(http, shared, "POST", keys_path(org), token=member, json={"name": "k"})
    assert code == 403
    key = await new_key(http, shared, org)
    opened = await event(http, shared, key["key"], "trigger", "roles")
    iid = opened["incident_id"]
    assert (await api(http, shared, "GET", incidents_path(org), token=viewer))[0] == 403
    assert (await api(http, shared, "POST", f"{incidents_path(org)}/{iid}/ack", token=viewer))[
        0
    ] == 403
    code, acked = await api(http, shared, "POST", f"{incidents_path(org)}/{iid}/ack", token=member)
    assert code == 200 and acked["status"] == "ACKNOWLEDGED", acked
    assert acked["acknowledged_by"] is not None
    # The index heard of it: an acknowledge event now reaches nothing to change, and a
    # resolution still closes the incident.
    assert (await event(http, shared, key["key"], "acknowledge", "roles"))["incident_id"] == iid
    assert (await event(http, shared, key["key"], "resolve", "roles"))["incident_id"] == iid
    code, again = await api(http, shared, "POST", f"{incidents_path(org)}/{iid}/ack", token=member)
    assert code == 409, again
    assert (await incident(http, shared, org, iid))["status"] == "RESOLVED"
    code, timeline = await api(
        http, shared, "GET", f"/api/organizations/{org}/incidents/inbound/{iid}/timeline"
    )
    assert code == 200
    acks = [e for e in timeline["timeline"] if e["kind"] == "acknowledged"]
    assert [e["actor_id"] for e in acks] == [acked["acknowledged_by"]], acks


async def test_another_organisations_keys_and_incidents_are_not_found(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    stranger, other = await other_org_user(shared)
    theirs = await new_key(http, shared, other, token=stranger)
    mine = await new_key(http, shared, org)
    their_incident = (await event(http, shared, theirs["key"], "trigger", "shared-dedup"))[
        "incident_id"
    ]
    my_incident = (await event(http, shared, mine["key"], "trigger", "shared-dedup"))["incident_id"]
    assert their_incident != my_incident

    # Their key's events opened their incident, never one of mine (same dedup key).
    page = await listed(http, shared, org, "?limit=200")
    assert their_incident not in [i["id"] for i in page["incidents"]]
    mine_now = await incident(http, shared, org, my_incident)
    assert mine_now["event_count"] == 1 and mine_now["organization_id"] == org

    # Their ids under my organisation, and my organisation's routes to them: 404.
    for method, path in (
        ("GET", f"{keys_path(org)}/{theirs['id']}"),
        ("PATCH", f"{keys_path(org)}/{theirs['id']}"),
        ("DELETE", f"{keys_path(org)}/{theirs['id']}"),
        ("GET", f"{incidents_path(org)}/{their_incident}"),
        ("POST", f"{incidents_path(org)}/{their_incident}/ack"),
        ("GET", keys_path(other)),
        ("GET", incidents_path(other)),
        ("GET", f"{incidents_path(other)}/{their_incident}"),
    ):
        kw = {"json": {"name": "x"}} if method == "PATCH" else {}
        code, body = await api(http, shared, method, path, **kw)
        assert code == 404, (method, path, body)
    for method, path in (
        ("GET", f"{keys_path(other)}/{mine['id']}"),
        ("GET", f"{incidents_path(other)}/{my_incident}"),
        ("POST", f"{incidents_path(other)}/{my_incident}/ack"),
    ):
        code, body = await api(http, shared, method, path, token=stranger)
        assert code == 404, (method, path, body)
    # Still open: nobody acknowledged either.
    assert (await incident(http, shared, org, my_incident))["status"] == "OPEN"
    assert (await incident(http, shared, other, their_incident, token=stranger))["status"] == "OPEN"


# -- events: deduplication, formats --------------------------------------------------------------


@pytest.mark.both_backends
async def test_a_dedup_key_updates_its_incident_until_resolved(
    server: Server, http: aiohttp.ClientSession, sse: Any
) -> None:
    org = await admin_org(http, server)
    key = (await new_key(http, server, org))["key"]
    async with sse(server) as stream:
        first = await event(http, server, key, "trigger", "disk-full-srv01", severity="warning")
        assert first["status"] == "success" and first["dedup_key"] == "disk-full-srv01"
        iid = first["incident_id"]
        new = await stream.wait(is_event("incident.new", id=iid))
        assert new["data"]["kind"] == "inbound" and new["data"]["check_id"] is None
        second = await event(http, server, key, "trigger", "disk-full-srv01", severity="warning")
        third = await event(
            http, server, key, "trigger", "disk-full-srv01", severity="critical", summary="Disk 99%"
        )
        assert second["incident_id"] == third["incident_id"] == iid
        got = await incident(http, server, org, iid)
        assert (got["status"], got["event_count"], got["severity"], got["title"]) == (
            "OPEN",
            3,
            "critical",
            "Disk 99%",
        )
        assert got["dedup_key"] == "disk-full-srv01" and got["details"]["source"] == "srv01"
        assert [e["action"] for e in got["events"]] == ["trigger"] * 3

        acked = await event(http, server, key, "acknowledge", "disk-full-srv01")
        assert acked["incident_id"] == iid
        await stream.wait(is_event("incident.ack", id=iid))
        # A trigger on an acknowledged incident counts, and it stays acknowledged.
        await event(http, server, key, "trigger", "disk-full-srv01", severity="info")
        got = await incident(http, server, org, iid)
        assert (got["status"], got["event_count"], got["severity"]) == (
            "ACKNOWLEDGED",
            4,
            "critical",
        )

        assert (await event(http, server, key, "resolve", "disk-full-srv01"))["incident_id"] == iid
        await stream.wait(is_event("incident.resolve", id=iid))
    got = await incident(http, server, org, iid)
    assert got["status"] == "RESOLVED" and got["resolved_at"] is not None

    # Closed: acknowledging or resolving it again reaches nothing (the event is kept),
    # and a new trigger opens a new incident.
    assert (await event(http, server, key, "resolve", "disk-full-srv01"))["incident_id"] is None
    assert (await event(http, server, key, "acknowledge", "never-seen"))["incident_id"] is None
    again = await event(http, server, key, "trigger", "disk-full-srv01")
    assert again["incident_id"] not in (None, iid)
    # A trigger without a dedup key gets one back.
    made_up = await event(http, server, key, "trigger")
    assert made_up["dedup_key"] and made_up["incident_id"] not in (iid, again["incident_id"])

    code, timeline = await api(
        http, server, "GET", f"/api/organizations/{org}/incidents/inbound/{iid}/timeline"
    )
    assert code == 200
    kinds = [e["kind"] for e in timeline["timeline"]]
    assert kinds[0] == "opened" and kinds[-1] == "resolved" and "acknowledged" in kinds
    assert sum(e["detail"].get("events", 0) for e in timeline["timeline"]) == 3  # retriggers
    assert await stored_events(server, org) == 10
    code, page = await api(http, server, "GET", "/api/incidents?kind=inbound")
    assert code == 200 and page["total"] == 3
    assert {i["kind"] for i in page["incidents"]} == {"inbound"}
    code, page = await api(http, server, "GET", "/api/incidents?kind=check")
    assert code == 200 and page["total"] == 0


async def test_pagerduty_events_v2_are_answered_like_pagerduty(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    pd_key = await new_key(http, shared, org)
    key = pd_key["key"]
    body = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": "pd-1",
        "payload": {
            "summary": "Example alert on host1.example.com",
            "timestamp": "2015-07-17T08:42:58.315+0000",
            "severity": "info",
            "source": "monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api",
            "component": "postgres",
            "group": "prod-datapipe",
            "class": "deploy",
            "custom_details": {"ping time": "1500ms", "load avg": 0.75},
        },
        "images": [
            {"src": "https://www.pagerduty.com/wp-content/uploads/2016/05/pagerduty-logo-green.png"}
        ],
        "links": [{"href": "https://example.com/", "text": "Link text"}],
        "client": "Sample Monitoring Service",
        "client_url": "https://monitoring.example.com",
    }
    code, answer, _ = await post(http, shared, PAGERDUTY, json=body)
    assert (code, answer) == (
        202,
        {"status": "success", "message": "Event processed", "dedup_key": "pd-1"},
    )
    page = await listed(http, shared, org, f"?integration_key_id={pd_key['id']}")
    (inc,) = page["incidents"]
    assert (inc["title"], inc["severity"]) == ("Example alert on host1.example.com", "info")
    assert inc["details"]["class"] == "deploy" and inc["details"]["links"][0]["text"] == "Link text"
    # PagerDuty needs a severity to trigger; so does this route.
    del body["payload"]["severity"]  # type: ignore[attr-defined]
    code, err, _ = await post(http, shared, PAGERDUTY, json=body)
    assert code == 422 and loc_of(err) == [["body", "payload", "severity"]]
    code, answer, _ = await post(
        http,
        shared,
        PAGERDUTY,
        json={"routing_key": key, "event_action": "resolve", "dedup_key": "pd-1"},
    )
    assert code == 202 and answer["dedup_key"] == "pd-1"
    assert (await incident(http, shared, org, inc["id"]))["status"] == "RESOLVED"


async def test_an_alertmanager_webhook_opens_and_resolves_one_incident_per_alert(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    key = await new_key(http, shared, org, name="am")
    bearer = {"Authorization": f"Bearer {key['key']}", "User-Agent": "Alertmanager/0.25.0"}
    code, answer, _ = await post(http, shared, ALERTMANAGER, json=AM_BODY, headers=bearer)
    assert code == 200, answer
    assert answer["status"] == "success" and answer["events"] == 2
    first, second = answer["incidents"]
    web1 = await incident(http, shared, org, first)
    assert (web1["title"], web1["severity"], web1["dedup_key"]) == (
        "web-1 is down",
        "critical",
        "5b2f0c7e1d3a4b69",
    )
    assert web1["details"]["source"] == "web-1:9100"
    assert web1["details"]["custom_details"]["labels"]["alertname"] == "InstanceDown"
    assert (await incident(http, shared, org, second))["severity"] == "warning"

    # Alertmanager repeats the group while it fires: the same incidents count it.
    code, answer, _ = await post(
        http, shared, f"{ALERTMANAGER}?routing_key={key['key']}", json=AM_BODY
    )
    assert code == 200 and answer["incidents"] == [first, second]
    assert (await incident(http, shared, org, first))["event_count"] == 2

    # web-1 recovers: a resolved alert, sent by a sender that only does Basic auth.
    resolved = copy.deepcopy(AM_BODY)
    resolved["status"] = "resolved"
    resolved["alerts"] = [resolved["alerts"][0]]
    resolved["alerts"][0].update(status="resolved", endsAt="2024-05-01T10:05:00Z")
    basic = base64.b64encode(f"alertmanager:{key['key']}".encode()).decode()
    code, answer, _ = await post(
        http, shared, ALERTMANAGER, json=resolved, headers={"Authorization": f"Basic {basic}"}
    )
    assert (code, answer["incidents"]) == (200, [first]), answer
    assert (await incident(http, shared, org, first))["status"] == "RESOLVED"
    assert (await incident(http, shared, org, second))["status"] == "OPEN"

    # No key, or another scheme: the same 404 as an unknown key.
    assert (await post(http, shared, ALERTMANAGER, json=AM_BODY))[:2] == (404, NOT_FOUND)
    code, _, _ = await post(
        http, shared, ALERTMANAGER, json=AM_BODY, headers={"Authorization": f"Token {key['key']}"}
    )
    assert code == 404


async def test_a_grafana_webhook_is_taken_by_post_and_put(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    key = await new_key(http, shared, org, name="grafana")
    bearer = {"Authorization": f"Bearer {key['key']}"}
    code, answer, _ = await post(http, shared, GRAFANA, json=GRAFANA_BODY, headers=bearer)
    assert code == 200 and answer["events"] == 1, answer
    (iid,) = answer["incidents"]
    got = await incident(http, shared, org, iid)
    assert (got["title"], got["severity"], got["dedup_key"]) == (
        "Memory above 90% in us-1",
        "critical",
        "c6eadffa33fcdf37",
    )
    assert {link["text"] for link in got["details"]["links"]} == {
        "Source",
        "Silence",
        "Dashboard",
        "Panel",
    }
    assert got["details"]["custom_details"]["values"] == {"B": 91.5, "C": 1}
    resolved = copy.deepcopy(GRAFANA_BODY)
    resolved["status"] = "resolved"
    resolved["alerts"][0].update(status="resolved", endsAt="2021-10-12T09:56:03+02:00")
    code, answer, _ = await post(http, shared, GRAFANA, "PUT", json=resolved, headers=bearer)
    assert (code, answer["incidents"]) == (200, [iid]), answer
    assert (await incident(http, shared, org, iid))["status"] == "RESOLVED"


# -- grouping ------------------------------------------------------------------------------------


async def test_grouping_none_opens_an_incident_per_trigger(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    key = (await new_key(http, shared, org, grouping_type="none"))["key"]
    ids = [(await event(http, shared, key, "trigger", "same"))["incident_id"] for _ in range(3)]
    assert len(set(ids)) == 3
    # Acknowledging and resolving reach the newest open one with that key.
    assert (await event(http, shared, key, "acknowledge", "same"))["incident_id"] == ids[2]
    assert (await event(http, shared, key, "resolve", "same"))["incident_id"] == ids[2]
    assert (await event(http, shared, key, "resolve", "same"))["incident_id"] == ids[1]
    statuses = [(await incident(http, shared, org, i))["status"] for i in ids]
    assert statuses == ["OPEN", "RESOLVED", "RESOLVED"]


async def test_time_window_grouping_joins_new_dedup_keys_to_a_recent_incident(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    window = 3
    key = (
        await new_key(
            http, shared, org, grouping_type="time_window", grouping_window_seconds=window
        )
    )["key"]
    first = (await event(http, shared, key, "trigger", "a"))["incident_id"]
    assert (await event(http, shared, key, "trigger", "b"))["incident_id"] == first
    got = await incident(http, shared, org, first)
    assert got["event_count"] == 2 and got["dedup_key"] == "a"
    # A dedup key that joined reaches the incident.
    assert (await event(http, shared, key, "acknowledge", "b"))["incident_id"] == first
    await asyncio.sleep(window + 0.5)
    # Past the window: a new dedup key opens its own incident; a known one still counts.
    later = (await event(http, shared, key, "trigger", "c"))["incident_id"]
    assert later != first
    assert (await event(http, shared, key, "trigger", "a"))["incident_id"] == first
    code, timeline = await api(
        http, shared, "GET", f"/api/organizations/{org}/incidents/inbound/{first}/timeline"
    )
    assert code == 200
    grouped = [e for e in timeline["timeline"] if e["kind"] == "grouped"]
    assert [e["detail"]["dedup_key"] for e in grouped] == ["b"]


async def test_payload_field_grouping_joins_incidents_with_the_same_value(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    grouped = await new_key(
        http, shared, org, grouping_type="payload_field", grouping_field="custom_details.cluster"
    )
    key = grouped["key"]

    async def trigger(dedup: str, cluster: str | None) -> int:
        details = {} if cluster is None else {"cluster": cluster}
        answer = await event(http, shared, key, "trigger", dedup, custom_details=details)
        return int(answer["incident_id"])

    eu = await trigger("db-eu", "eu-1")
    assert await trigger("web-eu", "eu-1") == eu
    us = await trigger("db-us", "us-1")
    assert us != eu
    # Without the field, nothing to group by: an incident of its own.
    lone = await trigger("cron", None)
    assert lone not in (eu, us)
    assert (await incident(http, shared, org, eu))["event_count"] == 2
    # Once the incident is resolved, the value opens a new one.
    await event(http, shared, key, "resolve", "web-eu")
    assert (await incident(http, shared, org, eu))["status"] == "RESOLVED"
    assert await trigger("cache-eu", "eu-1") not in (eu, us, lone)
    # Component as the field (a top-level one), through a PATCH: it applies at once.
    code, _ = await api(
        http,
        shared,
        "PATCH",
        f"{keys_path(org)}/{grouped['id']}",
        json={"grouping_field": "component"},
    )
    assert code == 200
    a = (await event(http, shared, key, "trigger", "x1", component="api"))["incident_id"]
    assert (await event(http, shared, key, "trigger", "x2", component="api"))["incident_id"] == a


# -- what is refused -------------------------------------------------------------------------------


async def test_bad_bodies_are_refused_and_change_nothing(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    _, other = await other_org_user(shared)
    token, org = await other_org_user(shared)
    key = (await new_key(http, shared, org, token=token))["key"]
    bearer = {"Authorization": f"Bearer {key}"}
    for path in (INGEST, PAGERDUTY, ALERTMANAGER, GRAFANA):
        code, body, _ = await post(http, shared, path, data=b"{nope", headers=bearer)
        assert code == 400 and "malformed" in body["detail"], (path, body)
        code, body, _ = await post(http, shared, path, data=b"[1, 2]", headers=bearer)
        assert code == 422 and loc_of(body) == [["body"]], (path, body)
        code, body, _ = await post(http, shared, path, data=b"", headers=bearer)
        assert code == 422 and loc_of(body) == [["body"]], (path, body)
        huge = b'{"x": "' + b"a" * (512 * 1024) + b'"}'
        code, body, _ = await post(http, shared, path, data=huge, headers=bearer)
        assert code == 413, (path, body)
    code, body, _ = await post(
        http,
        shared,
        INGEST,
        json={"routing_key": key, "event_action": "trigger", "payload": {"source": "x"}},
    )
    assert code == 422 and loc_of(body) == [["body", "payload", "summary"]], body
    code, body, _ = await post(
        http, shared, INGEST, json={"routing_key": key, "event_action": "resolve"}
    )
    assert code == 422 and loc_of(body) == [["body", "dedup_key"]], body
    bad = copy.deepcopy(AM_BODY)
    bad["alerts"][1]["status"] = "pending"
    code, body, _ = await post(http, shared, ALERTMANAGER, json=bad, headers=bearer)
    assert code == 422 and loc_of(body) == [["body", "alerts", 1, "status"]], body
    # Under the limit, a large Alertmanager group is taken.
    big = copy.deepcopy(AM_BODY)
    big["alerts"] = [
        {**AM_BODY["alerts"][0], "fingerprint": f"{i:016x}", "annotations": {"summary": "x" * 900}}
        for i in range(300)
    ]
    code, body, _ = await post(http, shared, ALERTMANAGER, json=big, headers=bearer)
    assert code == 200 and body["events"] == 300, body
    # Only that group was stored; nothing of the refused requests.
    assert await stored_events(shared, org) == 300
    assert await stored_events(shared, other) == 0


async def test_a_key_past_its_events_per_second_is_answered_429(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOCSIN_INBOUND_RATE", "0.5")
    monkeypatch.setenv("TOCSIN_INBOUND_BURST", "3")
    server = Server(tmp_path / "data")
    server.start()
    try:
        org = await admin_org(http, server)
        key = (await new_key(http, server, org))["key"]
        other = (await new_key(http, server, org))["key"]
        for i in range(3):
            await event(http, server, key, "trigger", f"r{i}")
        body = {
            "routing_key": key,
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "x"},
        }
        code, answer, headers = await post(http, server, INGEST, json=body)
        assert code == 429, answer
        assert int(headers["Retry-After"]) >= 1 and answer["detail"]
        # Another key has a budget of its own.
        await event(http, server, other, "trigger", "o1")
        await event(http, server, other, "trigger", "o2")
        # An Alertmanager group counts one event per alert: 2, where 1 is left.
        code, _, headers = await post(
            http, server, ALERTMANAGER, json=AM_BODY, headers={"Authorization": f"Bearer {other}"}
        )
        assert code == 429 and int(headers["Retry-After"]) >= 1
        assert await stored_events(server, org) == 5
    finally:
        server.kill()


# -- escalation, notifications, durability -------------------------------------------------------


@pytest.mark.both_backends
async def test_a_keys_escalation_policy_is_set_on_the_incidents_it_opens(
    server: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, server)
    store = server_store(server)
    await store.open(migrate=False)
    try:
        policy = await store.insert("escalation_policies", org, {"name": "ops"})
    finally:
        await store.close()
    paged = await new_key(http, server, org, escalation_policy_id=policy["id"])
    assert paged["escalation_policy_id"] == policy["id"]
    plain = (await new_key(http, server, org))["key"]

    iid = (await event(http, server, paged["key"], "trigger", "esc"))["incident_id"]
    got = await incident(http, server, org, iid)
    assert got["escalation"] is not None, got
    assert (got["escalation"]["policy_id"], got["escalation"]["round"]) == (policy["id"], 0)
    plain_iid = (await event(http, server, plain, "trigger", "esc"))["incident_id"]
    assert (await incident(http, server, org, plain_iid))["escalation"] is None

    await event(http, server, paged["key"], "acknowledge", "esc")
    got = await incident(http, server, org, iid)
    assert got["status"] == "ACKNOWLEDGED" and got["escalation"]["next_at"] is None


async def test_opening_acknowledging_and_resolving_notify_the_default_channels(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    token, org = await other_org_user(shared)
    body = {
        "name": "hook",
        "channel_type": "webhook",
        "is_default": True,
        # Nothing listens there: the deliveries stay in the outbox, which is the point.
        "config": {"url": "http://127.0.0.1:9/hook", "secret": "s" * 32},
    }
    code, channel = await api(
        http, shared, "POST", "/api/notification-channels/", token=token, json=body
    )
    assert code == 201, channel
    key = (await new_key(http, shared, org, token=token))["key"]
    iid = (await event(http, shared, key, "trigger", "n1"))["incident_id"]
    await event(http, shared, key, "trigger", "n1")
    await event(http, shared, key, "acknowledge", "n1")
    await event(http, shared, key, "resolve", "n1")

    async def planned() -> list[str] | None:
        code, got = await api(
            http,
            shared,
            "GET",
            f"/api/notification-channels/{channel['id']}/deliveries",
            token=token,
        )
        assert code == 200, got
        events = sorted(d["event"] for d in got["deliveries"] if d["incident_id"] == iid)
        return events if len(events) == 3 else None

    assert await wait_for(planned) == ["acknowledged", "opened", "resolved"]


@pytest.mark.both_backends
async def test_every_event_answered_is_stored_and_a_restart_keeps_the_index(
    server: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, server)
    key = (await new_key(http, server, org))["key"]
    window_key = (
        await new_key(http, server, org, grouping_type="time_window", grouping_window_seconds=3600)
    )["key"]

    async def send(i: int) -> tuple[int, Any]:
        dedup = f"shared-{i % 10}" if i % 2 else f"unique-{i}"
        body = {
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": dedup,
            "payload": {"summary": f"event {i}", "source": "load"},
        }
        code, answer, _ = await post(http, server, INGEST, json=body)
        return code, answer

    answers = await asyncio.gather(*(send(i) for i in range(300)))
    assert all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
    by_dedup: dict[str, set[int]] = {}
    for _, answer in answers:
        by_dedup.setdefault(answer["dedup_key"], set()).add(answer["incident_id"])
    # 150 unique dedup keys (even i), 5 shared ones (odd i: i % 10 is 1, 3, 5, 7 or 9).
    assert len(by_dedup) == 155 and all(len(ids) == 1 for ids in by_dedup.values())
    assert await stored_events(server, org) == 300
    page = await listed(http, server, org, "?limit=1")
    assert page["total"] == 155
    shared0 = next(iter(by_dedup["shared-1"]))
    assert (await incident(http, server, org, shared0))["event_count"] == 30

    joined = (await event(http, server, window_key, "trigger", "w-a"))["incident_id"]
    assert (await event(http, server, window_key, "trigger", "w-b"))["incident_id"] == joined

    assert server.stop() == 0
    server.start()
    # (a GET first: the client's idle connections to the old process are retried)
    assert await admin_org(http, server) == org
    # After the restart: the same open incidents are reached, a joined key included.
    again = await event(http, server, key, "trigger", "shared-1")
    assert again["incident_id"] == shared0
    assert (await incident(http, server, org, shared0))["event_count"] == 31
    assert (await event(http, server, window_key, "resolve", "w-b"))["incident_id"] == joined
    assert (await incident(http, server, org, joined))["status"] == "RESOLVED"
    assert await stored_events(server, org) == 304


# -- the inbound incidents' list -------------------------------------------------------------------


async def test_inbound_incidents_are_listed_newest_first_with_filters(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    token, org = await other_org_user(shared)
    key = await new_key(http, shared, org, token=token)
    other_key = await new_key(http, shared, org, token=token)
    ids = []
    for i, severity in enumerate(("critical", "warning", "info", "critical")):
        answer = await event(
            http,
            shared,
            key["key"],
            "trigger",
            f"l{i}",
            severity=severity,
            summary=f"Disk {i} FULL",
        )
        ids.append(answer["incident_id"])
    await event(http, shared, key["key"], "resolve", "l0")
    odd = (
        await event(
            http, shared, other_key["key"], "trigger", "x", summary="CPU hot", severity="error"
        )
    )["incident_id"]

    async def page(query: str) -> tuple[int, list[int]]:
        code, got = await api(http, shared, "GET", incidents_path(org) + query, token=token)
        assert code == 200, got
        return got["total"], [i["id"] for i in got["incidents"]]

    assert await page("") == (5, [odd, *reversed(ids)])
    assert await page("?limit=2&offset=1") == (5, [ids[3], ids[2]])
    assert await page("?status=RESOLVED") == (1, [ids[0]])
    assert await page("?status=open") == (4, [odd, ids[3], ids[2], ids[1]])
    assert await page("?severity=critical") == (2, [ids[3], ids[0]])
    assert await page(f"?integration_key_id={other_key['id']}") == (1, [odd])
    assert await page("?q=disk%201") == (1, [ids[1]])
    assert await page("?q=cpu") == (1, [odd])
    assert (await page("?since=2000-01-01&until=2000-01-02")) == (0, [])
    assert (await page("?since=2000-01-01"))[0] == 5
    code, body = await api(
        http, shared, "GET", incidents_path(org) + "?severity=fatal", token=token
    )
    assert code == 422 and loc_of(body) == [["query", "severity"]]
    code, body = await api(http, shared, "GET", incidents_path(org) + "?limit=201", token=token)
    assert code == 422 and loc_of(body) == [["query", "limit"]]
    code, body = await api(http, shared, "GET", f"{incidents_path(org)}/{ids[0]}", token=token)
    assert [e["action"] for e in body["events"]] == ["resolve", "trigger"]
    assert body["events"][1]["payload"]["source"] == "srv01"


# -- the processor on its own ----------------------------------------------------------------------


async def test_a_batch_that_fails_leaves_the_index_as_it_was(tmp_path: Path) -> None:
    """A batch whose transaction fails applied nothing, in the database or in the index:
    the same events sent again apply once, to the incidents they would have reached."""
    store = SqliteStore(tmp_path / "t.db")
    await store.open()
    processor: InboundProcessor | None = None
    try:
        org = int((await store.create_organization("o"))["id"])
        row = await store.insert(
            "integration_keys",
            org,
            {
                "name": "k",
                "key_hash": "h",
                "prefix": "ik_x",
                "grouping_type": "time_window",
                "grouping_window_seconds": 3600,
            },
        )
        key = IntegrationKey.from_row(row)
        processor = InboundProcessor(store, EventHub())
        await processor.start()

        def trigger(dedup: str, severity: str = "warning") -> InboundEvent:
            return InboundEvent("trigger", dedup, summary=dedup, severity=severity, source="x")

        (first,) = await processor.submit(key, [trigger("a")], "native")
        batch = [trigger("a", "critical"), trigger("b"), InboundEvent("resolve", "a")]
        # The database goes away under the writer: the whole batch fails.
        await store.close()
        with pytest.raises(AssertionError, match="not open"):
            await processor.submit(key, batch, "native")
        await store.open()
        inc = processor.index.reaching(key.id, "a")
        assert inc is not None and inc.id == first.incident_id
        assert (inc.status, inc.event_count, inc.severity) == ("OPEN", 1, "warning")
        assert processor.index.reaching(key.id, "b") is None

        done = await processor.submit(key, batch, "native")
        assert [d.incident_id for d in done] == [first.incident_id] * 3
        got = await store.get("incidents", [org], first.incident_id)
        assert got is not None
        assert (got["status"], got["event_count"], got["severity"]) == ("RESOLVED", 3, "critical")
        assert await store.count("inbound_events", [org]) == 4
        assert processor.index.reaching(key.id, "b") is None and len(processor.index) == 0
    finally:
        if processor is not None:
            await processor.close()
        await store.close()


async def test_a_deleted_organisations_key_is_not_found_at_once(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    owner, org = await other_org_user(shared)
    key = await new_key(http, shared, org, token=owner)
    opened = await event(http, shared, key["key"], "trigger", "disk-srv09")
    assert opened["incident_id"] is not None
    code, orgs = await api(http, shared, "GET", f"/api/organizations/{org}", token=owner)
    assert code == 200, orgs
    code, _ = await api(
        http, shared, "DELETE", f"/api/organizations/{org}?confirm={orgs['name']}", token=owner
    )
    assert code == 204
    body = {"routing_key": key["key"], "event_action": "resolve", "dedup_key": "disk-srv09"}
    code, answer, _ = await post(http, shared, INGEST, json=body)
    assert code == 404 and answer == {"detail": "Integration key not found"}, answer


async def test_an_inbound_incident_is_resolved_by_hand_and_a_new_trigger_opens_another(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    code, me = await api(http, shared, "GET", "/api/users/me")
    assert code == 200, me
    code, policy = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={"name": "p", "steps": [{"targets": [{"type": "user", "id": me["id"]}]}]},
    )
    assert code == 201, policy
    key = await new_key(http, shared, org, escalation_policy_id=policy["id"])
    first = await event(http, shared, key["key"], "trigger", "stuck-job")
    iid = first["incident_id"]
    assert (await incident(http, shared, org, iid))["escalation"]["policy_id"] == policy["id"]
    code, resolved = await api(http, shared, "POST", f"{incidents_path(org)}/{iid}/resolve")
    assert code == 200 and resolved["status"] == "RESOLVED", resolved
    assert resolved["escalation"]["next_at"] is None
    code, again = await api(http, shared, "POST", f"{incidents_path(org)}/{iid}/resolve")
    assert code == 409, again
    # The processor heard of it: the same dedup key now opens a new incident.
    second = await event(http, shared, key["key"], "trigger", "stuck-job")
    assert second["incident_id"] not in (None, iid)
    stranger, other = await other_org_user(shared)
    code, _ = await api(
        http, shared, "POST", f"{incidents_path(other)}/{iid}/resolve", token=stranger
    )
    assert code == 404
