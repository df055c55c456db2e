"""Teams, services and organisation slugs over a real server on each backend: CRUD,
validation, roles and isolation between organisations; what a team owns; checks and
lists filtered by team and service; a service's status from its checks; a service whose
escalation policy pages its on-call user and whose channel hears of its incidents (check
incidents and inbound ones, at real webhook receivers on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from helpers import Server, api, call, other_org_user, wait_for
from paging_helpers import Receiver
from pgcluster import PgCluster


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp(f"teams-{request.param}") / "data")
    name = None
    cluster: PgCluster | None = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        name = f"t_teams_{uuid.uuid4().hex[:8]}"
        s.start("--database", cluster.create_database(name))
    else:
        s.start()
    yield s
    s.kill()
    if cluster is not None and name is not None:
        cluster.drop_database(name)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    runner = await r.start()
    yield r
    await runner.cleanup()


async def admin_org(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


async def me(http: aiohttp.ClientSession, server: Server, token: str | None = None) -> int:
    code, body = await call(http, server, "GET", "/api/profile", token or "admin")
    assert code == 200, body
    return int(body["id"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- organisations by slug -------------------------------------------------------------


async def test_organisations_get_a_unique_slug_found_by_slug(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    name = unique("Acme Widgets")
    code, first = await api(http, shared, "POST", "/api/organizations/", json={"name": name})
    assert code == 201, first
    assert first["slug"] == name.lower().replace(" ", "-")
    # The same name again: numbered, still unique.
    code, second = await api(http, shared, "POST", "/api/organizations/", json={"name": name})
    assert code == 201, second
    assert second["slug"] == first["slug"] + "-2"
    code, found = await api(http, shared, "GET", f"/api/organizations/by-slug/{second['slug']}")
    assert code == 200, found
    assert found["id"] == second["id"] and found["role"] == "OWNER"

    # An OWNER changes it; a taken one is refused naming the field; a bad one too.
    code, changed = await api(
        http, shared, "PUT", f"/api/organizations/{second['id']}", json={"slug": unique("renamed")}
    )
    assert code == 200 and changed["slug"].startswith("renamed-"), changed
    code, err = await api(
        http, shared, "PUT", f"/api/organizations/{second['id']}", json={"slug": first["slug"]}
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "slug", err
    code, err = await api(
        http, shared, "PATCH", f"/api/organizations/{second['id']}", json={"slug": "Not A Slug"}
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "slug", err
    code, _ = await api(http, shared, "GET", f"/api/organizations/by-slug/{first['slug']}")
    assert code == 200

    # Someone else's organisation is not found by its slug; an ADMIN cannot change it.
    outsider, _ = await other_org_user(shared)
    code, _ = await call(
        http, shared, "GET", f"/api/organizations/by-slug/{first['slug']}", outsider
    )
    assert code == 404
    admin_token, _ = await other_org_user(shared, role="ADMIN", org_id=int(first["id"]))
    code, err = await call(
        http, shared, "PUT", f"/api/organizations/{first['id']}", admin_token, json={"slug": "x-y"}
    )
    assert code == 403, err
    code, renamed = await call(
        http, shared, "PUT", f"/api/organizations/{first['id']}", admin_token, json={"name": "N"}
    )
    assert code == 200 and renamed["name"] == "N" and renamed["slug"] == first["slug"]


# -- teams -----------------------------------------------------------------------------


async def test_teams_members_roles_resources_and_isolation(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/teams"
    admin_id = await me(http, shared)
    member_token, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    member_id = await me(http, shared, member_token)
    viewer_token, _ = await other_org_user(shared, role="VIEWER", org_id=org)

    name = unique("Platform Team")
    code, team = await api(
        http,
        shared,
        "POST",
        base,
        json={
            "name": name,
            "description": "runs the platform",
            "members": [{"user_id": admin_id, "role": "lead"}],
            "unknown_field": "ignored",
        },
    )
    assert code == 201, team
    tid = team["id"]
    assert team["slug"] == name.lower().replace(" ", "-")
    assert [(m["user_id"], m["role"]) for m in team["members"]] == [(admin_id, "lead")]
    # Same name: a numbered slug. An explicit taken slug: 422 naming it.
    code, twin = await api(http, shared, "POST", base, json={"name": name, "slug": ""})
    assert code == 201 and twin["slug"] == team["slug"] + "-2", twin
    code, err = await api(http, shared, "POST", base, json={"name": "x", "slug": team["slug"]})
    assert code == 422 and err["detail"][0]["loc"][-1] == "slug", err
    code, err = await api(http, shared, "POST", base, json={"name": ""})
    assert code == 422 and err["detail"][0]["loc"][-1] == "name", err
    code, err = await api(
        http, shared, "POST", base, json={"name": "y", "members": [{"user_id": 999999}]}
    )
    assert code == 422 and err["detail"][0]["loc"][-3:] == ["members", 0, "user_id"], err

    # Members: added with a role (aliases taken), changed, removed.
    code, added = await api(
        http, shared, "POST", f"{base}/{tid}/members", json={"user_id": member_id, "role": "viewer"}
    )
    assert code == 201 and added["role"] == "observer", added
    code, changed = await api(
        http, shared, "PUT", f"{base}/{tid}/members/{member_id}", json={"role": "member"}
    )
    assert code == 200 and changed["role"] == "member", changed
    code, err = await api(
        http, shared, "PUT", f"{base}/{tid}/members/{member_id}", json={"role": "boss"}
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "role", err
    code, err = await api(http, shared, "POST", f"{base}/{tid}/members", json={"user_id": 999999})
    assert code == 422 and err["detail"][0]["loc"][-1] == "user_id", err
    # A plain member of the team cannot manage its members; a lead can.
    code, _ = await call(http, shared, "DELETE", f"{base}/{tid}/members/{admin_id}", member_token)
    assert code == 403
    await api(http, shared, "PUT", f"{base}/{tid}/members/{member_id}", json={"role": "lead"})
    code, _ = await call(
        http,
        shared,
        "PUT",
        f"{base}/{tid}/members/{admin_id}",
        member_token,
        json={"role": "member"},
    )
    assert code == 200
    # ... but cannot rename the team (ADMIN configures); a VIEWER reads only.
    code, _ = await call(http, shared, "PUT", f"{base}/{tid}", member_token, json={"name": "z"})
    assert code == 403
    code, _ = await call(http, shared, "POST", base, viewer_token, json={"name": "v"})
    assert code == 403
    code, seen = await call(http, shared, "GET", f"{base}/{tid}", viewer_token)
    assert code == 200 and seen["member_count"] == 2

    # The teams a user is in.
    code, mine = await api(http, shared, "GET", f"{base}?user_id={member_id}")
    assert code == 200 and [t["id"] for t in mine] == [tid], mine

    # What the team owns: a check, a service, a schedule, a policy and a status page.
    code, check = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={"name": unique("owned"), "type": "heartbeat", "interval": 3600, "owner_team_id": tid},
    )
    assert code == 200 and check["owner_team_id"] == tid, check
    code, other_check = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={"name": unique("free"), "type": "heartbeat", "interval": 3600, "owner_team_id": 0},
    )
    assert code == 200 and other_check["owner_team_id"] is None, other_check
    code, err = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={"name": "bad", "type": "heartbeat", "interval": 3600, "owner_team_id": 999999},
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "owner_team_id", err
    code, service = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/services",
        json={"name": unique("api"), "owner_team_id": tid},
    )
    assert code == 201, service
    code, sched = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/oncall-schedules",
        json={"name": "team rota", "participants": [admin_id], "owner_team_id": tid},
    )
    assert code == 201 and sched["owner_team_id"] == tid, sched
    code, policy = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={
            "name": "team policy",
            "owner_team_id": tid,
            "steps": [{"delay_minutes": 5, "targets": [{"type": "user", "id": admin_id}]}],
        },
    )
    assert code == 201 and policy["owner_team_id"] == tid, policy
    code, page = await api(
        http,
        shared,
        "POST",
        "/api/status-pages/",
        json={"name": unique("Team page"), "owner_team_id": tid, "organization_id": org},
    )
    assert code in (200, 201) and page["owner_team_id"] == tid, page

    code, res = await api(http, shared, "GET", f"{base}/{tid}/resources")
    assert code == 200, res
    assert [c["id"] for c in res["checks"]] == [check["id"]]
    assert [s["id"] for s in res["services"]] == [service["id"]]
    assert [s["id"] for s in res["schedules"]] == [sched["id"]]
    assert [p["id"] for p in res["escalation_policies"]] == [policy["id"]]
    assert [p["id"] for p in res["status_pages"]] == [page["id"]]

    # Lists filter by team.
    code, checks = await api(http, shared, "GET", f"/api/checks/?team_id={tid}")
    assert code == 200 and [c["id"] for c in checks] == [check["id"]]
    for path, want in (
        (f"/api/organizations/{org}/oncall-schedules?team_id={tid}", sched["id"]),
        (f"/api/organizations/{org}/escalation-policies?team_id={tid}", policy["id"]),
        (f"/api/organizations/{org}/services?team_id={tid}", service["id"]),
        (f"/api/status-pages/?team_id={tid}", page["id"]),
    ):
        code, rows = await api(http, shared, "GET", path)
        assert code == 200 and [r["id"] for r in rows] == [want], (path, rows)

    # Another organisation sees none of it and cannot point at it.
    outsider, other_org = await other_org_user(shared)
    for path in (f"{base}/{tid}", f"{base}/{tid}/resources", f"{base}/{tid}/members"):
        code, _ = await call(http, shared, "GET", path, outsider)
        assert code == 404, path
    code, _ = await call(
        http, shared, "GET", f"/api/organizations/{other_org}/teams/{tid}", outsider
    )
    assert code == 404
    code, err = await call(
        http,
        shared,
        "POST",
        "/api/checks/",
        outsider,
        json={"name": "steal", "type": "heartbeat", "interval": 3600, "owner_team_id": tid},
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "owner_team_id", err

    # Deleting the team leaves what it owned owned by nobody.
    code, _ = await api(http, shared, "DELETE", f"{base}/{tid}")
    assert code == 204
    code, _ = await api(http, shared, "GET", f"{base}/{tid}")
    assert code == 404
    code, after = await api(http, shared, "GET", f"/api/checks/{check['id']}")
    assert code == 200 and after["owner_team_id"] is None, after


# -- services --------------------------------------------------------------------------


async def test_services_fields_validation_status_and_isolation(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    base = f"/api/organizations/{org}/services"
    # Every field a SysTeam client sends, zero values, unknown fields ignored.
    code, svc = await api(
        http,
        shared,
        "POST",
        base,
        json={
            "name": unique("Checkout"),
            "description": "",
            "repo_url": "https://git.example.test/checkout",
            "docs_url": "",
            "owner_team_id": 0,
            "escalation_policy_id": None,
            "tier": 1,
            "notification_channel_ids": [],
            "slack_channel": "#checkout",
            "metadata_json": '{"cost_center": "42"}',
            "whatever": True,
        },
    )
    assert code == 201, svc
    assert svc["tier"] == "1" and svc["owner_team_id"] is None and svc["docs_url"] is None
    assert svc["metadata_json"] == {"cost_center": "42"}
    assert svc["status"] == "UNKNOWN" and svc["checks"]["total"] == 0
    sid = svc["id"]
    for body, field in (
        ({"name": ""}, "name"),
        ({"name": "x", "repo_url": "ftp://nope"}, "repo_url"),
        ({"name": "x", "metadata_json": "[1, 2"}, "metadata_json"),
        ({"name": "x", "notification_channel_ids": [999999]}, "notification_channel_ids"),
        ({"name": "x", "escalation_policy_id": 999999}, "escalation_policy_id"),
        ({"name": "x", "owner_team_id": 999999}, "owner_team_id"),
    ):
        code, err = await api(http, shared, "POST", base, json=body)
        assert code == 422, (body, err)
        assert field in err["detail"][0]["loc"], (body, err)

    # Its status is the worst of its active checks'.
    code, up = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={"name": unique("svc-up"), "type": "heartbeat", "interval": 3600, "service_id": sid},
    )
    assert code == 200 and up["service_id"] == sid, up
    async with http.post(shared.base + f"/api/ping/{up['uuid']}") as resp:
        assert resp.status == 200

    async def status() -> Any:
        code, body = await api(http, shared, "GET", f"{base}/{sid}")
        assert code == 200, body
        return body if body["status"] == "UP" else None

    await wait_for(status)
    code, down = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={"name": unique("svc-down"), "type": "heartbeat", "interval": 3600, "service_id": sid},
    )
    assert code == 200, down
    async with http.post(shared.base + f"/api/ping/{down['uuid']}/fail") as resp:
        assert resp.status == 200

    async def is_down() -> Any:
        _, body = await api(http, shared, "GET", f"{base}/{sid}")
        return body if body["status"] == "DOWN" else None

    body = await wait_for(is_down)
    assert body["checks"]["by_status"] == {"UP": 1, "DOWN": 1}
    code, checks = await api(http, shared, "GET", f"/api/checks/?service_id={sid}")
    assert code == 200 and {c["id"] for c in checks} == {up["id"], down["id"]}

    # A change changes only what it sends.
    code, changed = await api(http, shared, "PUT", f"{base}/{sid}", json={"tier": "critical"})
    assert code == 200 and changed["tier"] == "critical" and changed["slack_channel"] == "#checkout"

    # Roles and isolation.
    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=org)
    code, _ = await call(http, shared, "GET", f"{base}/{sid}", viewer)
    assert code == 200
    code, _ = await call(http, shared, "POST", base, viewer, json={"name": "v"})
    assert code == 403
    member, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    code, _ = await call(http, shared, "PUT", f"{base}/{sid}", member, json={"name": "m"})
    assert code == 403
    outsider, other_org = await other_org_user(shared)
    for method in ("GET", "PUT", "DELETE"):
        code, _ = await call(
            http,
            shared,
            method,
            f"/api/organizations/{other_org}/services/{sid}",
            outsider,
            **({"json": {"name": "x"}} if method == "PUT" else {}),
        )
        assert code == 404, method
    code, err = await call(
        http,
        shared,
        "POST",
        "/api/checks/",
        outsider,
        json={"name": "steal", "type": "heartbeat", "interval": 3600, "service_id": sid},
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "service_id", err

    code, _ = await api(http, shared, "DELETE", f"{base}/{sid}")
    assert code == 204
    code, after = await api(http, shared, "GET", f"/api/checks/{up['id']}")
    assert code == 200 and after["service_id"] is None


async def test_a_services_policy_pages_its_on_call_user_and_its_channel_hears(
    shared: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    org = await admin_org(http, shared)
    # The on-call user, with a webhook contact method.
    token, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    user_id = await me(http, shared, token)
    tag = uuid.uuid4().hex[:6]
    code, method = await call(
        http,
        shared,
        "POST",
        "/api/profile/contact-methods",
        token,
        json={"kind": "webhook", "value": receiver.url(f"oncall-{tag}"), "label": "pager"},
    )
    assert code == 201, method
    code, sched = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/oncall-schedules",
        json={"name": "svc rota", "participants": [user_id], "start": "2020-01-01"},
    )
    assert code == 201, sched
    code, policy = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={
            "name": "svc policy",
            "steps": [{"delay_minutes": 30, "targets": [{"type": "schedule", "id": sched["id"]}]}],
        },
    )
    assert code == 201, policy
    # The service's own channel (not a default one: only the service brings it in).
    code, channel = await api(
        http,
        shared,
        "POST",
        "/api/notification-channels/",
        json={
            "name": f"svc room {tag}",
            "channel_type": "webhook",
            "config": {"url": receiver.url(f"room-{tag}")},
        },
    )
    assert code == 201, channel
    code, svc = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/services",
        json={
            "name": unique("payments"),
            "escalation_policy_id": policy["id"],
            "notification_channel_ids": [channel["id"]],
        },
    )
    assert code == 201, svc

    # A check of the service with no policy of its own fails: the service's policy pages
    # whoever is on call, and the service's channel is told.
    code, check = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={
            "name": unique("svc-job"),
            "type": "heartbeat",
            "interval": 3600,
            "grace_period": 3600,
            "service_id": svc["id"],
        },
    )
    assert code == 200, check
    async with http.post(shared.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200
    await wait_for(lambda: _hit(receiver, f"oncall-{tag}"))
    await wait_for(lambda: _hit(receiver, f"room-{tag}"))
    room = receiver.of(f"room-{tag}")
    assert room[0]["event"] == "opened" and room[0]["message"]["check_id"] == check["id"], room
    code, page = await api(http, shared, "GET", f"/api/checks/{check['id']}/incidents")
    assert code == 200, page
    iid = page["incidents"][0]["id"]
    code, tl = await api(
        http, shared, "GET", f"/api/organizations/{org}/incidents/check/{iid}/timeline"
    )
    assert code == 200, tl
    (escalated,) = [e for e in tl["timeline"] if e["kind"] == "escalated"]
    assert [p["user_id"] for p in escalated["detail"]["pages"]] == [user_id]

    # An integration key of the service: its inbound incident pages the same way.
    code, key = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/integration-keys",
        json={"name": "svc alerts", "service_id": svc["id"]},
    )
    assert code == 201 and key["service_id"] == svc["id"], key
    before = len(receiver.of(f"oncall-{tag}"))
    async with http.post(
        shared.base + "/api/events/ingest",
        json={
            "routing_key": key["key"],
            "event_action": "trigger",
            "dedup_key": f"disk-{tag}",
            "payload": {"summary": "disk full", "severity": "critical", "source": "db1"},
        },
    ) as resp:
        assert resp.status in (200, 202), await resp.text()

    async def paged_again() -> bool:
        return len(receiver.of(f"oncall-{tag}")) > before

    await wait_for(paged_again)
    await wait_for(
        lambda: _hit(receiver, f"room-{tag}", lambda m: m["message"].get("check_id") is None)
    )


async def _hit(receiver: Receiver, name: str, match: Any = None) -> bool:
    return any(match is None or match(m) for m in receiver.of(name))


async def test_a_team_target_pages_its_leads_and_members_not_its_observers(
    shared: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    org = await admin_org(http, shared)
    tag = uuid.uuid4().hex[:6]
    people = {}
    for role in ("lead", "member", "observer"):
        token, _ = await other_org_user(shared, role="MEMBER", org_id=org)
        code, method = await call(
            http,
            shared,
            "POST",
            "/api/profile/contact-methods",
            token,
            json={"kind": "webhook", "value": receiver.url(f"{role}-{tag}"), "label": role},
        )
        assert code == 201, method
        people[role] = await me(http, shared, token)
    code, team = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/teams",
        json={
            "name": unique("On call"),
            "members": [{"user_id": uid, "role": role} for role, uid in people.items()],
        },
    )
    assert code == 201, team
    code, policy = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={
            "name": "team first",
            "steps": [{"delay_minutes": 30, "targets": [{"type": "team", "id": team["id"]}]}],
        },
    )
    assert code == 201, policy
    code, err = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={"name": "bad", "steps": [{"targets": [{"type": "team", "id": 999999}]}]},
    )
    assert code == 422 and err["detail"][0]["loc"][-1] == "id", err
    code, check = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={
            "name": unique("team-job"),
            "type": "heartbeat",
            "interval": 3600,
            "grace_period": 3600,
            "escalation_policy_id": policy["id"],
        },
    )
    assert code == 200, check
    async with http.post(shared.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200
    await wait_for(lambda: _hit(receiver, f"lead-{tag}"))
    await wait_for(lambda: _hit(receiver, f"member-{tag}"))
    code, page = await api(http, shared, "GET", f"/api/checks/{check['id']}/incidents")
    iid = page["incidents"][0]["id"]
    code, tl = await api(
        http, shared, "GET", f"/api/organizations/{org}/incidents/check/{iid}/timeline"
    )
    assert code == 200, tl
    (escalated,) = [e for e in tl["timeline"] if e["kind"] == "escalated"]
    paged = [p["user_id"] for p in escalated["detail"]["pages"]]
    assert sorted(paged) == sorted([people["lead"], people["member"]]), escalated
    assert receiver.of(f"observer-{tag}") == []
