"""Escalation policies over a real server: CRUD, validation, roles and isolation; and
paging through them: step 1 at once, step 2 after its delay when nobody acknowledges,
nothing more after an acknowledgement, a step pending across a restart fires once,
on-call schedules and channels as targets, every page on the incident's timeline. The
pages reach real webhook receivers on loopback (people's webhook contact methods)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from helpers import Server, api, call, other_org_user, wait_for
from paging_helpers import Receiver
from tocsin.paging.policies import Policy, Step, Target, after

# -- the walk through a policy (pure) ----------------------------------------------------


def policy(*delays: int, repeat: int = 0) -> Policy:
    return Policy(1, 1, "p", tuple(Step(d, (Target("user", 1),)) for d in delays), repeat)


def test_steps_follow_each_other_by_their_delays_from_the_due_time() -> None:
    p = policy(60, 120)
    first = after(p, 0, 0, due=1000.0, now=1000.5)
    assert (first.step, first.round, first.due) == (1, 0, 1060.0)
    last = after(p, 1, 0, due=1060.0, now=1061.0)
    assert (last.step, last.round, last.due) == (2, 0, None)


def test_a_repeating_policy_starts_again_after_the_last_delay_then_stops() -> None:
    p = policy(60, 120, repeat=1)
    again = after(p, 1, 0, due=1060.0, now=1060.0)
    assert (again.step, again.round, again.due) == (0, 1, 1180.0)
    done = after(p, 1, 1, due=1300.0, now=1300.0)
    assert done.due is None


def test_a_step_fired_late_never_schedules_the_next_in_the_past() -> None:
    nxt = after(policy(60, 60), 0, 0, due=1000.0, now=5000.0)
    assert nxt.due == 5000.0


# -- receivers ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    runner = await r.start()
    yield r
    await runner.cleanup()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("escalation") / "data")
    s.start()
    yield s
    s.kill()


@dataclass
class Person:
    user_id: int
    token: str
    name: str


async def admin_org(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


async def person(
    http: aiohttp.ClientSession, server: Server, org: int, receiver: Receiver, name: str
) -> Person:
    """A MEMBER of `org` with a webhook contact method at `receiver/name`."""
    token, _ = await other_org_user(server, role="MEMBER", org_id=org)
    code, me = await call(http, server, "GET", "/api/profile", token)
    assert code == 200, me
    code, method = await call(
        http,
        server,
        "POST",
        "/api/profile/contact-methods",
        token,
        json={"kind": "webhook", "value": receiver.url(name), "label": name},
    )
    assert code == 201, method
    return Person(int(me["id"]), token, name)


async def new_policy(
    http: aiohttp.ClientSession, server: Server, org: int, steps: list[dict[str, Any]], **kw: Any
) -> int:
    code, row = await api(
        http,
        server,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={"name": "primary", "steps": steps, **kw},
    )
    assert code == 201, row
    return int(row["id"])


def step(delay_s: int, *targets: tuple[str, int]) -> dict[str, Any]:
    return {"delay_seconds": delay_s, "targets": [{"type": t, "id": i} for t, i in targets]}


async def failing_job(http: aiohttp.ClientSession, server: Server, policy_id: int) -> int:
    """A heartbeat check under the policy, failed by a ping: its incident's id."""
    code, check = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={
            "name": f"job-{policy_id}",
            "type": "heartbeat",
            "interval": 3600,
            "grace_period": 3600,
            "escalation_policy_id": policy_id,
        },
    )
    assert code == 200, check
    async with http.post(server.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200

    async def opened() -> Any:
        code, page = await api(http, server, "GET", f"/api/checks/{check['id']}/incidents")
        assert code == 200, page
        return page["incidents"][0]["id"] if page["incidents"] else None

    return int(await wait_for(opened))


async def timeline(http: aiohttp.ClientSession, server: Server, org: int, iid: int) -> list[Any]:
    code, body = await api(
        http, server, "GET", f"/api/organizations/{org}/incidents/check/{iid}/timeline"
    )
    assert code == 200, body
    return [e for e in body["timeline"] if e["kind"] == "escalated"]


async def incident(http: aiohttp.ClientSession, server: Server, iid: int) -> Any:
    code, body = await api(http, server, "GET", "/api/incidents?limit=200")
    assert code == 200, body
    return next(i for i in body["incidents"] if i["id"] == iid)


# -- paging ---------------------------------------------------------------------------------


async def test_nobody_acknowledges_so_step_two_pages_after_its_delay(
    shared: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    org = await admin_org(http, shared)
    a = await person(http, shared, org, receiver, "a1")
    b = await person(http, shared, org, receiver, "b1")
    pid = await new_policy(
        http, shared, org, [step(2, ("user", a.user_id)), step(60, ("user", b.user_id))]
    )
    iid = await failing_job(http, shared, pid)

    await wait_for(lambda: _has(receiver, "a1"))
    assert receiver.of("b1") == []  # not before step 1's delay is over
    await wait_for(lambda: _has(receiver, "b1"), timeout=20)
    events = await timeline(http, shared, org, iid)
    assert [(e["detail"]["step"], e["detail"]["round"]) for e in events] == [(1, 0), (2, 0)]
    assert [p["user_id"] for p in events[0]["detail"]["pages"]] == [a.user_id]
    assert [p["user_id"] for p in events[1]["detail"]["pages"]] == [b.user_id]
    assert events[0]["detail"]["pages"][0]["kind"] == "webhook"
    assert "•••" in events[0]["detail"]["pages"][0]["to"]
    # The policy is over (no repeat): nothing pending, and each page went out once.
    assert (await incident(http, shared, iid))["escalation"]["next_at"] is None
    await asyncio.sleep(1.5)
    assert len(receiver.of("a1")) == 1 and len(receiver.of("b1")) == 1

    # Each page's outcome is on the timeline too: who, how, when.
    async def delivered() -> Any:
        code, body = await api(
            http, shared, "GET", f"/api/organizations/{org}/incidents/check/{iid}/timeline"
        )
        assert code == 200, body
        found = [e for e in body["timeline"] if e["kind"] == "page_delivered"]
        return found if len(found) == 2 else None

    outcomes = await wait_for(delivered)
    assert [e["detail"]["user_id"] for e in outcomes] == [a.user_id, b.user_id]
    assert {e["detail"]["kind"] for e in outcomes} == {"webhook"}
    assert all("•••" in e["detail"]["to"] for e in outcomes)


async def test_an_acknowledgement_between_steps_stops_the_escalation(
    shared: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    org = await admin_org(http, shared)
    a = await person(http, shared, org, receiver, "a2")
    b = await person(http, shared, org, receiver, "b2")
    pid = await new_policy(
        http, shared, org, [step(3, ("user", a.user_id)), step(60, ("user", b.user_id))]
    )
    iid = await failing_job(http, shared, pid)
    await wait_for(lambda: _has(receiver, "a2"))
    inc = await incident(http, shared, iid)
    assert inc["escalation"]["next_step"] == 2 and inc["escalation"]["next_at"] is not None
    code, acked = await api(
        http, shared, "POST", f"/api/checks/{inc['check_id']}/incidents/{iid}/ack"
    )
    assert code == 200, acked
    assert acked["escalation"]["next_at"] is None
    await asyncio.sleep(4.5)  # past step 2's due time
    assert receiver.of("b2") == []
    assert len(await timeline(http, shared, org, iid)) == 1


async def test_on_call_schedules_and_channels_are_paged_as_targets(
    shared: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    org = await admin_org(http, shared)
    on_call = await person(http, shared, org, receiver, "oncall3")
    code, sched = await api(
        http,
        shared,
        "POST",
        f"/api/organizations/{org}/oncall-schedules",
        json={"name": "primary", "participants": [on_call.user_id], "start": "2020-01-01"},
    )
    assert code == 201, sched
    code, channel = await api(
        http,
        shared,
        "POST",
        "/api/notification-channels/",
        json={
            "name": "ops room",
            "channel_type": "webhook",
            "config": {"url": receiver.url("room3")},
        },
    )
    assert code == 201, channel
    pid = await new_policy(
        http, shared, org, [step(60, ("schedule", sched["id"]), ("channel", channel["id"]))]
    )
    iid = await failing_job(http, shared, pid)
    await wait_for(lambda: _has(receiver, "oncall3"))
    await wait_for(lambda: _has_event(receiver, "room3", "escalated"))
    (event,) = await timeline(http, shared, org, iid)
    assert [p["user_id"] for p in event["detail"]["pages"]] == [on_call.user_id]
    assert event["detail"]["channels"] == [channel["id"]]


async def test_a_user_without_a_contact_method_is_recorded_as_unreachable(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    _token, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    code, members = await api(http, shared, "GET", f"/api/organizations/{org}/members")
    assert code == 200
    silent = max(m["user_id"] for m in members)
    pid = await new_policy(http, shared, org, [step(60, ("user", silent))])
    iid = await failing_job(http, shared, pid)

    async def recorded() -> Any:
        return await timeline(http, shared, org, iid)

    (event,) = await wait_for(recorded)
    assert event["detail"]["pages"] == []
    assert event["detail"]["unreachable"] == [
        {"type": "user", "id": silent, "reason": "no verified contact method"}
    ]


async def test_a_step_pending_across_a_restart_fires_once(
    tmp_path: Path, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        org = await admin_org(http, server)
        a = await person(http, server, org, receiver, "a4")
        b = await person(http, server, org, receiver, "b4")
        pid = await new_policy(
            http, server, org, [step(3, ("user", a.user_id)), step(60, ("user", b.user_id))]
        )
        iid = await failing_job(http, server, pid)
        await wait_for(lambda: _has(receiver, "a4"))
        due = (await incident(http, server, iid))["escalation"]["next_at"]
        assert due is not None
        server.stop()
        await asyncio.sleep(4)  # step 2 falls due while the server is down
        assert receiver.of("b4") == []
        server.start()
        await wait_for(lambda: _has(receiver, "b4"), timeout=20)
        await asyncio.sleep(1.5)
        assert len(receiver.of("b4")) == 1 and len(receiver.of("a4")) == 1
        events = await timeline(http, server, org, iid)
        assert [e["detail"]["step"] for e in events] == [1, 2]
    finally:
        server.kill()


async def _has(receiver: Receiver, name: str) -> bool:
    return bool(receiver.of(name))


async def _has_event(receiver: Receiver, name: str, event: str) -> bool:
    return any(h.get("event") == event for h in receiver.of(name))


# -- the API --------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_policies_crud_validation_roles_and_isolation(
    server: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, server)
    member_token, _ = await other_org_user(server, role="MEMBER", org_id=org)
    code, members = await api(http, server, "GET", f"/api/organizations/{org}/members")
    member = max(m["user_id"] for m in members)
    base = f"/api/organizations/{org}/escalation-policies"

    code, created = await api(
        http,
        server,
        "POST",
        base,
        json={
            "name": "primary",
            "repeat_count": 1,
            "steps": [
                {"delay_minutes": 5, "targets": [{"type": "user", "id": member}]},
                {"targets": [{"type": "user", "id": member}]},
            ],
        },
    )
    assert code == 201, created
    assert [s["delay_seconds"] for s in created["steps"]] == [300, 1800]
    assert created["steps"][0]["delay_minutes"] == 5 and created["repeat_count"] == 1
    pid = created["id"]
    assert (await api(http, server, "GET", f"{base}/{pid}"))[1] == created
    code, listed = await api(http, server, "GET", base)
    assert code == 200 and [p["id"] for p in listed] == [pid]
    code, renamed = await api(http, server, "PUT", f"{base}/{pid}", json={"name": "night"})
    assert code == 200 and renamed["name"] == "night" and renamed["steps"] == created["steps"]

    # Validation names the field.
    for body, loc in (
        ({"steps": [{"targets": [{"type": "user", "id": member}]}]}, ["body", "name"]),
        ({"name": "x", "steps": []}, ["body", "steps"]),
        (
            {"name": "x", "steps": [{"targets": [{"type": "user", "id": 999_999}]}]},
            ["body", "steps", 0, "targets", 0, "id"],
        ),
        (
            {"name": "x", "steps": [{"targets": [{"type": "squad", "id": 1}]}]},
            ["body", "steps", 0, "targets", 0, "type"],
        ),
        (
            {"name": "x", "steps": [{"delay_seconds": -1, "targets": [{"type": "user", "id": 1}]}]},
            ["body", "steps", 0, "delay_seconds"],
        ),
        (
            {
                "name": "x",
                "repeat_count": 99,
                "steps": [{"targets": [{"type": "user", "id": member}]}],
            },
            ["body", "repeat_count"],
        ),
    ):
        code, err = await api(http, server, "POST", base, json=body)
        assert code == 422, (body, err)
        assert err["detail"][0]["loc"] == loc, (body, err)
    assert (await api(http, server, "GET", base))[1] == [renamed]

    # A check names only a policy of its own organisation.
    code, err = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": "j", "type": "heartbeat", "interval": 60, "escalation_policy_id": 999_999},
    )
    assert code == 422 and err["detail"][0]["loc"] == ["body", "escalation_policy_id"], err

    # Roles: a MEMBER reads, only an ADMIN changes.
    assert (await call(http, server, "GET", f"{base}/{pid}", member_token))[0] == 200
    code, _ = await call(http, server, "PUT", f"{base}/{pid}", member_token, json={"name": "m"})
    assert code == 403
    assert (await call(http, server, "DELETE", f"{base}/{pid}", member_token))[0] == 403

    # Another organisation sees none of it and cannot point at it.
    stranger, other = await other_org_user(server)
    for method in ("GET", "PUT", "DELETE"):
        code, _ = await call(http, server, method, f"{base}/{pid}", stranger, json={"name": "s"})
        assert code in (403, 404), method
        code, _ = await call(
            http,
            server,
            method,
            f"/api/organizations/{other}/escalation-policies/{pid}",
            stranger,
            json={"name": "s"},
        )
        assert code == 404, method
    code, err = await call(
        http,
        server,
        "POST",
        "/api/checks/",
        stranger,
        json={"name": "j", "type": "heartbeat", "interval": 60, "escalation_policy_id": pid},
    )
    assert code == 422 and err["detail"][0]["loc"] == ["body", "escalation_policy_id"], err
    code, err = await call(
        http,
        server,
        "POST",
        f"/api/organizations/{other}/escalation-policies",
        stranger,
        json={"name": "x", "steps": [{"targets": [{"type": "user", "id": member}]}]},
    )
    assert code == 422, err  # not a member of their organisation

    # Deleting it clears it from the checks that used it, in the store and in the
    # engine: the check's next incident does not escalate.
    code, check = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": "j", "type": "heartbeat", "interval": 60, "escalation_policy_id": pid},
    )
    assert code == 200 and check["escalation_policy_id"] == pid
    assert (await api(http, server, "DELETE", f"{base}/{pid}"))[0] == 204
    assert (await api(http, server, "GET", f"{base}/{pid}"))[0] == 404
    code, check = await api(http, server, "GET", f"/api/checks/{check['id']}")
    assert code == 200 and check["escalation_policy_id"] is None
    async with http.post(server.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200

    async def opened() -> Any:
        code, page = await api(http, server, "GET", f"/api/checks/{check['id']}/incidents")
        assert code == 200, page
        return page["incidents"][0] if page["incidents"] else None

    assert (await wait_for(opened))["escalation"] is None
