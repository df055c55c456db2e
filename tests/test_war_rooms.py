"""War rooms over a real server on each backend: opened for a real incident (a heartbeat
check failed by a ping), one open room per incident (409 naming it), members, the running
log, closing with a summary, the incident's timeline, the live events in the SSE stream;
validation, roles and isolation between organisations; the SysTeam body shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from helpers import Server, call, is_event, other_org_user, wait_for
from workflow_helpers import loc, module_server, unique, user_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from module_server(request, tmp_path_factory, "war-rooms")


async def incident(http: aiohttp.ClientSession, server: Server, token: str) -> int:
    code, check = await call(
        http,
        server,
        "POST",
        "/api/checks/",
        token,
        json={"name": unique("job"), "type": "heartbeat", "interval": 3600, "grace_period": 3600},
    )
    assert code == 200, check
    async with http.post(server.base + f"/api/ping/{check['uuid']}/fail") as resp:
        assert resp.status == 200

    async def opened() -> Any:
        code, page = await call(http, server, "GET", f"/api/checks/{check['id']}/incidents", token)
        assert code == 200, page
        return page["incidents"][0]["id"] if page["incidents"] else None

    return int(await wait_for(opened))


def rooms(org: int, rid: int | None = None, tail: str = "") -> str:
    base = f"/api/organizations/{org}/war-rooms"
    return (base if rid is None else f"{base}/{rid}") + tail


async def test_a_war_room_from_open_to_close_live_and_on_the_timeline(
    shared: Server, http: aiohttp.ClientSession, sse: Any
) -> None:
    token, org = await other_org_user(shared)
    member_token, _ = await other_org_user(shared, role="MEMBER", org_id=org)
    me = await user_id(http, shared, token)
    mate = await user_id(http, shared, member_token)
    iid = await incident(http, shared, token)
    async with sse(shared, token=token) as stream:
        code, room = await call(
            http,
            shared,
            "POST",
            rooms(org),
            member_token,
            json={"incident_id": iid, "title": "Checkout down", "member_ids": [me]},
        )
        assert code == 201, room
        assert (room["incident_id"], room["status"], room["title"], room["opened_by"]) == (
            iid,
            "open",
            "Checkout down",
            mate,
        )
        await stream.wait(is_event("war_room.opened", id=room["id"], incident_id=iid))

        # One open room per incident: a second answers 409 naming the open one.
        code, err = await call(http, shared, "POST", rooms(org), token, json={"incident_id": iid})
        assert code == 409 and err["war_room_id"] == room["id"], err

        # Members: the opener is commander, member_ids participants; roles change.
        code, detail = await call(http, shared, "GET", rooms(org, room["id"]), token)
        assert code == 200, detail
        assert {(m["user_id"], m["role"]) for m in detail["members"]} == {
            (mate, "commander"),
            (me, "participant"),
        }
        code, m = await call(
            http,
            shared,
            "POST",
            rooms(org, room["id"], "/members"),
            token,
            json={"user_id": me, "role": "scribe"},
        )
        assert code == 201 and m["role"] == "scribe", m
        await stream.wait_new(is_event("war_room.updated", id=room["id"]))
        code, entry = await call(
            http,
            shared,
            "POST",
            rooms(org, room["id"], "/entries"),
            token,
            json={"body": "rolled back the deploy"},
        )
        assert code == 201 and entry["kind"] == "note" and entry["actor_id"] == me, entry
        code, _ = await call(
            http, shared, "DELETE", rooms(org, room["id"], f"/members/{mate}"), token
        )
        assert code == 204
        code, err = await call(
            http, shared, "DELETE", rooms(org, room["id"], f"/members/{mate}"), token
        )
        assert code == 404, err

        code, closed = await call(
            http,
            shared,
            "POST",
            rooms(org, room["id"], "/close"),
            token,
            json={"summary": "bad deploy, rolled back"},
        )
        assert code == 200, closed
        assert (closed["status"], closed["summary"], closed["closed_by"]) == (
            "closed",
            "bad deploy, rolled back",
            me,
        )
        assert closed["closed_at"] is not None
        await stream.wait(is_event("war_room.closed", id=room["id"], status="closed"))
    code, err = await call(
        http, shared, "POST", rooms(org, room["id"], "/close"), token, json={"summary": "again"}
    )
    assert code == 409, err
    code, err = await call(
        http, shared, "POST", rooms(org, room["id"], "/entries"), token, json={"body": "late"}
    )
    assert code == 409, err

    # The running log, oldest first.
    code, detail = await call(http, shared, "GET", rooms(org, room["id"]), token)
    assert code == 200, detail
    assert [e["kind"] for e in detail["entries"]] == [
        "opened",
        "member_added",
        "member_added",
        "member_updated",
        "note",
        "member_removed",
        "closed",
    ], detail["entries"]
    assert [m["user_id"] for m in detail["members"]] == [me]

    # The incident's timeline; lists and filters; a new room once the first is closed.
    code, tl = await call(
        http, shared, "GET", f"/api/organizations/{org}/incidents/check/{iid}/timeline", token
    )
    assert code == 200, tl
    kinds = [(e["kind"], e["detail"].get("war_room_id")) for e in tl["timeline"]]
    assert ("war_room_opened", room["id"]) in kinds and ("war_room_closed", room["id"]) in kinds
    code, again = await call(http, shared, "POST", rooms(org), token, json={"incident_id": iid})
    assert code == 201 and again["title"].startswith("War room: "), again
    code, listed = await call(http, shared, "GET", rooms(org, tail=f"?incident_id={iid}"), token)
    assert code == 200 and [r["id"] for r in listed] == [again["id"], room["id"]], listed
    code, listed = await call(http, shared, "GET", rooms(org, tail="?status=closed"), token)
    assert code == 200 and [r["id"] for r in listed] == [room["id"]], listed


async def test_validation_roles_and_isolation(shared: Server, http: aiohttp.ClientSession) -> None:
    token, org = await other_org_user(shared)
    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=org)
    stranger, other_org = await other_org_user(shared)
    stranger_id = await user_id(http, shared, stranger)
    iid = await incident(http, shared, token)
    other_iid = await incident(http, shared, stranger)

    for body, where in (
        ({}, ["incident_id"]),
        ({"incident_id": "1"}, ["incident_id"]),
        ({"incident_id": other_iid}, ["incident_id"]),
        ({"incident_id": iid, "member_ids": [stranger_id]}, ["member_ids", 0]),
        ({"incident_id": iid, "title": "x" * 201}, ["title"]),
    ):
        code, err = await call(http, shared, "POST", rooms(org), token, json=body)
        assert code == 422 and loc(err) == where, (body, err)

    code, err = await call(http, shared, "POST", rooms(org), viewer, json={"incident_id": iid})
    assert code == 403, err
    # SysTeam-style: unknown fields ignored, null member list, zero values.
    code, room = await call(
        http,
        shared,
        "POST",
        rooms(org),
        token,
        json={"incident_id": iid, "title": None, "member_ids": None, "severity": "high"},
    )
    assert code == 201, room
    rid = room["id"]
    code, err = await call(
        http, shared, "POST", rooms(org, rid, "/members"), token, json={"user_id": stranger_id}
    )
    assert code == 422 and loc(err) == ["user_id"], err
    code, err = await call(
        http,
        shared,
        "POST",
        rooms(org, rid, "/members"),
        token,
        json={"user_id": stranger_id, "role": "king"},
    )
    assert code == 422 and loc(err) == ["role"], err
    code, err = await call(http, shared, "POST", rooms(org, rid, "/entries"), token, json={})
    assert code == 422 and loc(err) == ["body"], err

    # Viewers read; they change nothing.
    code, one = await call(http, shared, "GET", rooms(org, rid), viewer)
    assert code == 200 and one["id"] == rid, one
    for method, tail, body in (
        ("POST", "/close", {"summary": "x"}),
        ("POST", "/members", {"user_id": 1}),
        ("POST", "/entries", {"body": "x"}),
        ("DELETE", "/members/1", None),
    ):
        code, err = await call(http, shared, method, rooms(org, rid, tail), viewer, json=body)
        assert code == 403, (method, tail, err)

    # Another organisation gets 404 for every id, through its own organisation too.
    for method, path, body in (
        ("GET", rooms(org), None),
        ("POST", rooms(org), {"incident_id": iid}),
        ("GET", rooms(org, rid), None),
        ("POST", rooms(org, rid, "/close"), {"summary": "x"}),
        ("POST", rooms(org, rid, "/members"), {"user_id": stranger_id}),
        ("DELETE", rooms(org, rid, "/members/1"), None),
        ("POST", rooms(org, rid, "/entries"), {"body": "x"}),
        ("GET", rooms(other_org, rid), None),
        ("POST", rooms(other_org, rid, "/close"), {"summary": "x"}),
        ("POST", rooms(other_org, rid, "/members"), {"user_id": stranger_id}),
        ("DELETE", rooms(other_org, rid, f"/members/{stranger_id}"), None),
        ("POST", rooms(other_org, rid, "/entries"), {"body": "x"}),
    ):
        code, err = await call(http, shared, method, path, stranger, json=body)
        assert code == 404, (method, path, err)
    code, listed = await call(http, shared, "GET", rooms(other_org), stranger)
    assert code == 200 and listed == [], listed
    code, err = await call(
        http, shared, "POST", rooms(other_org), stranger, json={"incident_id": iid}
    )
    assert code == 422 and loc(err) == ["incident_id"], err

    # Closing with an empty summary (a zero value) is allowed.
    code, closed = await call(
        http, shared, "POST", rooms(org, rid, "/close"), token, json={"summary": "", "x": 1}
    )
    assert code == 200 and closed["summary"] == "", closed
