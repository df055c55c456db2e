"""The store's identity part on both backends: users, API tokens and memberships,
organisations and their default project, principals, owners, usage, project deletion,
and invitations."""

from __future__ import annotations

import pytest

from store_helpers import DAY, NOW, check_fields, raw_fetch, rollup, store
from tocsin.models import Result, Status
from tocsin.store import ConflictError, NotFoundError
from tocsin.store.sql import SqlStore

__all__ = ["store"]  # the fixture


# -- organisations and identity ----------------------------------------------------------


async def test_users_tokens_and_memberships(store: SqlStore) -> None:
    org = await store.create_organization("o")
    uid = await store.create_user("a@x", "hash", full_name="A")
    with pytest.raises(ConflictError):
        await store.create_user("a@x", "hash")
    await store.add_membership(org["id"], uid, "MEMBER")
    await store.add_membership(org["id"], uid, "ADMIN")  # a second add changes the role
    assert await store.list_members([org["id"]], org["id"]) == [
        {"user_id": uid, "email": "a@x", "full_name": "A", "role": "ADMIN"}
    ]
    live = await store.create_token(uid, "t", "pat_abcd", "h1")
    await store.create_token(uid, "old", "pat_efgh", "h2", expires_at=1.0)
    p = await store.principal_for_token("h1")
    assert p is not None and p.roles == {org["id"]: "ADMIN"}
    assert await store.principal_for_token("h2") is None  # expired
    assert [t["name"] for t in await store.list_tokens(uid)] == ["t", "old"]
    await store.touch_token("h1", 200.0)
    await store.touch_token("h1", 100.0)  # an older stamp arriving late changes nothing
    used = {t["name"]: t["last_used_at"] for t in await store.list_tokens(uid)}
    assert used == {"t": 200.0, "old": None}
    assert await store.revoke_token(uid, live)
    assert not await store.revoke_token(uid, live)
    assert await store.principal_for_token("h1") is None
    user = await store.update_user(uid, {"notification_preferences": {"email": False}})
    assert user is not None and user["notification_preferences"] == {"email": False}
    await store.update_user(uid, {"is_active": False})
    await store.create_token(uid, "t3", "pat_ijkl", "h3")
    assert await store.principal_for_token("h3") is None  # inactive users are refused


async def test_organisations_have_a_default_project_and_delete_with_everything(
    store: SqlStore,
) -> None:
    a = await store.create_organization("a")
    b = await store.create_organization("b")
    twin = await store.create_organization("a")  # names need not be unique
    assert twin["id"] not in (a["id"], b["id"])
    assert await store.delete_organization([twin["id"]], twin["id"])
    assert a["default_project_id"] == await store.default_project(a["id"])
    check = await store.create_check(a["id"], check_fields("c"))
    assert check["project_id"] == a["default_project_id"]
    await store.write_batch(
        [Result(check["id"], Status.UP, NOW, 1.0)], [], [rollup(check["id"], 0)]
    )
    await store.insert(
        "incidents", a["id"], {"title": "t", "started_at": NOW, "check_id": check["id"]}
    )
    updated = await store.update_organization([a["id"]], a["id"], {"settings": {"x": 1}})
    assert updated is not None and updated["settings"] == {"x": 1}
    assert await store.update_organization([b["id"]], a["id"], {"name": "z"}) is None
    assert not await store.delete_organization([b["id"]], a["id"])
    assert await store.delete_organization([a["id"]], a["id"])
    assert [o["id"] for o in await store.list_organizations([a["id"], b["id"]])] == [b["id"]]
    for table in ("checks", "results", "rollups", "incidents", "projects"):
        rows = await raw_fetch(
            store, f"SELECT COUNT(*) AS n FROM {table} WHERE organization_id = {a['id']}"
        )
        assert rows[0]["n"] == 0, table


# -- identity administration (the API's users, members and projects routes) --------------


async def test_principals_for_sessions_and_the_user_list(store: SqlStore) -> None:
    org = await store.create_organization("o")
    uid = await store.create_user("a@x", "hash-a", full_name="A")
    other = await store.create_user("b@x", "hash-b", superuser=True)
    await store.add_membership(org["id"], uid, "VIEWER")
    p = await store.principal_for_user(uid)
    assert p is not None and (p.email, p.roles) == ("a@x", {org["id"]: "VIEWER"})
    assert not p.superuser
    su = await store.principal_for_user(other)
    assert su is not None and su.superuser
    await store.create_token(other, "t", "pat_abcd", "su-token")
    by_token = await store.principal_for_token("su-token")
    assert by_token is not None and by_token.superuser
    assert await store.password_hash(uid) == "hash-a"
    assert await store.password_hash(999) is None
    users = await store.list_users(limit=10, offset=0)
    assert [(u["email"], u["is_superuser"]) for u in users] == [("a@x", False), ("b@x", True)]
    assert all("password_hash" not in u for u in users)
    assert [u["email"] for u in await store.list_users(limit=1, offset=1)] == ["b@x"]
    updated = await store.update_user(uid, {"is_superuser": True, "is_active": False})
    assert updated is not None and updated["is_superuser"] and not updated["is_active"]
    assert await store.principal_for_user(uid) is None  # inactive
    assert await store.principal_for_user(999) is None


