"""Feedback over a real server on each backend: any user sends it, reads their own;
superusers read everyone's and triage it; validation names the field; another user's
feedback is not found."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from helpers import Server, api, call, other_org_user
from workflow_helpers import admin_org, loc, module_server, user_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from module_server(request, tmp_path_factory, "feedback")


async def test_feedback_is_sent_read_and_triaged(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    alice, alice_org = await other_org_user(shared)
    bob, _ = await other_org_user(shared)

    # Every field a client sends, an alias for the kind, unknown fields ignored.
    code, fb = await call(
        http,
        shared,
        "POST",
        "/api/feedback",
        alice,
        json={
            "kind": "feature_request",
            "message": "  Dark mode for status pages please  ",
            "page": "/status-pages",
            "organization_id": alice_org,
            "rating": 5,
        },
    )
    assert code == 201, fb
    assert (fb["kind"], fb["message"], fb["status"]) == (
        "idea",
        "Dark mode for status pages please",
        "new",
    )
    assert fb["organization_id"] == alice_org and fb["response"] is None
    # Zero values: no page, no organisation.
    code, other = await call(
        http,
        shared,
        "POST",
        "/api/feedback",
        bob,
        json={"kind": "bug", "message": "typo", "page": "", "organization_id": 0},
    )
    assert code == 201 and other["page"] is None and other["organization_id"] is None, other

    for body, field in (
        ({"message": ""}, ["message"]),
        ({"message": "x" * 5001}, ["message"]),
        ({"message": "x", "kind": "rant"}, ["kind"]),
        ({"message": "x", "page": "p" * 501}, ["page"]),
        ({"message": "x", "organization_id": org}, ["organization_id"]),
    ):
        code, err = await call(http, shared, "POST", "/api/feedback", alice, json=body)
        assert code == 422 and loc(err) == field, (body, err)

    # A user sees their own only; another's is 404, and they cannot triage.
    code, mine = await call(http, shared, "GET", "/api/feedback", alice)
    assert code == 200 and [f["id"] for f in mine] == [fb["id"]], mine
    code, _ = await call(http, shared, "GET", f"/api/feedback/{fb['id']}", bob)
    assert code == 404
    code, _ = await call(
        http, shared, "PATCH", f"/api/feedback/{fb['id']}", alice, json={"status": "done"}
    )
    assert code == 403
    code, _ = await call(
        http, shared, "PATCH", f"/api/feedback/{fb['id']}", bob, json={"status": "done"}
    )
    assert code == 404

    # The superuser (the server's first admin) sees everyone's, filters, and triages.
    code, everything = await api(http, shared, "GET", "/api/feedback?limit=500")
    assert code == 200 and {fb["id"], other["id"]} <= {f["id"] for f in everything}
    code, bugs = await api(http, shared, "GET", "/api/feedback?kind=bug")
    assert code == 200 and [f["id"] for f in bugs] == [other["id"]], bugs
    code, done = await api(
        http,
        shared,
        "PATCH",
        f"/api/feedback/{fb['id']}",
        json={"status": "planned", "response": "On the roadmap", "ignored": 1},
    )
    assert code == 200, done
    assert (done["status"], done["response"]) == ("planned", "On the roadmap")
    assert done["responded_by"] is not None and done["responded_at"] is not None
    code, err = await api(
        http, shared, "PATCH", f"/api/feedback/{fb['id']}", json={"status": "maybe"}
    )
    assert code == 422 and loc(err) == ["status"], err
    # The sender reads the answer.
    code, seen = await call(http, shared, "GET", f"/api/feedback/{fb['id']}", alice)
    assert code == 200 and seen["response"] == "On the roadmap"
    code, planned = await api(http, shared, "GET", "/api/feedback?status=planned")
    assert code == 200 and [f["id"] for f in planned] == [fb["id"]]
    code, _ = await call(http, shared, "GET", "/api/feedback", None)
    assert code == 401


async def test_feedback_pages_zero_values_and_a_promoted_superuser(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    carol, _ = await other_org_user(shared)
    sent = []
    for i in range(5):
        # Zero values: an empty kind is the default, null page and organisation.
        code, fb = await call(
            http,
            shared,
            "POST",
            "/api/feedback",
            carol,
            json={"kind": "", "message": f"note {i}", "page": None, "organization_id": None},
        )
        assert code == 201 and fb["kind"] == "other" and fb["page"] is None, fb
        sent.append(fb["id"])

    # Pages of her own, newest first, with the total.
    seen: list[int] = []
    for offset in (0, 2, 4):
        async with http.get(
            shared.base + f"/api/feedback?limit=2&offset={offset}",
            headers={"Authorization": f"Bearer {carol}"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["X-Total-Count"] == "5"
            seen += [f["id"] for f in await resp.json()]
    assert seen == sorted(sent, reverse=True)
    code, err = await call(http, shared, "GET", "/api/feedback?status=maybe", carol)
    assert code in (400, 422), err

    # Triage with zero values: an empty status changes nothing, an empty response takes
    # the answer back.
    fid = sent[0]
    code, answered = await api(
        http, shared, "PATCH", f"/api/feedback/{fid}", json={"status": "", "response": "Thanks"}
    )
    assert code == 200 and answered["status"] == "new" and answered["response"] == "Thanks"
    code, taken_back = await api(
        http, shared, "PATCH", f"/api/feedback/{fid}", json={"status": "triaged", "response": ""}
    )
    assert code == 200, taken_back
    assert taken_back["status"] == "triaged" and taken_back["response"] is None
    assert taken_back["responded_by"] is None and taken_back["responded_at"] is None

    # A user the superuser promotes (`is_superuser` on /api/users/{id}) sees and triages
    # everyone's; demoted, only their own again.
    dave, _ = await other_org_user(shared)
    dave_id = await user_id(http, shared, dave)
    code, _ = await call(http, shared, "GET", f"/api/feedback/{fid}", dave)
    assert code == 404
    code, user = await api(
        http, shared, "PATCH", f"/api/users/{dave_id}", json={"is_superuser": True}
    )
    assert code == 200 and user["is_superuser"] is True, user
    code, seen_by_dave = await call(http, shared, "GET", f"/api/feedback/{fid}", dave)
    assert code == 200 and seen_by_dave["id"] == fid
    code, done = await call(
        http,
        shared,
        "PATCH",
        f"/api/feedback/{fid}",
        dave,
        json={"status": "done", "response": "Fixed"},
    )
    assert code == 200 and done["responded_by"] == dave_id, done
    code, _ = await api(
        http, shared, "PATCH", f"/api/users/{dave_id}", json={"is_superuser": False}
    )
    assert code == 200
    code, _ = await call(http, shared, "GET", f"/api/feedback/{fid}", dave)
    assert code == 404
    code, _ = await call(http, shared, "GET", "/api/feedback/999999", carol)
    assert code == 404
