"""Who belongs to an organisation and how they join: its members and roles
(`/api/organizations/{id}/members`), its invitations (`…/invitations`), and the invited
account's side of them (`/api/users/me/invitations`: accept or decline)."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import Field, RootModel, field_validator
from typing_extensions import TypedDict

from tocsin.api import auth
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.identity_common import Body, Role, role, valid_email
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import EmailAddress, parse
from tocsin.store.base import Principal, Row, Store

# How long an invitation waits for its answer, by default (days).
INVITATION_DAYS = 7


# -- request bodies -----------------------------------------------------------------------


class MemberAdd(Body):
    email: EmailAddress = Field(max_length=254)
    role: Role = "MEMBER"

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return valid_email(v)


class MemberUpdate(Body):
    role: Role


class InvitationCreate(Body):
    email: EmailAddress = Field(max_length=254)
    role: Role = "MEMBER"
    expires_in_days: int = Field(default=INVITATION_DAYS, ge=1, le=30)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return valid_email(v)


# -- responses ----------------------------------------------------------------------------


class MemberJson(TypedDict):
    """A member of an organisation (the store's `list_members` row)."""

    user_id: int
    email: str
    full_name: str
    role: Role


def member_json(row: Row) -> MemberJson:
    return {
        "user_id": row["user_id"],
        "email": row["email"],
        "full_name": row["full_name"],
        "role": role(row["role"]),
    }


class InvitationJson(TypedDict):
    id: int
    organization_id: int
    email: str
    role: Role
    status: Literal["invited"]
    invited_by: int
    created_at: str
    updated_at: str
    expires_at: str


def invitation_json(row: Row) -> InvitationJson:
    """An invitation as its organisation sees it. A declined one still reads "invited"
    until it expires: only an existing account can decline, so showing it would tell
    the organisation that the email has an account."""
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "email": row["email"],
        "role": role(row["role"]),
        "status": "invited",
        "invited_by": row["invited_by"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "expires_at": iso(row["expires_at"]),
    }


class InvitationSentJson(TypedDict):
    """The same answer for every email: nothing is told about accounts."""

    organization_id: int
    email: str
    role: Role
    status: Literal["invited"]
    expires_at: str


class MemberAddedJson(RootModel[MemberJson | InvitationSentJson]):
    """`POST …/members`: the member a superuser added (201; 200 when the account was
    a member already, its role changed), or for everyone else the invitation sent
    (202)."""


class MyInvitationJson(TypedDict):
    id: int
    organization_id: int
    organization_name: str
    role: Role
    status: Literal["invited"]
    invited_by_email: str
    created_at: str
    updated_at: str
    expires_at: str


def my_invitation_json(row: Row) -> MyInvitationJson:
    """An invitation as the invited account sees it."""
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "organization_name": row["organization_name"],
        "role": role(row["role"]),
        "status": "invited",
        "invited_by_email": row["invited_by_email"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "expires_at": iso(row["expires_at"]),
    }


class AcceptedJson(TypedDict):
    """An accepted invitation: the caller's role in the organisation now (a member
    already keeps the role it had)."""

    id: int
    organization_id: int
    role: Role
    status: Literal["accepted"]


def accepted_json(joined: Row) -> AcceptedJson:
    return {
        "id": joined["id"],
        "organization_id": joined["organization_id"],
        "role": role(joined["role"]),
        "status": "accepted",
    }


# -- /api/organizations/{id}/members ------------------------------------------------------


class MembersResource:
    body_models: ClassVar = {"post": MemberAdd}
    response_models: ClassVar = {"get": list[MemberJson], "post": MemberAddedJson}
    # 200, 201 or 202 (see on_post).
    response_status: ClassVar = {"post": "2XX"}
    created_ids: ClassVar = {"post": "/user_id"}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        resp.media = [member_json(m) for m in await self._store.list_members([org_id], org_id)]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """Add a member (superusers), or invite one (everyone else).

        A superuser adds an existing account at once; for anyone else this is
        `POST …/invitations`: 202, the same answer whether or not the email has an
        account."""
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: MemberAdd = parse(MemberAdd, await read_json_object(req))
        if not p.superuser:
            # APPSEC: without the account's consent nobody joins, and the answer is the
            # same whether or not the email has an account.
            resp.status = falcon.HTTP_202
            resp.media = await _invite(self._store, p, org_id, body.email, body.role)
            return
        # A superuser administers accounts (and lists them): adding one directly tells
        # them nothing they cannot read already.
        user = await self._store.user_by_email(body.email)
        if user is None:
            raise field_error(
                "email", "no user with this email; ask an administrator to create it", "not_found"
            )
        current = _role_of(await self._store.list_members([org_id], org_id), user["id"])
        _may_grant(p, org_id, body.role, current)
        if current is None:
            await self._store.add_membership(org_id, user["id"], body.role)
            resp.status = falcon.HTTP_201
        else:
            await self._store.set_member_role([org_id], org_id, user["id"], body.role)
        auth.forget_user(user["id"])
        added: MemberJson = {
            "user_id": user["id"],
            "email": user["email"],
            "full_name": user["full_name"],
            "role": body.role,
        }
        resp.media = added


class MemberResource:
    body_models: ClassVar = {"put": MemberUpdate}
    response_models: ClassVar = {"put": MemberJson, "delete": None}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _member(self, org_id: int, user_id: int) -> tuple[list[Row], str]:
        members = await self._store.list_members([org_id], org_id)
        role = _role_of(members, user_id)
        if role is None:
            raise falcon.HTTPNotFound(description="Member not found")
        return members, role

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, user_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: MemberUpdate = parse(MemberUpdate, await read_json_object(req))
        members, current = await self._member(org_id, user_id)
        _may_grant(p, org_id, body.role, current)
        await self._store.set_member_role([org_id], org_id, user_id, body.role)
        auth.forget_user(user_id)
        member = next(m for m in members if m["user_id"] == user_id)
        changed: MemberJson = {**member_json(member), "role": body.role}
        resp.media = changed

    on_patch = on_put

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, user_id: int
    ) -> None:
        p = principal(req)
        # Anyone may leave an organisation; removing someone else needs ADMIN.
        require_role(p, org_id, "VIEWER" if user_id == p.user_id else "ADMIN")
        _, current = await self._member(org_id, user_id)
        if user_id != p.user_id and current == "OWNER" and p.roles[org_id] != "OWNER":
            raise falcon.HTTPForbidden(description="only an OWNER can remove an OWNER")
        await self._store.remove_membership([org_id], org_id, user_id)
        auth.forget_user(user_id)
        resp.status = falcon.HTTP_204


