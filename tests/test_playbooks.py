"""Playbooks over a real server on each backend: a playbook that opens a war room and
calls a real webhook receiver when an uptime check on a real target goes DOWN (once,
with its outcome on the incident's timeline); a failing step recorded while the next one
still runs; `suppress_default_notifications` keeping the default channel quiet while a
`notify_channel` step is delivered; validation naming the field; roles and isolation
between organisations; the SysTeam clients' body shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from helpers import Server, Target, call, free_port, other_org_user, wait_for
from paging_helpers import Receiver
from workflow_helpers import loc, module_server, unique, user_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from module_server(request, tmp_path_factory, "playbooks")


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    runner = await r.start()
    yield r
    await runner.cleanup()


def pb_path(org: int, pid: int | None = None) -> str:
    base = f"/api/organizations/{org}/playbooks"
    return base if pid is None else f"{base}/{pid}"


async def create_playbook(
    http: aiohttp.ClientSession, server: Server, token: str, org: int, **fields: Any
) -> Any:
    body = {"name": unique("pb"), "trigger_type": "incident_opened", **fields}
    code, pb = await call(http, server, "POST", pb_path(org), token, json=body)
    assert code == 201, pb
    return pb


async def heartbeat_incident(
    http: aiohttp.ClientSession, server: Server, token: str, **fields: Any
) -> tuple[Any, int]:
    """A heartbeat check failed by a ping: (check, its incident's id)."""
    code, check = await call(
        http,
        server,
        "POST",
        "/api/checks/",
        token,
        json={
            "name": unique("job"),
            "type": "heartbeat",
            "interval": 3600,
            "grace_period": 3600,
            **fields,
        },
    )
    assert code == 200, check
    async with http.post(server.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200
    return check, await incident_of(http, server, token, check["id"])


async def incident_of(http: aiohttp.ClientSession, server: Server, token: str, cid: int) -> int:
    async def opened() -> Any:
        code, page = await call(http, server, "GET", f"/api/checks/{cid}/incidents", token)
        assert code == 200, page
        return page["incidents"][0]["id"] if page["incidents"] else None

    return int(await wait_for(opened))


async def finished_runs(
    http: aiohttp.ClientSession, server: Server, token: str, org: int, iid: int, n: int = 1
) -> list[Any]:
    async def done() -> Any:
        code, runs = await call(
            http, server, "GET", f"/api/organizations/{org}/incidents/{iid}/playbook-runs", token
        )
        assert code == 200, runs
        return runs if len(runs) >= n and all(r["finished_at"] for r in runs) else None

    runs: list[Any] = await wait_for(done)
    return runs


async def timeline(
    http: aiohttp.ClientSession, server: Server, token: str, org: int, iid: int
) -> list[Any]:
    code, tl = await call(
        http, server, "GET", f"/api/organizations/{org}/incidents/check/{iid}/timeline", token
    )
    assert code == 200, tl
    events: list[Any] = tl["timeline"]
    return events


# -- end to end ----------------------------------------------------------------------------------


async def test_a_playbook_opens_a_war_room_and_calls_a_webhook_when_a_check_goes_down(
    shared: Server, http: aiohttp.ClientSession, target: Target, receiver: Receiver
) -> None:
    token, org = await other_org_user(shared)
    hook = unique("hook")
    pb = await create_playbook(
        http,
        shared,
        token,
        org,
        steps=[
            {"type": "open_war_room", "title": "Checkout is down"},
            {"type": "call_webhook", "url": receiver.url(hook)},
        ],
    )
    code, check = await call(
        http,
        shared,
        "POST",
        "/api/checks/",
        token,
        json={
            "name": unique("web"),
            "type": "uptime",
            "url": target.url,
            "interval": 1,
            "timeout": 2,
        },
    )
    assert code == 200, check

    async def up() -> Any:
        code, body = await call(http, shared, "GET", f"/api/checks/{check['id']}", token)
        assert code == 200, body
        return body["status"] == "UP"

    await wait_for(up)
    await target.stop()  # the real target stops answering: DOWN
    iid = await incident_of(http, shared, token, check["id"])

    (run,) = await finished_runs(http, shared, token, org, iid)
    assert run["playbook_id"] == pb["id"] and run["playbook_name"] == pb["name"], run
    assert run["status"] == "completed", run
    assert [(s["step"], s["type"], s["status"]) for s in run["steps"]] == [
        (1, "open_war_room", "ok"),
        (2, "call_webhook", "ok"),
    ], run
    room_id = run["steps"][0]["detail"]["war_room_id"]
    assert run["steps"][1]["detail"]["response_code"] == 200

    # The war room exists for the incident, opened by the playbook.
    code, rooms = await call(
        http, shared, "GET", f"/api/organizations/{org}/war-rooms?incident_id={iid}", token
    )
    assert code == 200, rooms
    assert [(r["id"], r["status"], r["title"]) for r in rooms] == [
        (room_id, "open", "Checkout is down")
    ]
    assert rooms[0]["opened_by"] is None

    # The webhook got the incident and the playbook, once.
    await wait_for(lambda: _has(receiver, hook))
    (got,) = receiver.of(hook)
    assert got["incident"]["id"] == iid and got["incident"]["check_id"] == check["id"], got
    assert got["playbook"]["id"] == pb["id"] and got["organization_id"] == org, got

    # The timeline tells the run, with each step's outcome, and the war room.
    events = await timeline(http, shared, token, org, iid)
    (ran,) = [e for e in events if e["kind"] == "playbook_run"]
    assert ran["detail"]["playbook_id"] == pb["id"] and ran["detail"]["status"] == "completed"
    assert [s["status"] for s in ran["detail"]["steps"]] == ["ok", "ok"]
    assert [e["detail"]["war_room_id"] for e in events if e["kind"] == "war_room_opened"] == [
        room_id
    ]

    # The same incident is not run again: the receiver still holds one call once the
    # check's later (still DOWN) results went by.
    await asyncio.sleep(1.5)
    assert len(receiver.of(hook)) == 1
    (again,) = await finished_runs(http, shared, token, org, iid)
    assert again["id"] == run["id"]
    code, runs = await call(http, shared, "GET", pb_path(org, pb["id"]) + "/runs", token)
    assert code == 200 and [r["id"] for r in runs] == [run["id"]], runs


async def _has(receiver: Receiver, name: str) -> bool:
    return bool(receiver.of(name))


async def test_a_failing_step_is_recorded_and_the_next_step_still_runs(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    token, org = await other_org_user(shared)
    closed = free_port()  # nothing listens there
    await create_playbook(
        http,
        shared,
        token,
        org,
        steps=[
            {"type": "call_webhook", "url": f"http://127.0.0.1:{closed}/hook", "timeout_s": 2},
            {"type": "add_note", "body": "Runbook: restart the job"},
            {"type": "add_checklist", "title": "First steps", "items": ["look", "fix"]},
            {"type": "set_severity", "severity": "warning"},
        ],
    )
    _, iid = await heartbeat_incident(http, shared, token)
    (run,) = await finished_runs(http, shared, token, org, iid)
    assert run["status"] == "partial", run
    assert [s["status"] for s in run["steps"]] == ["failed", "ok", "ok", "ok"], run
    assert "POST http://127.0.0.1" in run["steps"][0]["message"]

    code, notes = await call(
        http, shared, "GET", f"/api/organizations/{org}/incidents/check/{iid}/notes", token
    )
    assert code == 200, notes
    bodies = [n["body"] for n in notes]
    assert bodies == ["Runbook: restart the job", "First steps\n- [ ] look\n- [ ] fix"], bodies

    # The severity changed, on the timeline too; the run's event lists all four steps.
    events = await timeline(http, shared, token, org, iid)
    changed = [e for e in events if e["kind"] == "severity_changed"]
    assert [(e["detail"]["from"], e["detail"]["to"]) for e in changed] == [("critical", "warning")]
    (ran,) = [e for e in events if e["kind"] == "playbook_run"]
    assert [s["status"] for s in ran["detail"]["steps"]] == ["failed", "ok", "ok", "ok"]


async def test_suppress_default_notifications_and_notify_channel(
    shared: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token, org = await other_org_user(shared)
    tag = unique("t")
    channels = {}
    for name, default in (("default", True), ("room", False)):
        code, ch = await call(
            http,
            shared,
            "POST",
            "/api/notification-channels/",
            token,
            json={
                "name": f"{name} {tag}",
                "channel_type": "webhook",
                "config": {"url": receiver.url(f"{name}-{tag}")},
                "is_default": default,
            },
        )
        assert code == 201, ch
        channels[name] = ch
    # A check tagged `db`; only incidents of checks tagged so are taken over.
    code, check = await call(
        http,
        shared,
        "POST",
        "/api/checks/",
        token,
        json={
            "name": unique("db-job"),
            "type": "heartbeat",
            "interval": 3600,
            "grace_period": 3600,
            "tags": ["db", "prod"],
        },
    )
    assert code == 200, check
    await create_playbook(
        http,
        shared,
        token,
        org,
        trigger_type="check_tag",
        trigger_conditions={"tags": ["db"]},
        suppress_default_notifications=True,
        steps=[{"type": "notify_channel", "channel_id": channels["room"]["id"], "message": "db!"}],
    )
    # An untagged check: the default channel hears as usual, no playbook runs.
    other, other_iid = await heartbeat_incident(http, shared, token)
    await wait_for(
        lambda: _has_match(
            receiver, f"default-{tag}", lambda m: m["message"]["check_id"] == other["id"]
        )
    )
    code, runs = await call(
        http, shared, "GET", f"/api/organizations/{org}/incidents/{other_iid}/playbook-runs", token
    )
    assert code == 200 and runs == [], runs

    # The tagged check fails: the playbook's channel hears, the default one's row is
    # kept suppressed (and nothing reaches it).
    async with http.post(shared.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200
    iid = await incident_of(http, shared, token, check["id"])
    (run,) = await finished_runs(http, shared, token, org, iid)
    assert run["status"] == "completed", run
    await wait_for(lambda: _has(receiver, f"room-{tag}"))
    (got,) = receiver.of(f"room-{tag}")
    assert got["event"] == "playbook" and got["message"]["summary"] == "db!", got
    assert got["message"]["incident_id"] == iid, got

    async def opened_row() -> Any:
        code, rows = await call(
            http,
            shared,
            "GET",
            f"/api/notification-channels/{channels['default']['id']}/deliveries",
            token,
        )
        assert code == 200, rows
        mine = [r for r in rows["deliveries"] if r["incident_id"] == iid and r["event"] == "opened"]
        return mine[0] if mine else None

    row = await wait_for(opened_row)
    assert row["status"] == "suppressed", row
    assert not [m for m in receiver.of(f"default-{tag}") if m["message"]["check_id"] == check["id"]]


async def _has_match(receiver: Receiver, name: str, match: Any) -> bool:
    return any(match(m) for m in receiver.of(name))


# -- validation, roles, isolation ------------------------------------------------------------------


async def test_validation_names_the_field(shared: Server, http: aiohttp.ClientSession) -> None:
    token, org = await other_org_user(shared)
    code, ch = await call(
        http,
        shared,
        "POST",
        "/api/notification-channels/",
        token,
        json={"name": "c", "channel_type": "webhook", "config": {"url": "http://127.0.0.1:9/x"}},
    )
    assert code == 201, ch
    ok_steps = [{"type": "add_note", "body": "x"}]
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"trigger_type": "incident_opened", "steps": ok_steps}, ["name"]),
        ({"name": "x", "steps": ok_steps}, ["trigger_type"]),
        ({"name": "x", "trigger_type": "sometimes", "steps": ok_steps}, ["trigger_type"]),
        ({"name": "x", "trigger_type": "incident_opened"}, ["steps"]),
        ({"name": "x", "trigger_type": "incident_opened", "steps": []}, ["steps"]),
        (
            {"name": "x", "trigger_type": "incident_opened", "steps": ok_steps * 21},
            ["steps"],
        ),
        (
            {"name": "x", "trigger_type": "incident_opened", "steps": [{"type": "dance"}]},
            ["steps", 0, "type"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "steps": [{"type": "add_note", "body": "a"}, {"type": "notify_channel"}],
            },
            ["steps", 1, "channel_id"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "steps": [*ok_steps, {"type": "notify_channel", "channel_id": 999_999_999}],
            },
            ["steps", 1, "channel_id"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "steps": [{"type": "call_webhook", "url": "ftp://example.test/"}],
            },
            ["steps", 0, "url"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "steps": [{"type": "set_severity", "severity": "apocalyptic"}],
            },
            ["steps", 0, "severity"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "steps": [{"type": "notify_user", "user_id": 999_999_999}],
            },
            ["steps", 0, "user_id"],
        ),
        (
            {"name": "x", "trigger_type": "severity", "steps": ok_steps},
            ["trigger_conditions", "severity"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "severity",
                "trigger_conditions": {"severity": ["dire"]},
                "steps": ok_steps,
            },
            ["trigger_conditions", "severity"],
        ),
        (
            {"name": "x", "trigger_type": "check_tag", "steps": ok_steps},
            ["trigger_conditions", "tags"],
        ),
        (
            {"name": "x", "trigger_type": "service", "steps": ok_steps},
            ["trigger_conditions", "service_id"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "inbound_source",
                "trigger_conditions": {"integration_key_id": 999_999_999},
                "steps": ok_steps,
            },
            ["trigger_conditions", "integration_key_id"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "service_id": 999_999_999,
                "steps": ok_steps,
            },
            ["service_id"],
        ),
        (
            {
                "name": "x",
                "trigger_type": "incident_opened",
                "is_active": "maybe",
                "steps": ok_steps,
            },
            ["is_active"],
        ),
    ]
    for body, where in cases:
        code, err = await call(http, shared, "POST", pb_path(org), token, json=body)
        assert code == 422, (body, err)
        assert loc(err) == where, (body, err)
    # A partial change is validated the same way.
    pb = await create_playbook(http, shared, token, org, steps=ok_steps)
    code, err = await call(
        http,
        shared,
        "PUT",
        pb_path(org, pb["id"]),
        token,
        json={"steps": [{"type": "notify_channel", "channel_id": "3"}]},
    )
    assert code == 422 and loc(err) == ["steps", 0, "channel_id"], err
    code, err = await call(
        http, shared, "PUT", pb_path(org, pb["id"]), token, json={"trigger_type": "severity"}
    )
    assert code == 422 and loc(err) == ["trigger_conditions", "severity"], err
    code, filtered = await call(http, shared, "GET", pb_path(org) + "?trigger_type=nope", token)
    assert code == 422, filtered


async def test_crud_roles_and_isolation(shared: Server, http: aiohttp.ClientSession) -> None:
    token, org = await other_org_user(shared)
    member, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=org)
    stranger, other_org = await other_org_user(shared)
    pb = await create_playbook(
        http,
        shared,
        token,
        org,
        trigger_type="severity",
        trigger_conditions={"severity": "critical"},
        steps=[{"type": "add_note", "body": "hi"}],
    )
    me = await user_id(http, shared, token)
    assert pb["created_by"] == me and pb["organization_id"] == org
    assert pb["trigger_conditions"] == {"severity": ["critical"]}
    assert pb["is_active"] is True and pb["suppress_default_notifications"] is False

    body = {
        "name": "x",
        "trigger_type": "incident_opened",
        "steps": [{"type": "add_note", "body": "x"}],
    }
    for who in (member, viewer):
        code, err = await call(http, shared, "POST", pb_path(org), who, json=body)
        assert code == 403, err
        code, err = await call(http, shared, "PUT", pb_path(org, pb["id"]), who, json={"name": "y"})
        assert code == 403, err
        code, err = await call(http, shared, "DELETE", pb_path(org, pb["id"]), who)
        assert code == 403, err
    code, one = await call(http, shared, "GET", pb_path(org, pb["id"]), viewer)
    assert code == 200 and one == pb, one

    # Another organisation sees nothing of it.
    for method, path, kw in (
        ("GET", pb_path(org), {}),
        ("POST", pb_path(org), {"json": body}),
        ("GET", pb_path(org, pb["id"]), {}),
        ("PUT", pb_path(org, pb["id"]), {"json": {"name": "z"}}),
        ("DELETE", pb_path(org, pb["id"]), {}),
        ("GET", pb_path(org, pb["id"]) + "/runs", {}),
        ("GET", pb_path(other_org, pb["id"]), {}),
        ("PUT", pb_path(other_org, pb["id"]), {"json": {"name": "z"}}),
        ("DELETE", pb_path(other_org, pb["id"]), {}),
    ):
        code, err = await call(http, shared, method, path, stranger, **kw)
        assert code == 404, (method, path, err)

    # Lists, filters, partial changes, delete.
    code, changed = await call(
        http,
        shared,
        "PUT",
        pb_path(org, pb["id"]),
        token,
        json={"is_active": False, "name": "renamed"},
    )
    assert code == 200, changed
    assert changed["name"] == "renamed" and changed["is_active"] is False
    assert (
        changed["trigger_conditions"] == {"severity": ["critical"]}
        and changed["steps"] == pb["steps"]
    )
    code, rows = await call(http, shared, "GET", pb_path(org) + "?is_active=false", token)
    assert code == 200 and [r["id"] for r in rows] == [pb["id"]], rows
    code, rows = await call(
        http, shared, "GET", pb_path(org) + "?trigger_type=incident_opened", token
    )
    assert code == 200 and rows == [], rows
    code, _ = await call(http, shared, "DELETE", pb_path(org, pb["id"]), token)
    assert code == 204
    code, _ = await call(http, shared, "GET", pb_path(org, pb["id"]), token)
    assert code == 404

    # An incident's runs: viewers read them; another organisation gets 404.
    _, iid = await heartbeat_incident(http, shared, token)
    code, runs = await call(
        http, shared, "GET", f"/api/organizations/{org}/incidents/{iid}/playbook-runs", viewer
    )
    assert code == 200 and runs == [], runs
    for path in (
        f"/api/organizations/{org}/incidents/{iid}/playbook-runs",
        f"/api/organizations/{other_org}/incidents/{iid}/playbook-runs",
        f"/api/organizations/{other_org}/incidents/check/{iid}/playbook-runs",
    ):
        code, err = await call(http, shared, "GET", path, stranger)
        assert code == 404, (path, err)


async def test_systeam_bodies_every_field_zero_values_unknown_fields(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    token, org = await other_org_user(shared)
    me = await user_id(http, shared, token)
    code, svc = await call(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/services",
        token,
        json={"name": unique("svc")},
    )
    assert code == 201, svc
    code, ch = await call(
        http,
        shared,
        "POST",
        "/api/notification-channels/",
        token,
        json={"name": "c", "channel_type": "webhook", "config": {"url": "http://127.0.0.1:9/x"}},
    )
    assert code == 201, ch
    every = {
        "name": "DB on fire",
        "description": "What we do when the database burns",
        "trigger_type": "service",
        "trigger_conditions": {"service_id": svc["id"], "kinds": ["check", "inbound"]},
        "service_id": svc["id"],
        "suppress_default_notifications": True,
        "is_active": True,
        "steps": [
            {"type": "add_note", "body": "note", "name": "first"},
            {"type": "add_checklist", "items": ["a", "b"], "title": "T"},
            {"type": "notify_channel", "channel_id": ch["id"], "message": "m"},
            {"type": "notify_user", "user_id": me},
            {
                "type": "call_webhook",
                "url": "http://127.0.0.1:9/hook",
                "headers": {"X-A": "1"},
                "timeout_s": 3,
            },
            {"type": "open_war_room", "title": "room", "member_ids": [me]},
            {"type": "set_severity", "severity": "CRITICAL"},
            {"type": "run_check"},
        ],
        "unknown": {"nested": True},
        "owner": "someone",
    }
    code, pb = await call(http, shared, "POST", pb_path(org), token, json=every)
    assert code == 201, pb
    assert pb["service_id"] == svc["id"] and pb["suppress_default_notifications"] is True
    assert pb["trigger_conditions"] == {"service_id": svc["id"], "kinds": ["check", "inbound"]}
    assert [s["type"] for s in pb["steps"]] == [
        "add_note",
        "add_checklist",
        "notify_channel",
        "notify_user",
        "call_webhook",
        "open_war_room",
        "set_severity",
        "run_check",
    ]
    assert pb["steps"][6]["severity"] == "critical" and pb["steps"][0]["name"] == "first"
    assert "unknown" not in pb and "owner" not in pb

    # Zero values: empty text, false flags, service 0 (none), an empty conditions object.
    zero = {
        "name": "z",
        "description": "",
        "trigger_type": "incident_opened",
        "trigger_conditions": {},
        "service_id": 0,
        "suppress_default_notifications": False,
        "is_active": False,
        "steps": [{"type": "add_note", "body": "x", "extra": 0}],
    }
    code, z = await call(http, shared, "POST", pb_path(org), token, json=zero)
    assert code == 201, z
    assert (z["description"], z["service_id"], z["is_active"], z["trigger_conditions"]) == (
        "",
        None,
        False,
        {},
    )
    # Aliases clients send for the trigger and the step types; nulls are "not given".
    code, a = await call(
        http,
        shared,
        "POST",
        pb_path(org),
        token,
        json={
            "name": "aliases",
            "description": None,
            "trigger_type": "incident-created",
            "trigger_conditions": None,
            "service_id": None,
            "steps": [
                {"type": "webhook", "url": "http://127.0.0.1:9/h"},
                {"type": "note", "text": "t"},
            ],
        },
    )
    assert code == 201, a
    assert a["trigger_type"] == "incident_opened" and a["service_id"] is None
    assert [s["type"] for s in a["steps"]] == ["call_webhook", "add_note"]
    # PUT of every field with zero values.
    code, put = await call(
        http,
        shared,
        "PUT",
        pb_path(org, pb["id"]),
        token,
        json={**zero, "unknown": 1},
    )
    assert code == 200, put
    assert put["service_id"] is None and put["trigger_type"] == "incident_opened"
    assert put["trigger_conditions"] == {} and put["steps"] == [{"type": "add_note", "body": "x"}]
