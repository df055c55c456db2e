"""Incidents end to end: a real target going down opens one (seen on SSE and in
`/api/incidents`), users acknowledge, annotate and resolve it, recovery resolves it; other
organisations never see it. And the manager itself on a real store and engine: warning
incidents raised to critical, maintenance, checks whose ids are reused."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import (
    Server,
    Target,
    api,
    create_check,
    free_port,
    is_event,
    other_org_user,
    wait_for,
)
from tocsin.encryption import SecretBox
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.incidents import IncidentManager
from tocsin.models import Check, Status, StatusChange
from tocsin.store.sqlite import SqliteStore

ADMIN_ID = 1


async def incidents(
    http: aiohttp.ClientSession, server: Server, query: str = "", token: str | None = None
) -> dict[str, Any]:
    code, body = await api(http, server, "GET", "/api/incidents" + query, token=token)
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def kinds(timeline: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in timeline["timeline"]]


@pytest.mark.both_backends
async def test_an_outage_opens_an_incident_acknowledged_annotated_and_resolved_by_recovery(
    server: Server, target: Target, http: aiohttp.ClientSession, sse: Any
) -> None:
    async with sse(server, "?heartbeat=1") as stream:
        check = await create_check(http, server, target.url)
        cid = check["id"]
        await stream.wait(is_event("status.change", check_id=cid, current="UP"))
        assert (await incidents(http, server))["total"] == 0

        await target.stop()
        new = await stream.wait(is_event("incident.new", check_id=cid))
        assert new["data"]["status"] == "OPEN"
        assert new["data"]["severity"] == "critical"
        assert new["data"]["title"] == "web is DOWN"
        iid = new["data"]["id"]
        await stream.wait(is_event("status.change", check_id=cid, current="DOWN"))

        listed = await incidents(http, server)
        assert (listed["total"], listed["offset"], listed["limit"]) == (1, 0, 50)
        (inc,) = listed["incidents"]
        assert inc["id"] == iid and inc["status"] == "OPEN" and inc["check_id"] == cid
        assert inc["cause"] == "connect_refused" and inc["sources"] == {"central": "DOWN"}
        assert inc["resolved_at"] is None and inc["duration_s"] is None
        for query, total in [
            ("?status=open", 1),
            ("?status=OPEN", 1),
            ("?status=resolved", 0),
            (f"?check_id={cid}", 1),
            (f"?check_id={cid + 1}", 0),
            ("?organization_id=1", 1),
            ("?organization_id=2", 0),
        ]:
            assert (await incidents(http, server, query))["total"] == total, query

        ack_path = f"/api/checks/{cid}/incidents/{iid}/ack"
        code, acked = await api(http, server, "POST", ack_path)
        assert code == 200, acked
        assert acked["status"] == "ACKNOWLEDGED" and acked["acknowledged_by"] == ADMIN_ID
        event = await stream.wait(is_event("incident.ack", id=iid))
        assert event["data"]["status"] == "ACKNOWLEDGED"
        # Acknowledging again changes nothing.
        code, again = await api(http, server, "POST", ack_path + "/")
        assert code == 200 and again["acknowledged_at"] == acked["acknowledged_at"]
        assert (await incidents(http, server, "?status=acknowledged"))["total"] == 1

        notes = f"/api/organizations/1/incidents/check/{iid}/notes"
        code, note = await api(http, server, "POST", notes, json={"body": " restarting the db "})
        assert code == 201, note
        assert note["body"] == "restarting the db" and note["author_id"] == ADMIN_ID
        code, listed_notes = await api(http, server, "GET", notes)
        assert code == 200 and [n["id"] for n in listed_notes] == [note["id"]]

        await target.start()
        resolved = await stream.wait(is_event("incident.resolve", id=iid))
        assert resolved["data"]["status"] == "RESOLVED"
        assert resolved["data"]["resolved_by"] is None  # automatic
        assert resolved["data"]["duration_s"] > 0
        await stream.wait(is_event("status.change", check_id=cid, current="UP"))

    (inc,) = (await incidents(http, server, "?status=resolved"))["incidents"]
    assert inc["id"] == iid and inc["acknowledged_by"] == ADMIN_ID
    code, body = await api(http, server, "POST", ack_path)
    assert code == 409 and "resolved" in body["detail"]
    code, body = await api(http, server, "POST", f"/api/checks/{cid}/incidents/{iid}/resolve")
    assert code == 409

    code, timeline = await api(
        http, server, "GET", f"/api/organizations/1/incidents/check/{iid}/timeline"
    )
    assert code == 200
    assert timeline["incident"]["id"] == iid
    assert kinds(timeline) == ["opened", "acknowledged", "note", "resolved"]
    at = [e["at"] for e in timeline["timeline"]]
    assert at == sorted(at)
    assert timeline["timeline"][1]["actor_id"] == ADMIN_ID
    assert timeline["timeline"][2]["detail"]["body"] == "restarting the db"
    assert timeline["timeline"][3]["detail"]["automatic"] is True


async def test_resolving_by_hand_closes_it_until_the_next_outage(
    server: Server, http: aiohttp.ClientSession, sse: Any
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    async with sse(server, "?heartbeat=1") as stream:
        check = await create_check(http, server, dead)
        cid = check["id"]
        new = await stream.wait(is_event("incident.new", check_id=cid))
        iid = new["data"]["id"]
        code, wrong = await api(
            http, server, "POST", f"/api/checks/{cid + 1}/incidents/{iid}/resolve"
        )
        assert code == 404 and wrong == {"detail": "Incident not found"}
        code, done = await api(http, server, "POST", f"/api/checks/{cid}/incidents/{iid}/resolve")
        assert code == 200, done
        assert done["status"] == "RESOLVED" and done["resolved_by"] == ADMIN_ID
        event = await stream.wait(is_event("incident.resolve", id=iid))
        assert event["data"]["resolved_by"] == ADMIN_ID
        # Still DOWN, but no new transition: no new incident.
        for _ in range(3):
            while (e := await stream.next(5)) is not None and "comment" not in e:
                assert e["event"] != "incident.new"
    assert (await incidents(http, server, "?status=open"))["total"] == 0
    code, timeline = await api(
        http, server, "GET", f"/api/organizations/1/incidents/check/{iid}/timeline"
    )
    assert kinds(timeline) == ["opened", "resolved"]
    assert timeline["timeline"][1]["detail"]["automatic"] is False


@pytest.mark.both_backends
async def test_time_filters_and_paging(
    server: Server, http: aiohttp.ClientSession, sse: Any
) -> None:
    async with sse(server) as stream:
        ids = []
        for _ in range(3):
            check = await create_check(http, server, f"http://127.0.0.1:{free_port()}/")
            ids.append((await stream.wait(is_event("incident.new", check_id=check["id"])))["data"])
    started = [dt.datetime.fromisoformat(i["started_at"].replace("Z", "+00:00")) for i in ids]
    page = await incidents(http, server, "?limit=2")
    assert page["total"] == 3 and page["limit"] == 2
    # Newest first.
    assert [i["id"] for i in page["incidents"]] == [ids[2]["id"], ids[1]["id"]]
    page = await incidents(http, server, "?limit=2&offset=2")
    assert [i["id"] for i in page["incidents"]] == [ids[0]["id"]]

    mid = started[1].timestamp()
    since = await incidents(http, server, f"?since={mid}")
    assert [i["id"] for i in since["incidents"]] == [ids[2]["id"], ids[1]["id"]]
    iso_mid = started[1].isoformat().replace("+00:00", "Z")
    until = await incidents(http, server, f"?until={iso_mid}")
    assert until["total"] == 1 and until["incidents"][0]["id"] == ids[0]["id"]
    both = await incidents(http, server, f"?since={started[0].timestamp()}&until={mid}&limit=1")
    assert both["total"] == 1 and both["incidents"][0]["id"] == ids[0]["id"]
    later = await incidents(http, server, "?since=2999-01-01T00:00:00")
    assert later["total"] == 0 and later["incidents"] == []


@pytest.mark.both_backends
async def test_other_organisations_and_viewers(
    server: Server, http: aiohttp.ClientSession, sse: Any
) -> None:
    async with sse(server) as stream:
        check = await create_check(http, server, f"http://127.0.0.1:{free_port()}/")
        cid = check["id"]
        iid = (await stream.wait(is_event("incident.new", check_id=cid)))["data"]["id"]
    stranger, their_org = await other_org_user(server)
    viewer, _ = await other_org_user(server, role="VIEWER", org_id=1)

    assert (await incidents(http, server, token=stranger))["total"] == 0
    assert (await incidents(http, server, "?organization_id=1", token=stranger))["total"] == 0
    notes = f"/api/organizations/1/incidents/check/{iid}/notes"
    timeline = f"/api/organizations/1/incidents/check/{iid}/timeline"
    for method, path, kw in [
        ("POST", f"/api/checks/{cid}/incidents/{iid}/ack", {}),
        ("POST", f"/api/checks/{cid}/incidents/{iid}/resolve", {}),
        ("GET", notes, {}),
        ("POST", notes, {"json": {"body": "hello"}}),
        ("GET", timeline, {}),
        # Their own organisation in the path does not reach our incident either.
        ("GET", f"/api/organizations/{their_org}/incidents/check/{iid}/notes", {}),
        ("GET", f"/api/organizations/{their_org}/incidents/check/{iid}/timeline", {}),
    ]:
        code, body = await api(http, server, method, path, token=stranger, **kw)
        assert code == 404, (method, path, body)

    # A viewer of the organisation reads, but cannot change.
    assert (await incidents(http, server, token=viewer))["total"] == 1
    assert (await api(http, server, "GET", notes, token=viewer))[0] == 200
    assert (await api(http, server, "GET", timeline, token=viewer))[0] == 200
    for path, kw in [
        (f"/api/checks/{cid}/incidents/{iid}/ack", {}),
        (f"/api/checks/{cid}/incidents/{iid}/resolve", {}),
        (notes, {"json": {"body": "hello"}}),
    ]:
        code, _ = await api(http, server, "POST", path, token=viewer, **kw)
        assert code == 403, path
    (inc,) = (await incidents(http, server))["incidents"]
    assert inc["status"] == "OPEN"
    code, listed = await api(http, server, "GET", notes)
    assert listed == []


async def test_bad_input(server: Server, http: aiohttp.ClientSession, sse: Any) -> None:
    async with sse(server) as stream:
        check = await create_check(http, server, f"http://127.0.0.1:{free_port()}/")
        cid = check["id"]
        iid = (await stream.wait(is_event("incident.new", check_id=cid)))["data"]["id"]

    for query, param in [
        ("?status=broken", "status"),
        ("?limit=201", "limit"),
        ("?limit=0", "limit"),
        ("?offset=-1", "offset"),
        ("?check_id=abc", "check_id"),
        ("?organization_id=0", "organization_id"),
        ("?since=yesterday", "since"),
        ("?until=2024-13-01", "until"),
    ]:
        code, body = await api(http, server, "GET", "/api/incidents" + query)
        assert code == 422, (query, body)
        assert body["detail"][0]["loc"] == ["query", param]

    for path in [
        f"/api/checks/{cid}/incidents/abc/ack",
        f"/api/checks/{cid}/incidents/{iid + 100}/ack",
        f"/api/checks/{cid}/incidents/{iid + 100}/resolve",
        f"/api/checks/{cid + 100}/incidents/{iid}/ack",
    ]:
        code, body = await api(http, server, "POST", path)
        assert code == 404, (path, body)
    for path in [
        f"/api/organizations/1/incidents/check/{iid + 100}/notes",
        f"/api/organizations/1/incidents/inbound/{iid}/notes",
        f"/api/organizations/999/incidents/check/{iid}/timeline",
        "/api/organizations/1/incidents/check/abc/timeline",
    ]:
        assert (await api(http, server, "GET", path))[0] == 404, path
    code, body = await api(http, server, "GET", f"/api/organizations/1/incidents/page/{iid}/notes")
    assert code == 422 and body["detail"][0]["loc"] == ["path", "kind"]

    notes = f"/api/organizations/1/incidents/check/{iid}/notes"
    code, body = await api(http, server, "POST", notes, data=b'{"body": ')
    assert code == 400 and "malformed JSON" in body["detail"]
    for payload, loc in [
        ({}, ["body", "body"]),
        ({"body": ""}, ["body", "body"]),
        ({"body": "   "}, ["body", "body"]),
        ({"body": 5}, ["body", "body"]),
        ({"body": "x" * 10_001}, ["body", "body"]),
        (["body"], ["body"]),
    ]:
        code, body = await api(http, server, "POST", notes, json=payload)
        assert code == 422, (payload, body)
        assert body["detail"][0]["loc"] == loc
    assert (await api(http, server, "GET", notes))[1] == []


# -- the manager on a real store and engine ---------------------------------------------------


class Setup:
    def __init__(self, store: SqliteStore, engine: Engine, hub: EventHub) -> None:
        self.store, self.engine, self.hub = store, engine, hub
        self.manager = IncidentManager(store, engine, hub)

    async def check(self, org_id: int, name: str = "db") -> int:
        row = await self.store.create_check(
            org_id,
            {
                "name": name,
                "type": "uptime",
                "url": "http://127.0.0.1:1/",
                "interval": 60,
                "timeout": 10,
            },
        )
        # Inactive: the engine knows the check but never probes it here.
        self.engine.upsert([Check(row["id"], "uptime", 60, 10, name, row["url"], is_active=False)])
        return int(row["id"])

    async def apply(self, check_id: int, previous: Status, current: Status, **kw: Any) -> None:
        change = StatusChange(check_id, previous, current, 1_700_000_000.0, "why", **kw)
        await self.manager.directory.learn([check_id])
        await self.manager.apply(change)

    async def incidents(self, org_id: int) -> list[dict[str, Any]]:
        return await self.store.select("incidents", [org_id], limit=100)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = SqliteStore(tmp_path / "tocsin.db", SecretBox.from_environment(tmp_path))
    await store.open()
    engine = Engine()
    try:
        yield Setup(store, engine, EventHub())
    finally:
        await engine.close()
        await store.close()


async def test_degraded_opens_a_warning_that_going_down_raises(setup: Setup) -> None:
    org = int((await setup.store.create_organization("A"))["id"])
    cid = await setup.check(org)
    sub = setup.hub.subscribe([org])
    await setup.apply(cid, Status.UP, Status.DEGRADED)
    (inc,) = await setup.incidents(org)
    assert (inc["severity"], inc["status"], inc["title"]) == ("warning", "OPEN", "db is DEGRADED")
    await setup.apply(cid, Status.DEGRADED, Status.DOWN)
    await setup.apply(cid, Status.DOWN, Status.DEGRADED)  # better again: stays critical
    (inc,) = await setup.incidents(org)
    assert inc["severity"] == "critical"
    await setup.apply(cid, Status.DEGRADED, Status.UP)
    (inc,) = await setup.incidents(org)
    assert inc["status"] == "RESOLVED" and inc["resolved_by"] is None
    events = await setup.store.select("incident_events", [org], where={"incident_id": inc["id"]})
    assert [e["kind"] for e in events] == ["opened", "severity_changed", "resolved"]
    assert events[1]["detail"]["from"] == "warning" and events[1]["detail"]["to"] == "critical"
    published = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [e.type for e in published if e] == ["incident.new", "incident.resolve"]


async def test_late_heartbeats_open_warnings_and_paused_checks_nothing(setup: Setup) -> None:
    org = int((await setup.store.create_organization("A"))["id"])
    late, paused = await setup.check(org, "cron"), await setup.check(org, "web")
    await setup.apply(late, Status.UP, Status.LATE)
    await setup.apply(paused, Status.UP, Status.PAUSED)
    await setup.apply(paused, Status.PAUSED, Status.UNKNOWN)
    (inc,) = await setup.incidents(org)
    assert (inc["check_id"], inc["severity"]) == (late, "warning")


async def test_transitions_in_maintenance_open_nothing_but_recovery_still_resolves(
    setup: Setup,
) -> None:
    org = int((await setup.store.create_organization("A"))["id"])
    cid = await setup.check(org)
    await setup.apply(cid, Status.UP, Status.DOWN, in_maintenance=True)
    assert await setup.incidents(org) == []
    await setup.apply(cid, Status.DOWN, Status.UP)
    await setup.apply(cid, Status.UP, Status.DOWN)
    await setup.apply(cid, Status.DOWN, Status.UP, in_maintenance=True)
    (inc,) = await setup.incidents(org)
    assert inc["status"] == "RESOLVED"


async def test_a_reused_check_id_is_attributed_to_its_new_organisation(setup: Setup) -> None:
    a = int((await setup.store.create_organization("A"))["id"])
    b = int((await setup.store.create_organization("B"))["id"])
    cid = await setup.check(a)
    await setup.manager.directory.learn([cid])
    assert setup.manager.directory.owner(cid) == a
    setup.engine.remove([cid])
    assert await setup.store.delete_check([a], cid)
    # SQLite gives the next check the freed id.
    again = await setup.check(b)
    assert again == cid
    assert setup.manager.directory.owner(cid) is None
    await setup.apply(cid, Status.UP, Status.DOWN)
    assert await setup.incidents(a) == []
    (inc,) = await setup.incidents(b)
    assert inc["check_id"] == cid


async def test_the_queue_applies_transitions_in_order_and_reconciles_at_start(
    setup: Setup,
) -> None:
    org = int((await setup.store.create_organization("A"))["id"])
    cid = await setup.check(org)
    # An incident left open while the check's stored verdict is UP (a missed recovery).
    stale = await setup.store.insert(
        "incidents",
        org,
        {"check_id": cid, "title": "old", "status": "OPEN", "started_at": 1.0},
    )
    await setup.store.write_batch([], [StatusChange(cid, Status.DOWN, Status.UP, 2.0, None)], [])
    setup.manager.start()
    try:
        setup.manager.on_batch(
            [],
            [
                StatusChange(cid, Status.UP, Status.DOWN, 10.0, "a"),
                StatusChange(cid, Status.DOWN, Status.UP, 11.0, "b"),
                StatusChange(cid, Status.UP, Status.DEGRADED, 12.0, "c"),
            ],
        )

        async def settled() -> list[dict[str, Any]] | None:
            rows = await setup.incidents(org)
            return rows if len(rows) == 3 and setup.manager.pending == 0 else None

        rows = await wait_for(settled, timeout=10)
    finally:
        await setup.manager.close()
    by_id = {r["id"]: r for r in rows}
    assert by_id[stale["id"]]["status"] == "RESOLVED"
    first, second = sorted((r for r in rows if r["id"] != stale["id"]), key=lambda r: r["id"])
    assert (first["severity"], first["status"], first["resolved_at"]) == (
        "critical",
        "RESOLVED",
        11.0,
    )
    assert (second["severity"], second["status"]) == ("warning", "OPEN")
