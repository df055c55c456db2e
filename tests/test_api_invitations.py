"""Invitations over real HTTP, on both backends: an ADMIN invites an email with a role and
gets the same 202 whether or not the email has an account; the account joins only when
it accepts; organisations see and revoke only their own invitations, and nobody answers
an invitation addressed to someone else."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from helpers import Server, call, new_org, new_user, server_store

pytestmark = pytest.mark.both_backends

DAY = 86_400.0


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def team(
    http: aiohttp.ClientSession, server: Server, *names: str
) -> tuple[int, dict[str, tuple[int, str]]]:
    """An organisation "Team" owned by the admin, with `admin2@x` as its ADMIN (added by
    the superuser admin), and accounts `{name}@x` (not members) for `names`."""
    org = await new_org(http, server, "Team", "admin")
    users = {}
    for name in ("admin2", *names):
        users[name] = await new_user(http, server, f"{name}@x")
    code, _ = await call(
        http,
        server,
        "POST",
        f"/api/organizations/{org['id']}/members",
        json={"email": "admin2@x", "role": "ADMIN"},
    )
    assert code == 201
    return org["id"], users


async def invite(
    http: aiohttp.ClientSession,
    server: Server,
    org_id: int,
    auth: str,
    email: str,
    role: str = "MEMBER",
    **extra: Any,
) -> tuple[int, Any]:
    return await call(
        http,
        server,
        "POST",
        f"/api/organizations/{org_id}/invitations",
        auth,
        json={"email": email, "role": role, **extra},
    )


async def mine(http: aiohttp.ClientSession, server: Server, auth: str) -> list[Any]:
    code, body = await call(http, server, "GET", "/api/users/me/invitations/", auth)
    assert code == 200, body
    assert isinstance(body, list)
    return body


async def pending(http: aiohttp.ClientSession, server: Server, org_id: int, auth: str) -> Any:
    code, body = await call(http, server, "GET", f"/api/organizations/{org_id}/invitations", auth)
    assert code == 200, body
    return body


async def answer(
    http: aiohttp.ClientSession, server: Server, auth: str, invitation_id: int, verb: str
) -> tuple[int, Any]:
    return await call(
        http, server, "POST", f"/api/users/me/invitations/{invitation_id}/{verb}", auth
    )


async def test_an_invitation_answers_the_same_for_every_email_and_joins_only_on_accept(
    server: Server, http: aiohttp.ClientSession
) -> None:
    oid, users = await team(http, server, "known", "known2")
    admin2 = users["admin2"][1]
    answers = []
    before = time.time()
    for email in ("known@x", "ghost@x", "KNOWN2@x "):
        code, body = await invite(http, server, oid, admin2, email)
        assert code == 202, body
        answers.append(body)
    # `POST …/members` by anyone but a superuser is the same invitation.
    code, body = await call(
        http, server, "POST", f"/api/organizations/{oid}/members", admin2, json={"email": "g2@x"}
    )
    assert code == 202
    answers.append(body)
    assert [a["email"] for a in answers] == ["known@x", "ghost@x", "known2@x", "g2@x"]
    for a in answers:
        # Nothing about an account: no id, no name, the same fields and values.
        assert {k: v for k, v in a.items() if k not in ("email", "expires_at")} == {
            "organization_id": oid,
            "role": "MEMBER",
            "status": "invited",
        }
        assert before + 7 * DAY - 5 <= at(a["expires_at"]) <= time.time() + 7 * DAY + 5

    listed = await pending(http, server, oid, admin2)
    assert [(i["email"], i["role"], i["status"]) for i in listed] == [
        ("known@x", "MEMBER", "invited"),
        ("ghost@x", "MEMBER", "invited"),
        ("known2@x", "MEMBER", "invited"),
        ("g2@x", "MEMBER", "invited"),
    ]
    assert {i["invited_by"] for i in listed} == {users["admin2"][0]}

    # Not a member until the account accepts.
    known = users["known"][1]
    assert (await call(http, server, "GET", f"/api/organizations/{oid}", known))[0] == 404
    [offer] = await mine(http, server, known)
    assert offer["organization_id"] == oid and offer["organization_name"] == "Team"
    assert (offer["role"], offer["status"], offer["invited_by_email"]) == (
        "MEMBER",
        "invited",
        "admin2@x",
    )
    assert offer["id"] == listed[0]["id"]
    code, joined = await answer(http, server, known, offer["id"], "accept")
    assert code == 200
    assert joined == {
        "id": offer["id"],
        "organization_id": oid,
        "role": "MEMBER",
        "status": "accepted",
    }
    code, org = await call(http, server, "GET", f"/api/organizations/{oid}/", known)
    assert code == 200 and org["role"] == "MEMBER"
    code, members = await call(http, server, "GET", f"/api/organizations/{oid}/members", known)
    assert ("known@x", "MEMBER") in [(m["email"], m["role"]) for m in members]
    # Used up.
    assert (await answer(http, server, known, offer["id"], "accept"))[0] == 404
    assert await mine(http, server, known) == []
    assert "known@x" not in [i["email"] for i in await pending(http, server, oid, admin2)]

    # The invitation is addressed to the email: an account created later for it finds it.
    _, ghost = await new_user(http, server, "ghost@x")
    [offer] = await mine(http, server, ghost)
    assert (await answer(http, server, ghost, offer["id"], "accept"))[0] == 200
    assert (await call(http, server, "GET", f"/api/organizations/{oid}", ghost))[0] == 200


async def test_declining_is_not_told_to_the_organisation(
    server: Server, http: aiohttp.ClientSession
) -> None:
    oid, users = await team(http, server, "shy")
    admin2, shy = users["admin2"][1], users["shy"][1]
    assert (await invite(http, server, oid, admin2, "shy@x"))[0] == 202
    assert (await invite(http, server, oid, admin2, "ghost@x"))[0] == 202
    [offer] = await mine(http, server, shy)
    code, body = await answer(http, server, shy, offer["id"], "decline")
    assert code == 204, body
    assert await mine(http, server, shy) == []
    assert (await answer(http, server, shy, offer["id"], "accept"))[0] == 404
    assert (await answer(http, server, shy, offer["id"], "decline"))[0] == 404
    assert (await call(http, server, "GET", f"/api/organizations/{oid}", shy))[0] == 404
    # Only an account can decline: the organisation sees both invitations alike.
    listed = await pending(http, server, oid, admin2)
    assert [(i["email"], i["status"]) for i in listed] == [
        ("shy@x", "invited"),
        ("ghost@x", "invited"),
    ]
    assert listed[0].keys() == listed[1].keys()
    # Inviting again offers it again.
    assert (await invite(http, server, oid, admin2, "shy@x", "VIEWER"))[0] == 202
    [again] = await mine(http, server, shy)
    assert (again["id"], again["role"]) == (offer["id"], "VIEWER")
    assert (await answer(http, server, shy, again["id"], "accept"))[0] == 200
    code, org = await call(http, server, "GET", f"/api/organizations/{oid}", shy)
    assert code == 200 and org["role"] == "VIEWER"


async def test_inviting_again_refreshes_the_invitation_and_a_member_is_left_as_is(
    server: Server, http: aiohttp.ClientSession
) -> None:
    oid, users = await team(http, server, "late")
    admin2, late = users["admin2"][1], users["late"][1]
    code, first = await invite(http, server, oid, admin2, "late@x", "VIEWER", expires_in_days=1)
    assert code == 202 and at(first["expires_at"]) <= time.time() + DAY + 5
    [row] = await pending(http, server, oid, admin2)
    code, second = await invite(http, server, oid, admin2, "late@x", "ADMIN")
    assert code == 202 and at(second["expires_at"]) >= time.time() + 7 * DAY - 5
    [again] = await pending(http, server, oid, admin2)
    assert again["id"] == row["id"] and again["role"] == "ADMIN"
    assert again["expires_at"] == second["expires_at"]
    [offer] = await mine(http, server, late)
    assert offer["role"] == "ADMIN"

    # A member invited again: the same answer, and nothing changes.
    code, body = await invite(http, server, oid, admin2, "admin2@x", "VIEWER")
    assert code == 202 and body["status"] == "invited"
    assert [i["email"] for i in await pending(http, server, oid, admin2)] == ["late@x"]
    code, org = await call(http, server, "GET", f"/api/organizations/{oid}", admin2)
    assert org["role"] == "ADMIN"


async def test_who_may_invite_list_and_revoke(server: Server, http: aiohttp.ClientSession) -> None:
    oid, users = await team(http, server, "member", "boss", "plain")
    admin2 = users["admin2"][1]
    path = f"/api/organizations/{oid}/invitations"
    await call(
        http,
        server,
        "POST",
        f"/api/organizations/{oid}/members",
        json={"email": "member@x", "role": "MEMBER"},
    )
    member = users["member"][1]
    assert (await invite(http, server, oid, member, "x@x"))[0] == 403
    assert (await call(http, server, "GET", path, member))[0] == 403

    # Only an OWNER invites an OWNER, refreshes or revokes such an invitation.
    assert (await invite(http, server, oid, admin2, "boss@x", "OWNER"))[0] == 403
    assert (await invite(http, server, oid, "admin", "boss@x", "OWNER"))[0] == 202
    [boss] = await pending(http, server, oid, admin2)
    assert (await invite(http, server, oid, admin2, "boss@x", "MEMBER"))[0] == 403
    assert (await call(http, server, "DELETE", f"{path}/{boss['id']}", admin2))[0] == 403
    assert (await call(http, server, "DELETE", f"{path}/{boss['id']}", member))[0] == 403
    assert [i["role"] for i in await pending(http, server, oid, admin2)] == ["OWNER"]

    # An ADMIN revokes the others; a revoked invitation is gone for its account too.
    assert (await invite(http, server, oid, admin2, "plain@x", "ADMIN"))[0] == 202
    plain = users["plain"][1]
    [offer] = await mine(http, server, plain)
    code, _ = await call(http, server, "DELETE", f"{path}/{offer['id']}/", admin2)
    assert code == 204
    assert (await call(http, server, "DELETE", f"{path}/{offer['id']}", admin2))[0] == 404
    assert await mine(http, server, plain) == []
    assert (await answer(http, server, plain, offer["id"], "accept"))[0] == 404
    assert (await call(http, server, "DELETE", f"{path}/{boss['id']}"))[0] == 204
    assert await pending(http, server, oid, admin2) == []

    for body, field in (
        ({"email": "nope"}, "email"),
        ({"role": "MEMBER"}, "email"),
        ({"email": "a@x", "role": "KING"}, "role"),
        ({"email": "a@x", "expires_in_days": 0}, "expires_in_days"),
        ({"email": "a@x", "expires_in_days": 31}, "expires_in_days"),
        ({"email": "a@x" * 100}, "email"),
    ):
        code, resp = await call(http, server, "POST", path, admin2, json=body)
        assert code == 422 and [e["loc"][1] for e in resp["detail"]] == [field], (body, resp)
    assert (await call(http, server, "POST", path, admin2, data=b"{x"))[0] == 400
    assert (await call(http, server, "DELETE", f"{path}/{2**63}", admin2))[0] == 404
    assert (await answer(http, server, plain, 2**63, "accept"))[0] == 404


async def test_another_organisation_cannot_list_revoke_or_accept_invitations_not_its_own(
    server: Server, http: aiohttp.ClientSession
) -> None:
    oid, users = await team(http, server, "target", "bob")
    assert (await invite(http, server, oid, "admin", "target@x", "ADMIN"))[0] == 202
    [invitation] = await pending(http, server, oid, "admin")
    iid = invitation["id"]
    bob = users["bob"][1]
    theirs = (await new_org(http, server, "Bob's", bob))["id"]
    mine_path = f"/api/organizations/{oid}/invitations"
    for method, path, body in (
        ("GET", mine_path, None),
        ("POST", mine_path, {"email": "bob@x", "role": "OWNER"}),
        ("DELETE", f"{mine_path}/{iid}", None),
        # Another organisation's invitation through one's own organisation.
        ("DELETE", f"/api/organizations/{theirs}/invitations/{iid}", None),
        # An invitation addressed to someone else.
        ("POST", f"/api/users/me/invitations/{iid}/accept", None),
        ("POST", f"/api/users/me/invitations/{iid}/decline", None),
    ):
        code, resp = await call(http, server, method, path, bob, json=body)
        assert code == 404, (method, path, resp)
        assert "target" not in str(resp) and "Team" not in str(resp)
    assert await mine(http, server, bob) == []
    assert await pending(http, server, theirs, bob) == []
    # Bob's own invitation of the same email stays his organisation's.
    assert (await invite(http, server, theirs, bob, "target@x"))[0] == 202
    [own] = await pending(http, server, theirs, bob)
    assert own["id"] != iid and own["organization_id"] == theirs
    assert [i["id"] for i in await pending(http, server, oid, "admin")] == [iid]

    # The ADMIN of the inviting organisation cannot answer for the account either.
    admin2 = users["admin2"][1]
    assert (await answer(http, server, admin2, iid, "accept"))[0] == 404
    assert (await answer(http, server, "admin", iid, "accept"))[0] == 404
    target = users["target"][1]
    offers = await mine(http, server, target)
    assert sorted((o["organization_id"], o["role"]) for o in offers) == [
        (oid, "ADMIN"),
        (theirs, "MEMBER"),
    ]
    assert (await answer(http, server, target, iid, "accept"))[0] == 200
    code, orgs = await call(http, server, "GET", "/api/organizations", target)
    assert [(o["id"], o["role"]) for o in orgs] == [(oid, "ADMIN")]


async def test_an_invitation_expires_or_ends_with_its_inviters_standing(
    server: Server, http: aiohttp.ClientSession
) -> None:
    oid, users = await team(http, server, "slow", "later")
    admin2 = users["admin2"][1]
    assert (await invite(http, server, oid, admin2, "slow@x"))[0] == 202
    assert (await invite(http, server, oid, admin2, "later@x"))[0] == 202
    [slow, later] = await pending(http, server, oid, admin2)
    store = server_store(server)
    await store.open(migrate=False)
    try:
        async with store._write() as c:  # type: ignore[attr-defined]
            await c.execute(
                "UPDATE invitations SET expires_at = ? WHERE id = ?", time.time() - 1, slow["id"]
            )
    finally:
        await store.close()
    assert [i["email"] for i in await pending(http, server, oid, admin2)] == ["later@x"]
    assert await mine(http, server, users["slow"][1]) == []
    assert (await answer(http, server, users["slow"][1], slow["id"], "accept"))[0] == 404

    # The inviter demoted below ADMIN: what they offered is no longer on offer.
    members = f"/api/organizations/{oid}/members/{users['admin2'][0]}"
    assert (await call(http, server, "PUT", members, json={"role": "MEMBER"}))[0] == 200
    assert await pending(http, server, oid, "admin") == []
    assert await mine(http, server, users["later"][1]) == []
    assert (await answer(http, server, users["later"][1], later["id"], "accept"))[0] == 404
    later_org = f"/api/organizations/{oid}"
    assert (await call(http, server, "GET", later_org, users["later"][1]))[0] == 404


async def test_a_superuser_still_adds_an_existing_account_directly(
    server: Server, http: aiohttp.ClientSession
) -> None:
    oid, users = await team(http, server, "direct")
    assert (await invite(http, server, oid, "admin", "direct@x", "VIEWER"))[0] == 202
    members = f"/api/organizations/{oid}/members"
    code, m = await call(http, server, "POST", members, json={"email": "direct@x"})
    assert code == 201 and (m["user_id"], m["role"]) == (users["direct"][0], "MEMBER")
    # The direct add used up the invitation.
    assert await pending(http, server, oid, "admin") == []
    assert await mine(http, server, users["direct"][1]) == []
    code, m = await call(http, server, "POST", members, json={"email": "direct@x", "role": "ADMIN"})
    assert code == 200 and m["role"] == "ADMIN"
    # A superuser lists every account anyway: an unknown email is a field error.
    code, resp = await call(http, server, "POST", members, json={"email": "nobody@x"})
    assert code == 422 and resp["detail"][0]["loc"] == ["body", "email"]


async def test_an_account_that_takes_an_invited_address_cannot_accept_for_its_owner(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Emails are not verified: an account that changes its email to an address with a
    pending invitation (whose owner has no account yet) finds no invitation to accept."""
    oid, users = await team(http, server, "mallory")
    assert (await invite(http, server, oid, "admin", "newhire@x", "ADMIN"))[0] == 202
    assert len(await pending(http, server, oid, "admin")) == 1
    mallory = users["mallory"][1]
    code, me = await call(
        http,
        server,
        "PATCH",
        "/api/users/me",
        mallory,
        json={"email": "newhire@x", "current_password": "password-mallory@x"},
    )
    assert code == 200 and me["email"] == "newhire@x", me
    assert await mine(http, server, mallory) == []
    assert await pending(http, server, oid, "admin") == []
    code, orgs = await call(http, server, "GET", "/api/organizations", mallory)
    assert oid not in [o["id"] for o in orgs]