async def test_an_organisation_always_keeps_an_owner(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    foreign = (await store.create_organization("f"))["id"]
    a = await store.create_user("a@x", "h")
    b = await store.create_user("b@x", "h")
    c = await store.create_user("c@x", "h")
    await store.add_membership(org, a, "OWNER")
    await store.add_membership(org, b, "MEMBER")
    with pytest.raises(ConflictError):
        await store.set_member_role([org], org, a, "ADMIN")
    with pytest.raises(ConflictError):
        await store.remove_membership([org], org, a)
    with pytest.raises(ConflictError):
        await store.delete_user(a)
    assert not await store.set_member_role([org], org, c, "ADMIN")  # not a member
    assert not await store.remove_membership([org], org, c)
    assert not await store.set_member_role([foreign], org, b, "ADMIN")  # out of scope
    assert not await store.remove_membership([foreign], org, b)
    assert await store.set_member_role([org], org, b, "OWNER")
    assert await store.set_member_role([org], org, a, "VIEWER")
    assert await store.remove_membership([org], org, a)
    assert [(m["user_id"], m["role"]) for m in await store.list_members([org], org)] == [
        (b, "OWNER")
    ]
    assert await store.delete_user(a)
    assert not await store.delete_user(a)
    assert await store.get_user(a) is None


async def test_usage_counts_and_project_deletion_rules(store: SqlStore) -> None:
    o = await store.create_organization("o")
    other = await store.create_organization("other")
    uid = await store.create_user("a@x", "h")
    await store.add_membership(o["id"], uid, "OWNER")
    project = await store.insert("projects", o["id"], {"name": "p", "is_default": False})
    empty = await store.insert("projects", o["id"], {"name": "e", "is_default": False})
    check = await store.create_check(o["id"], check_fields("c", project_id=project["id"]))
    await store.write_batch([Result(check["id"], Status.UP, NOW, 1.0)] * 3, [])
    await store.insert("agents", o["id"], {"name": "ag"})
    assert await store.organization_usage([o["id"]], o["id"]) == {
        "checks": 1,
        "results_stored": 3,
        "agents": 1,
        "projects": 3,
        "members": 1,
    }
    assert await store.organization_usage([other["id"]], o["id"]) is None
    assert (await store.organization_usage([other["id"]], other["id"]) or {})["checks"] == 0

    with pytest.raises(ConflictError):
        await store.delete_project([o["id"]], o["default_project_id"])
    with pytest.raises(ConflictError):
        await store.delete_project([o["id"]], project["id"])  # still holds a check
    assert not await store.delete_project([other["id"]], empty["id"])
    assert await store.delete_project([o["id"]], empty["id"])
    assert not await store.delete_project([o["id"]], empty["id"])
    await store.delete_check([o["id"]], check["id"])
    assert await store.delete_project([o["id"]], project["id"])


# -- invitations -------------------------------------------------------------------------


async def test_invitations_are_addressed_to_an_email_and_used_once(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    other = (await store.create_organization("other"))["id"]
    owner = await store.create_user("owner@x", "h")
    invitee = await store.create_user("in@x", "h")
    stranger = await store.create_user("s@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.add_membership(other, stranger, "OWNER")
    later = NOW + 7 * DAY

    # An email with an account and one without are stored alike.
    assert await store.invite([org], org, "in@x", "MEMBER", owner, NOW, later)
    assert await store.invite([org], org, "nobody@x", "VIEWER", owner, NOW, later)
    listed = await store.list_invitations([org], org, NOW)
    assert [(i["email"], i["role"], i["invited_by"]) for i in listed] == [
        ("in@x", "MEMBER", owner),
        ("nobody@x", "VIEWER", owner),
    ]
    assert await store.list_invitations([other], org, NOW) == []  # out of scope
    with pytest.raises(NotFoundError):
        await store.invite([other], org, "x@x", "MEMBER", stranger, NOW, later)
    [mine] = await store.user_invitations(invitee, NOW)
    assert (mine["organization_id"], mine["organization_name"], mine["role"]) == (
        org,
        "o",
        "MEMBER",
    )
    assert mine["invited_by_email"] == "owner@x"
    assert await store.user_invitations(stranger, NOW) == []

    # Only the account it is addressed to can answer it.
    assert await store.accept_invitation(stranger, mine["id"], NOW) is None
    assert not await store.decline_invitation(stranger, mine["id"], NOW)
    assert await store.accept_invitation(invitee, mine["id"], later) is None  # expired
    joined = await store.accept_invitation(invitee, mine["id"], NOW)
    assert joined == {"id": mine["id"], "organization_id": org, "role": "MEMBER"}
    assert await store.accept_invitation(invitee, mine["id"], NOW) is None  # used up
    members = await store.list_members([org], org)
    assert [(m["user_id"], m["role"]) for m in members] == [(owner, "OWNER"), (invitee, "MEMBER")]
    assert [i["email"] for i in await store.list_invitations([org], org, NOW)] == ["nobody@x"]

    # A member's email is not invited again; a second invitation refreshes the first.
    assert not await store.invite([org], org, "in@x", "ADMIN", owner, NOW, later)
    assert await store.invite([org], org, "nobody@x", "ADMIN", owner, NOW, later + DAY)
    [refreshed] = await store.list_invitations([org], org, NOW)
    assert (refreshed["id"], refreshed["role"], refreshed["expires_at"]) == (
        listed[1]["id"],
        "ADMIN",
        later + DAY,
    )
    assert await store.list_invitations([org], org, NOW, email="in@x") == []
    assert await store.list_invitations([org], org, NOW, invitation_id=refreshed["id"]) == [
        refreshed
    ]

    # Revoking is scoped to the organisation.
    assert not await store.revoke_invitation([other], org, refreshed["id"])
    assert not await store.revoke_invitation([other], other, refreshed["id"])
    assert await store.revoke_invitation([org], org, refreshed["id"])
    assert not await store.revoke_invitation([org], org, refreshed["id"])


async def test_a_declined_invitation_is_hidden_from_the_account_only(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    invitee = await store.create_user("in@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.invite([org], org, "in@x", "MEMBER", owner, NOW, NOW + DAY)
    [mine] = await store.user_invitations(invitee, NOW)
    assert await store.decline_invitation(invitee, mine["id"], NOW)
    assert not await store.decline_invitation(invitee, mine["id"], NOW)
    assert await store.user_invitations(invitee, NOW) == []
    assert await store.accept_invitation(invitee, mine["id"], NOW) is None
    # The organisation still sees it pending until it expires...
    assert [i["id"] for i in await store.list_invitations([org], org, NOW)] == [mine["id"]]
    assert await store.list_invitations([org], org, NOW + DAY) == []
    # ...and inviting again offers it again.
    await store.invite([org], org, "in@x", "VIEWER", owner, NOW, NOW + DAY)
    [again] = await store.user_invitations(invitee, NOW)
    assert (again["id"], again["role"]) == (mine["id"], "VIEWER")


async def test_an_invitation_counts_while_its_inviter_may_grant_its_role(
    store: SqlStore,
) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    admin = await store.create_user("admin@x", "h")
    invitee = await store.create_user("in@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.add_membership(org, admin, "ADMIN")
    await store.invite([org], org, "in@x", "MEMBER", admin, NOW, NOW + DAY)
    await store.invite([org], org, "boss@x", "OWNER", admin, NOW, NOW + DAY)  # beyond an ADMIN
    assert [i["email"] for i in await store.list_invitations([org], org, NOW)] == ["in@x"]
    assert await store.set_member_role([org], org, admin, "MEMBER")
    assert await store.list_invitations([org], org, NOW) == []
    assert await store.user_invitations(invitee, NOW) == []
    [row] = await raw_fetch(store, "SELECT id FROM invitations WHERE email = 'in@x'")
    assert await store.accept_invitation(invitee, row["id"], NOW) is None
    assert await store.set_member_role([org], org, admin, "ADMIN")
    assert len(await store.user_invitations(invitee, NOW)) == 1
    # Removing the inviter's account removes their invitations.
    assert await store.delete_user(admin)
    assert await raw_fetch(store, "SELECT id FROM invitations") == []


async def test_invitations_go_with_their_organisation_and_a_direct_add(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    invitee = await store.create_user("in@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.invite([org], org, "in@x", "MEMBER", owner, NOW, NOW + DAY)
    await store.invite([org], org, "other@x", "MEMBER", owner, NOW, NOW + DAY)
    # A direct add (a superuser's) uses up that account's invitation.
    await store.add_membership(org, invitee, "VIEWER")
    assert [i["email"] for i in await store.list_invitations([org], org, NOW)] == ["other@x"]
    assert await store.delete_organization([org], org)
    assert await raw_fetch(store, "SELECT id FROM invitations") == []


async def test_an_organisation_holds_a_bounded_number_of_invitations(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    await store.add_membership(org, owner, "OWNER")
    now = NOW
    for i in range(3):
        assert await store.invite([org], org, f"{i}@x", "MEMBER", owner, now, now + DAY, limit=3)
    with pytest.raises(ConflictError):
        await store.invite([org], org, "3@x", "MEMBER", owner, now, now + DAY, limit=3)
    # Refreshing one is not a new one; expired ones make room.
    assert await store.invite([org], org, "0@x", "ADMIN", owner, now, now + DAY, limit=3)
    assert await store.invite([org], org, "1@x", "ADMIN", owner, now, now - 1, limit=3)
    assert await store.invite([org], org, "3@x", "MEMBER", owner, now, now + DAY, limit=3)
    emails = [i["email"] for i in await store.list_invitations([org], org, now)]
    assert sorted(emails) == ["0@x", "2@x", "3@x"]