def _role_of(members: list[Row], user_id: int) -> str | None:
    return next((str(m["role"]) for m in members if m["user_id"] == user_id), None)


def _may_grant(p: Principal, org_id: int, role: str, current: str | None) -> None:
    """ADMINs manage ADMINs and below; only an OWNER grants or takes away OWNER."""
    if p.roles[org_id] == "OWNER":
        return
    if role == "OWNER" or current == "OWNER":
        raise falcon.HTTPForbidden(description="only an OWNER can grant or change the OWNER role")


# -- /api/organizations/{id}/invitations --------------------------------------------------


async def _invite(
    store: Store, p: Principal, org_id: int, email: str, role: Role, days: int = INVITATION_DAYS
) -> InvitationSentJson:
    """Invite `email` (or refresh its pending invitation); the answer is the same for
    every email: nothing is looked up about accounts."""
    now = time.time()
    pending = await store.list_invitations(p.org_ids, org_id, now, email=email)
    _may_grant(p, org_id, role, pending[0]["role"] if pending else None)
    expires_at = now + days * 86_400.0
    # An email that is already a member's changes nothing (False), with the same answer.
    await store.invite(p.org_ids, org_id, email, role, p.user_id, now, expires_at)
    return {
        "organization_id": org_id,
        "email": email,
        "role": role,
        "status": "invited",
        "expires_at": iso(expires_at),
    }


class InvitationsResource:
    """`/api/organizations/{id}/invitations`: an organisation's pending invitations."""

    body_models: ClassVar = {"post": InvitationCreate}
    response_models: ClassVar = {"get": list[InvitationJson], "post": InvitationSentJson}
    response_status: ClassVar = {"post": 202}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """The organisation's pending invitations (ADMIN)."""
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        rows = await self._store.list_invitations(p.org_ids, org_id, time.time())
        resp.media = [invitation_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """Invite an email with a role (ADMIN).

        Always 202, whether or not the email has an account: the account joins when it
        accepts."""
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: InvitationCreate = parse(InvitationCreate, await read_json_object(req))
        resp.status = falcon.HTTP_202
        resp.media = await _invite(
            self._store, p, org_id, body.email, body.role, body.expires_in_days
        )


class InvitationResource:
    response_models: ClassVar = {"delete": None}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        invitation_id: int,
    ) -> None:
        """Revoke a pending invitation (ADMIN; an OWNER invitation needs an OWNER)."""
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        rows = await self._store.list_invitations(
            p.org_ids, org_id, time.time(), invitation_id=invitation_id
        )
        if not rows:
            raise falcon.HTTPNotFound(description="Invitation not found")
        _may_grant(p, org_id, rows[0]["role"], None)
        if not await self._store.revoke_invitation(p.org_ids, org_id, invitation_id):
            raise falcon.HTTPNotFound(description="Invitation not found")
        resp.status = falcon.HTTP_204


# -- /api/users/me/invitations ------------------------------------------------------------


class MyInvitationsResource:
    """`/api/users/me/invitations`: the invitations addressed to the caller's email."""

    response_models: ClassVar = {"get": list[MyInvitationJson]}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        rows = await self._store.user_invitations(principal(req).user_id, time.time())
        resp.media = [my_invitation_json(r) for r in rows]


class MyInvitationResource:
    """`POST /api/users/me/invitations/{id}/accept` and `…/decline`. Another account's
    invitation is not found, whatever its id."""

    response_models: ClassVar = {"post_accept": AcceptedJson, "post_decline": None}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_post_accept(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, invitation_id: int
    ) -> None:
        """Accept: join the organisation with the invitation's role."""
        p = principal(req)
        joined = await self._store.accept_invitation(p.user_id, invitation_id, time.time())
        if joined is None:
            raise falcon.HTTPNotFound(description="Invitation not found")
        auth.forget_user(p.user_id)
        resp.media = accepted_json(joined)

    async def on_post_decline(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, invitation_id: int
    ) -> None:
        """Decline: the invitation is no longer offered (the organisation is not told)."""
        p = principal(req)
        if not await self._store.decline_invitation(p.user_id, invitation_id, time.time()):
            raise falcon.HTTPNotFound(description="Invitation not found")
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""
    store = ctx.store
    app.add_route(f"{ORG}/members", MembersResource(store))
    app.add_route(f"{ORG}/members/{{user_id:{ID}}}", MemberResource(store))
    app.add_route(f"{ORG}/invitations", InvitationsResource(store))
    app.add_route(f"{ORG}/invitations/{{invitation_id:{ID}}}", InvitationResource(store))
    app.add_route("/api/users/me/invitations", MyInvitationsResource(store))
    mine = MyInvitationResource(store)
    invitation = f"/api/users/me/invitations/{{invitation_id:{ID}}}"
    app.add_route(f"{invitation}/accept", mine, suffix="accept")
    app.add_route(f"{invitation}/decline", mine, suffix="decline")
