"""Logins, sessions, tokens, organisations, members, projects and users over real HTTP
against `tocsin serve`: who may do what, and that one organisation cannot see another."""

from __future__ import annotations

import os
import stat
from typing import Any

import aiohttp
import pytest

from helpers import Server, call, new_org, new_user, session, wait_for
from tocsin.api.auth import LoginThrottle

FORM = "application/x-www-form-urlencoded"


def admin_password(server: Server) -> str:
    creds = (server.data_dir / "initial-credentials").read_text()
    return dict(line.split("=", 1) for line in creds.split())["password"]


async def login(
    http: aiohttp.ClientSession, server: Server, username: str, password: str
) -> aiohttp.ClientResponse:
    async with http.post(
        server.base + "/api/auth/token",
        data={"username": username, "password": password},
    ) as resp:
        await resp.read()
        return resp


def loc_fields(body: Any) -> list[Any]:
    return [e["loc"][1] if len(e["loc"]) > 1 else None for e in body["detail"]]


# -- logins and sessions -------------------------------------------------------------------


async def test_a_login_gives_a_session_that_works_as_bearer_and_as_cookie(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        server.base + "/api/auth/token",
        data={"username": "admin@localhost", "password": admin_password(server)},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
        cookie = resp.headers["Set-Cookie"]
    assert body["token_type"] == "bearer"
    jwt = body["access_token"]
    key = server.data_dir / "jwt.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert jwt.count(".") == 2
    assert f"access_token={jwt}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie

    code, me = await call(http, server, "GET", "/api/users/me", jwt)
    assert code == 200 and me["email"] == "admin@localhost"
    code, me = await call(
        http, server, "GET", "/api/users/me", None, headers={"Cookie": f"access_token={jwt}"}
    )
    assert code == 200 and me["email"] == "admin@localhost"
    assert "password_hash" not in me

    tampered = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    for headers in (
        {"Authorization": f"Bearer {tampered}"},
        {"Cookie": f"access_token={tampered}"},
        {"Authorization": "Bearer not.a.jwt"},
        {},
    ):
        code, body = await call(http, server, "GET", "/api/users/me", None, headers=headers)
        assert code == 401, headers
        assert "detail" in body
    async with http.post(server.base + "/api/auth/logout") as resp:
        assert resp.status == 204
        assert resp.cookies["access_token"].value == ""
    # A JSON body is accepted too, for clients that do not send forms.
    code, body = await call(
        http,
        server,
        "POST",
        "/api/auth/token",
        None,
        json={"username": "ADMIN@localhost", "password": admin_password(server)},
    )
    assert code == 200 and body["token_type"] == "bearer"


async def test_wrong_credentials_are_refused_and_repeated_failures_are_throttled(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await new_user(http, server, "other@x")
    for username in ("admin@localhost", "nobody@x"):
        resp = await login(http, server, username, "wrong")
        assert resp.status == 401
    code, body = await call(
        http, server, "POST", "/api/auth/token", None, data={"username": "a", "password": "b"}
    )
    assert (code, body) == (401, {"detail": "Incorrect username or password"})

    for _ in range(4):  # five failures in all for admin@localhost from this address
        assert (await login(http, server, "admin@localhost", "wrong")).status == 401
    # Now even the right password waits: the guesser cannot tell it was right.
    resp = await login(http, server, "admin@localhost", admin_password(server))
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 900
    # Another account from the same address is not held up.
    assert (await login(http, server, "other@x", "password-other@x")).status == 200


async def test_login_input_is_validated(server: Server, http: aiohttp.ClientSession) -> None:
    code, body = await call(http, server, "POST", "/api/auth/token", None, data={"password": "x"})
    assert code == 422 and loc_fields(body) == ["username"]
    code, body = await call(
        http, server, "POST", "/api/auth/token", None, data={"username": "x", "password": ""}
    )
    assert code == 422 and loc_fields(body) == ["password"]
    code, body = await call(
        http,
        server,
        "POST",
        "/api/auth/token",
        None,
        data=b'{"username": ',
        headers={"Content-Type": "application/json"},
    )
    assert code == 400


@pytest.mark.both_backends
async def test_personal_access_tokens_are_shown_once_and_revoked_at_once(
    server: Server, http: aiohttp.ClientSession
) -> None:
    code, created = await call(http, server, "POST", "/api/users/me/tokens", json={"name": "ci"})
    assert code == 201
    token = created["token"]
    assert token.startswith("pat_") and token.startswith(created["prefix"])
    code, me = await call(http, server, "GET", "/api/users/me", token)
    assert code == 200 and me["email"] == "admin@localhost"

    code, listed = await call(http, server, "GET", "/api/users/me/tokens/")
    assert code == 200
    assert [t["name"] for t in listed] == ["initial", "ci"]

    # Each was used once at least (the stamp is written off the request's path).
    async def both_used() -> bool:
        _, rows = await call(http, server, "GET", "/api/users/me/tokens")
        return all(t["last_used_at"] is not None for t in rows)

    await wait_for(both_used)
    assert all("token" not in t for t in listed)
    assert token not in str(listed)

    code, _ = await call(http, server, "DELETE", f"/api/users/me/tokens/{created['id']}")
    assert code == 204
    # The token was just used (and so cached); revocation still holds at once.
    code, body = await call(http, server, "GET", "/api/users/me", token)
    assert code == 401 and body["detail"] == "Invalid or revoked token"
    code, _ = await call(http, server, "DELETE", f"/api/users/me/tokens/{created['id']}")
    assert code == 404
    code, listed = await call(http, server, "GET", "/api/users/me/tokens")
    assert listed[1]["revoked_at"] is not None

    # Someone else's token cannot be revoked (nor found).
    _, other = await new_user(http, server, "b@x")
    code, _ = await call(http, server, "DELETE", f"/api/users/me/tokens/{listed[0]['id']}", other)
    assert code == 404
    assert (await call(http, server, "GET", "/api/users/me"))[0] == 200

    for body, field in (
        ({"name": ""}, "name"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
    ):
        code, resp = await call(http, server, "POST", "/api/users/me/tokens", json=body)
        assert code == 422 and loc_fields(resp) == [field], resp
    code, _ = await call(http, server, "POST", "/api/users/me/tokens", data=b"{nope")
    assert code == 400


# -- users ---------------------------------------------------------------------------------


async def test_users_update_themselves_and_a_new_password_ends_older_sessions(
    server: Server, http: aiohttp.ClientSession
) -> None:
    uid, jwt = await new_user(http, server, "u@x")
    code, me = await call(http, server, "PATCH", "/api/users/me", jwt, json={"full_name": "U Ser"})
    assert code == 200 and me["full_name"] == "U Ser" and me["id"] == uid
    assert "password_hash" not in me and "password" not in me

    change = {"password": "a-new-password"}
    code, body = await call(http, server, "PATCH", "/api/users/me", jwt, json=change)
    assert code == 422 and loc_fields(body) == ["current_password"]
    code, body = await call(
        http, server, "PATCH", "/api/users/me", jwt, json={**change, "current_password": "bad"}
    )
    assert code == 422 and loc_fields(body) == ["current_password"]
    async with http.patch(
        server.base + "/api/users/me",
        headers={"Cookie": f"access_token={jwt}"},
        json={**change, "current_password": "password-u@x"},
    ) as resp:
        assert resp.status == 200
        renewed = resp.cookies["access_token"].value
    assert (await call(http, server, "GET", "/api/users/me", jwt))[0] == 401
    # The browser that changed the password was handed a fresh session.
    assert (await call(http, server, "GET", "/api/users/me", renewed))[0] == 200
    assert (await login(http, server, "u@x", "password-u@x")).status == 401
    fresh = await session(http, server, "u@x", "a-new-password")
    assert (await call(http, server, "GET", "/api/users/me", fresh))[0] == 200

    for body, field in (
        ({"email": "not-an-email", "current_password": "a-new-password"}, "email"),
        ({"password": "short", "current_password": "a-new-password"}, "password"),
        ({"full_name": None}, "full_name"),
        ({"full_name": "x" * 201}, "full_name"),
    ):
        code, resp = await call(http, server, "PATCH", "/api/users/me", fresh, json=body)
        assert code == 422 and field in loc_fields(resp), (body, resp)
    code, _ = await call(http, server, "PATCH", "/api/users/me", fresh, data=b"[")
    assert code == 400
    # Taking an email someone already has is a conflict.
    code, _ = await call(
        http,
        server,
        "PATCH",
        "/api/users/me",
        fresh,
        json={"email": "admin@localhost", "current_password": "a-new-password"},
    )
    assert code == 409


async def test_organisation_names_reveal_nothing_about_other_organisations(
    server: Server, http: aiohttp.ClientSession
) -> None:
    code, mine = await call(http, server, "POST", "/api/organizations/", json={"name": "Acme"})
    assert code == 201
    _, stranger = await new_user(http, server, "stranger@x")
    # A name another organisation has is neither refused nor taken over.
    code, theirs = await call(
        http, server, "POST", "/api/organizations/", stranger, json={"name": "Acme"}
    )
    assert code == 201 and theirs["id"] != mine["id"]
    code, renamed = await call(
        http,
        server,
        "PUT",
        f"/api/organizations/{theirs['id']}",
        stranger,
        json={"name": "Default"},
    )
    assert code == 200 and renamed["name"] == "Default"
    _, listed = await call(http, server, "GET", "/api/organizations/", stranger)
    assert [o["id"] for o in listed] == [theirs["id"]]


async def test_notification_preferences_round_trip(
    server: Server, http: aiohttp.ClientSession
) -> None:
    code, prefs = await call(http, server, "GET", "/api/users/me/notification-preferences")
    assert code == 200 and prefs["email_enabled"] is True and prefs["timezone"] == "UTC"
    new = {
        **prefs,
        "notify_on_degraded": False,
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "07:30",
        "timezone": "Europe/Warsaw",
    }
    code, saved = await call(
        http, server, "PUT", "/api/users/me/notification-preferences", json=new
    )
    assert code == 200 and saved == new
    assert (await call(http, server, "GET", "/api/users/me/notification-preferences/"))[1] == new
    for body, field in (
        ({"quiet_hours_start": "25:00"}, "quiet_hours_start"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"email_enabled": "perhaps"}, "email_enabled"),
    ):
        code, resp = await call(
            http, server, "PUT", "/api/users/me/notification-preferences", json=body
        )
        assert code == 422 and loc_fields(resp) == [field], resp


async def test_only_superusers_manage_users(server: Server, http: aiohttp.ClientSession) -> None:
    uid, jwt = await new_user(http, server, "plain@x")
    for method, path in (
        ("GET", "/api/users"),
        ("POST", "/api/users"),
        ("GET", "/api/users/1"),
        ("PATCH", "/api/users/1"),
        ("DELETE", "/api/users/1"),
        ("GET", f"/api/users/{uid}"),
    ):
        code, _ = await call(http, server, method, path, jwt, json={"full_name": "x"})
        assert code == 403, (method, path)

    code, users = await call(http, server, "GET", "/api/users/")
    assert code == 200 and [u["email"] for u in users] == ["admin@localhost", "plain@x"]
    assert all("password_hash" not in u for u in users)
    code, _ = await call(
        http, server, "POST", "/api/users", json={"email": "plain@x", "password": "12345678"}
    )
    assert code == 409
    for body, field in (
        ({"email": "nope", "password": "12345678"}, "email"),
        ({"email": "n@x", "password": "short"}, "password"),
        ({"password": "12345678"}, "email"),
    ):
        code, resp = await call(http, server, "POST", "/api/users", json=body)
        assert code == 422 and loc_fields(resp) == [field], resp
    code, resp = await call(http, server, "PATCH", f"/api/users/{uid}", json={"is_active": None})
    assert code == 422 and loc_fields(resp) == ["is_active"]

    code, user = await call(http, server, "PATCH", f"/api/users/{uid}", json={"full_name": "P"})
    assert code == 200 and user["full_name"] == "P"
    # Deactivation holds at once, for sessions and for tokens.
    _, pat = await call(http, server, "POST", "/api/users/me/tokens", jwt, json={"name": "t"})
    assert (await call(http, server, "GET", "/api/users/me", pat["token"]))[0] == 200
    code, user = await call(http, server, "PATCH", f"/api/users/{uid}", json={"is_active": False})
    assert code == 200 and user["is_active"] is False
    assert (await call(http, server, "GET", "/api/users/me", jwt))[0] == 401
    assert (await call(http, server, "GET", "/api/users/me", pat["token"]))[0] == 401
    assert (await login(http, server, "plain@x", "password-plain@x")).status == 401

    code, me = await call(http, server, "GET", "/api/users/me")
    assert (await call(http, server, "DELETE", f"/api/users/{me['id']}"))[0] == 409
    code, _ = await call(
        http, server, "PATCH", f"/api/users/{me['id']}", json={"is_superuser": False}
    )
    assert code == 409
    assert (await call(http, server, "DELETE", f"/api/users/{uid}"))[0] == 204
    assert (await call(http, server, "DELETE", f"/api/users/{uid}"))[0] == 404
    assert (await call(http, server, "GET", f"/api/users/{uid}"))[0] == 404
    assert (await call(http, server, "GET", "/api/users/99999999999999999999"))[0] == 404


async def test_the_only_owner_of_an_organisation_cannot_be_deleted(
    server: Server, http: aiohttp.ClientSession
) -> None:
    uid, jwt = await new_user(http, server, "owner@x")
    org = await new_org(http, server, "Solo", jwt)
    assert (await call(http, server, "DELETE", f"/api/users/{uid}"))[0] == 409
    code, _ = await call(
        http, server, "DELETE", f"/api/organizations/{org['id']}?confirm=Solo", jwt
    )
    assert code == 204
    assert (await call(http, server, "DELETE", f"/api/users/{uid}"))[0] == 204


# -- organisations -------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_organisations_are_created_read_renamed_and_deleted_with_confirmation(
    server: Server, http: aiohttp.ClientSession
) -> None:
    org = await new_org(http, server, "Acme", "admin")
    oid = org["id"]
    assert org["role"] == "OWNER" and org["name"] == "Acme" and org["default_project_id"]
    code, orgs = await call(http, server, "GET", "/api/organizations")
    assert code == 200 and [(o["name"], o["role"]) for o in orgs] == [
        ("Default", "OWNER"),
        ("Acme", "OWNER"),
    ]
    code, got = await call(http, server, "GET", f"/api/organizations/{oid}/")
    assert code == 200 and got == org
    code, renamed = await call(
        http, server, "PUT", f"/api/organizations/{oid}", json={"name": "Acme Ltd"}
    )
    assert code == 200 and renamed["name"] == "Acme Ltd"

    for body in ({"name": ""}, {}, {"name": "x" * 101}, {"name": 5}):
        for method, path in (("POST", "/api/organizations"), ("PUT", f"/api/organizations/{oid}")):
            code, resp = await call(http, server, method, path, json=body)
            assert code == 422 and loc_fields(resp) == ["name"], (method, body, resp)
    assert (await call(http, server, "PUT", f"/api/organizations/{oid}", data=b"{"))[0] == 400

    for query in ("", "?confirm=Acme", "?confirm=acme%20ltd"):
        code, resp = await call(http, server, "DELETE", f"/api/organizations/{oid}{query}")
        assert code == 422 and resp["detail"][0]["loc"] == ["query", "confirm"], query
    code, _ = await call(http, server, "DELETE", f"/api/organizations/{oid}?confirm=Acme%20Ltd")
    assert code == 204
    assert (await call(http, server, "GET", f"/api/organizations/{oid}"))[0] == 404
    code, _ = await call(http, server, "DELETE", f"/api/organizations/{oid}?confirm=Acme%20Ltd")
    assert code == 404
    assert [o["name"] for o in (await call(http, server, "GET", "/api/organizations"))[1]] == [
        "Default"
    ]


async def test_settings_and_usage(server: Server, http: aiohttp.ClientSession) -> None:
    code, settings = await call(http, server, "GET", "/api/organizations/1/settings")
    assert code == 200 and settings == {"timezone": "UTC"}
    new = {"timezone": "America/New_York", "theme": "dark"}
    code, saved = await call(http, server, "PUT", "/api/organizations/1/settings", json=new)
    assert code == 200 and saved == new
    assert (await call(http, server, "GET", "/api/organizations/1/settings/"))[1] == new
    code, resp = await call(
        http, server, "PUT", "/api/organizations/1/settings", json={"timezone": "Nowhere/Land"}
    )
    assert code == 422 and loc_fields(resp) == ["timezone"]
    assert (await call(http, server, "PUT", "/api/organizations/1/settings", data=b"}"))[0] == 400

    code, usage = await call(http, server, "GET", "/api/organizations/1/usage")
    assert code == 200
    assert usage == {
        "organization_id": 1,
        "checks": 0,
        "results_stored": 0,
        "agents": 0,
        "projects": 1,
        "members": 1,
    }
    code, check = await call(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": "c", "url": "http://127.0.0.1:9/", "interval": 3600, "org_id": 1},
    )
    assert code == 200, check
    code, usage = await call(http, server, "GET", "/api/organizations/1/usage")
    assert usage["checks"] == 1


async def join(
    http: aiohttp.ClientSession,
    server: Server,
    org_id: int,
    email: str,
    invitee: str,
    role: str = "MEMBER",
    inviter: str = "admin",
) -> None:
    """`inviter` invites `email` into the organisation and its account (`invitee`'s
    token) accepts: the way into an organisation for everyone but a superuser's add."""
    code, sent = await call(
        http,
        server,
        "POST",
        f"/api/organizations/{org_id}/invitations",
        inviter,
        json={"email": email, "role": role},
    )
    assert code == 202 and sent["status"] == "invited", sent
    code, mine = await call(http, server, "GET", "/api/users/me/invitations", invitee)
    assert code == 200, mine
    [invitation] = [i for i in mine if i["organization_id"] == org_id]
    code, joined = await call(
        http, server, "POST", f"/api/users/me/invitations/{invitation['id']}/accept", invitee
    )
    assert code == 200 and joined["role"] == role, joined


@pytest.mark.both_backends
async def test_members_are_added_with_roles_and_each_role_does_only_its_part(
    server: Server, http: aiohttp.ClientSession
) -> None:
    users = {}
    for name in ("viewer", "member", "admin2", "owner2"):
        users[name] = await new_user(http, server, f"{name}@x")
    org = await new_org(http, server, "Team", "admin")
    oid = org["id"]
    members = f"/api/organizations/{oid}/members"
    invitations = f"/api/organizations/{oid}/invitations"

    # A superuser (the admin) adds existing accounts directly...
    for name, role in (("viewer", "VIEWER"), ("admin2", "ADMIN")):
        code, m = await call(
            http, server, "POST", members, json={"email": f"{name}@x", "role": role}
        )
        assert code == 201 and m["role"] == role and m["user_id"] == users[name][0]
    # ...anyone else joins by accepting an invitation.
    member = users["member"][1]
    assert (await call(http, server, "GET", f"/api/organizations/{oid}", member))[0] == 404
    await join(http, server, oid, "member@x", member)
    # The new members see the organisation at once (no stale cached roles).
    code, got = await call(http, server, "GET", f"/api/organizations/{oid}", member)
    assert code == 200 and got["role"] == "MEMBER"
    viewer = users["viewer"][1]
    code, got = await call(http, server, "GET", f"/api/organizations/{oid}", viewer)
    assert code == 200 and got["role"] == "VIEWER"
    code, listed = await call(http, server, "GET", members, viewer)
    assert code == 200
    assert [(m["email"], m["role"]) for m in listed] == [
        ("admin@localhost", "OWNER"),
        ("viewer@x", "VIEWER"),
        ("member@x", "MEMBER"),
        ("admin2@x", "ADMIN"),
    ]

    # VIEWER reads only.
    for method, path, body in (
        ("PUT", f"/api/organizations/{oid}", {"name": "Mine"}),
        ("PUT", f"/api/organizations/{oid}/settings", {"timezone": "UTC"}),
        ("POST", f"/api/organizations/{oid}/projects", {"name": "p"}),
        ("POST", members, {"email": "owner2@x", "role": "VIEWER"}),
        ("POST", invitations, {"email": "owner2@x", "role": "VIEWER"}),
        ("GET", invitations, None),
        ("DELETE", f"/api/organizations/{oid}?confirm=Team", None),
    ):
        code, _ = await call(http, server, method, path, viewer, json=body)
        assert code == 403, (method, path)
    for path in ("", "/usage", "/settings", "/projects"):
        assert (await call(http, server, "GET", f"/api/organizations/{oid}{path}", viewer))[
            0
        ] == 200

    # MEMBER cannot manage members.
    for method, path in (("POST", members), ("POST", invitations), ("GET", invitations)):
        code, _ = await call(http, server, method, path, member, json={"email": "owner2@x"})
        assert code == 403, (method, path)
    code, _ = await call(http, server, "DELETE", f"{members}/{users['viewer'][0]}", member)
    assert code == 403

    # ADMIN manages members below OWNER only, and adds nobody without their consent:
    # adding by email is an invitation, the same answer whether the account exists.
    admin2 = users["admin2"][1]
    code, _ = await call(
        http, server, "POST", members, admin2, json={"email": "owner2@x", "role": "OWNER"}
    )
    assert code == 403
    code, sent = await call(http, server, "POST", members, admin2, json={"email": "owner2@x"})
    assert code == 202 and sent["role"] == "MEMBER" and sent["status"] == "invited"
    code, ghost = await call(http, server, "POST", members, admin2, json={"email": "ghost@x"})
    assert code == 202 and ghost.keys() == sent.keys() and ghost["email"] == "ghost@x"
    owner2 = users["owner2"][1]
    assert (await call(http, server, "GET", f"/api/organizations/{oid}", owner2))[0] == 404
    await join(http, server, oid, "owner2@x", owner2, inviter=admin2)
    # Inviting a member changes nothing; roles change through the member's route.
    code, _ = await call(
        http, server, "POST", members, admin2, json={"email": "viewer@x", "role": "MEMBER"}
    )
    assert code == 202
    code, got = await call(http, server, "GET", f"/api/organizations/{oid}", viewer)
    assert got["role"] == "VIEWER"
    code, m = await call(
        http, server, "PUT", f"{members}/{users['viewer'][0]}", admin2, json={"role": "MEMBER"}
    )
    assert code == 200 and m["role"] == "MEMBER"
    code, _ = await call(http, server, "PUT", f"{members}/1", admin2, json={"role": "VIEWER"})
    assert code == 403
    code, _ = await call(http, server, "DELETE", f"{members}/1", admin2)
    assert code == 403
    for body, field in (
        ({"email": "viewer@x", "role": "KING"}, "role"),
        ({"role": "VIEWER"}, "email"),
        ({"email": "not-an-email"}, "email"),
    ):
        code, resp = await call(http, server, "POST", members, admin2, json=body)
        assert code == 422 and loc_fields(resp) == [field], resp
    assert (await call(http, server, "POST", members, admin2, data=b"{x"))[0] == 400

    # The OWNER grants OWNER; the last OWNER cannot go.
    code, m = await call(
        http, server, "PUT", f"{members}/{users['owner2'][0]}", json={"role": "OWNER"}
    )
    assert code == 200 and m["role"] == "OWNER"
    code, _ = await call(http, server, "PUT", f"{members}/1", owner2, json={"role": "ADMIN"})
    assert code == 200
    code, _ = await call(http, server, "DELETE", f"{members}/{users['owner2'][0]}", owner2)
    assert code == 409
    code, _ = await call(
        http, server, "PUT", f"{members}/{users['owner2'][0]}", owner2, json={"role": "ADMIN"}
    )
    assert code == 409

    # Anyone may leave, and is out at once.
    code, _ = await call(http, server, "DELETE", f"{members}/{users['member'][0]}", member)
    assert code == 204
    assert (await call(http, server, "GET", f"/api/organizations/{oid}", member))[0] == 404
    assert (await call(http, server, "DELETE", f"{members}/{users['member'][0]}", owner2))[0] == 404


@pytest.mark.both_backends
async def test_one_organisation_cannot_read_change_or_learn_of_anothers(
    server: Server, http: aiohttp.ClientSession
) -> None:
    a = await new_org(http, server, "Alpha", "admin")
    code, pa = await call(
        http, server, "POST", f"/api/organizations/{a['id']}/projects", json={"name": "secret"}
    )
    assert code == 201
    _, bob = await new_user(http, server, "bob@x")
    b = await new_org(http, server, "Beta", bob)
    code, pb = await call(
        http, server, "POST", f"/api/organizations/{b['id']}/projects", bob, json={"name": "mine"}
    )
    assert code == 201

    code, orgs = await call(http, server, "GET", "/api/organizations", bob)
    assert [o["id"] for o in orgs] == [b["id"]]
    oa = f"/api/organizations/{a['id']}"
    for method, path, body in (
        ("GET", oa, None),
        ("PUT", oa, {"name": "pwned"}),
        ("DELETE", f"{oa}?confirm=Alpha", None),
        ("GET", f"{oa}/members", None),
        ("POST", f"{oa}/members", {"email": "bob@x", "role": "OWNER"}),
        ("GET", f"{oa}/invitations", None),
        ("POST", f"{oa}/invitations", {"email": "bob@x", "role": "OWNER"}),
        ("DELETE", f"{oa}/invitations/1", None),
        ("PUT", f"{oa}/members/1", {"role": "VIEWER"}),
        ("DELETE", f"{oa}/members/1", None),
        ("GET", f"{oa}/usage", None),
        ("GET", f"{oa}/settings", None),
        ("PUT", f"{oa}/settings", {"timezone": "UTC"}),
        ("GET", f"{oa}/projects", None),
        ("POST", f"{oa}/projects", {"name": "x"}),
        ("GET", f"{oa}/projects/{pa['id']}", None),
        ("PUT", f"{oa}/projects/{pa['id']}", {"name": "x"}),
        ("DELETE", f"{oa}/projects/{pa['id']}", None),
        # Another organisation's project through one's own organisation.
        ("GET", f"/api/organizations/{b['id']}/projects/{pa['id']}", None),
        ("PUT", f"/api/organizations/{b['id']}/projects/{pa['id']}", {"name": "x"}),
        ("DELETE", f"/api/organizations/{b['id']}/projects/{pa['id']}", None),
    ):
        code, resp = await call(http, server, method, path, bob, json=body)
        assert code == 404, (method, path, resp)
        assert "Alpha" not in str(resp) and "secret" not in str(resp)
    # A missing organisation answers exactly like a foreign one.
    assert await call(http, server, "GET", oa, bob) == await call(
        http, server, "GET", "/api/organizations/999999", bob
    )
    code, project = await call(http, server, "GET", f"{oa}/projects/{pa['id']}")
    assert code == 200 and project["name"] == "secret"
    code, members = await call(http, server, "GET", f"{oa}/members")
    assert [m["email"] for m in members] == ["admin@localhost"]
    assert pb["organization_id"] == b["id"]


# -- projects ------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_projects_crud_and_the_default_project_stays(
    server: Server, http: aiohttp.ClientSession
) -> None:
    base = "/api/organizations/1/projects"
    code, projects = await call(http, server, "GET", base)
    assert code == 200 and [(p["name"], p["is_default"]) for p in projects] == [("Default", True)]
    default_id = projects[0]["id"]

    code, p = await call(http, server, "POST", base + "/", json={"name": "Web", "description": "d"})
    assert code == 201 and p["name"] == "Web" and p["is_default"] is False
    assert (await call(http, server, "POST", base, json={"name": "Web"}))[0] == 409
    code, got = await call(http, server, "GET", f"{base}/{p['id']}")
    assert code == 200 and got == p
    code, upd = await call(http, server, "PUT", f"{base}/{p['id']}", json={"description": "new"})
    assert code == 200 and upd["name"] == "Web" and upd["description"] == "new"
    code, upd = await call(http, server, "PUT", f"{base}/{p['id']}", json={"name": "Site"})
    assert code == 200 and upd["name"] == "Site" and upd["description"] == "new"
    # Explicit empty values mean exactly that.
    code, upd = await call(http, server, "PUT", f"{base}/{p['id']}", json={"description": ""})
    assert code == 200 and upd["description"] == ""
    # is_default cannot be taken over through an update.
    code, upd = await call(http, server, "PUT", f"{base}/{p['id']}", json={"is_default": True})
    assert code == 200 and upd["is_default"] is False

    for method, path, body, field in (
        ("POST", base, {"name": ""}, "name"),
        ("POST", base, {}, "name"),
        ("POST", base, {"name": "x", "description": "d" * 2001}, "description"),
        ("PUT", f"{base}/{p['id']}", {"name": None}, "name"),
        ("PUT", f"{base}/{p['id']}", {"name": "x" * 101}, "name"),
    ):
        code, resp = await call(http, server, method, path, json=body)
        assert code == 422 and loc_fields(resp) == [field], (body, resp)
    assert (await call(http, server, "POST", base, data=b"{'a': 1}"))[0] == 400
    assert (await call(http, server, "GET", f"{base}?limit=0"))[0] == 422

    code, resp = await call(http, server, "DELETE", f"{base}/{default_id}")
    assert code == 409 and "default" in resp["detail"]
    assert (await call(http, server, "DELETE", f"{base}/{p['id']}"))[0] == 204
    assert (await call(http, server, "DELETE", f"{base}/{p['id']}"))[0] == 404
    assert (await call(http, server, "GET", f"{base}/{p['id']}"))[0] == 404
    assert (await call(http, server, "PUT", f"{base}/{p['id']}", json={"name": "x"}))[0] == 404


def test_the_login_throttle_backs_off_doubling_and_forgets_after_the_window() -> None:
    t = LoginThrottle(limit=3, window=100.0, backoff=10.0, max_backoff=25.0)
    for now in (0.0, 1.0):
        t.failed("u", "a", now)
        assert t.retry_after("u", "a", now) == 0
    t.failed("u", "a", 2.0)
    assert t.retry_after("u", "a", 2.0) == 10.0
    assert t.retry_after("u", "b", 2.0) == 0  # another address
    t.failed("u", "a", 12.0)
    assert t.retry_after("u", "a", 12.0) == 20.0
    t.failed("u", "a", 32.0)
    assert t.retry_after("u", "a", 32.0) == 25.0  # capped
    assert t.retry_after("u", "a", 57.0) == 0
    # Long after the window, a failure starts a fresh count.
    t.failed("u", "a", 500.0)
    assert t.retry_after("u", "a", 500.0) == 0
    t.succeeded("u", "a")
    t.failed("v", "a", 500.0)
    t.failed("v", "a", 501.0)
    t.succeeded("v", "a")
    t.failed("v", "a", 502.0)
    assert t.retry_after("v", "a", 502.0) == 0
