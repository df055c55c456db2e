"""`/api/auth/…`, `/api/organizations/…` (members, invitations, usage, settings, projects)
and `/api/users/…`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from tocsin import schedules
from tocsin.api import auth, query
from tocsin.api.body import read_bytes, read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, field_error, query_error
from tocsin.api.limits import InputError, check_tree
from tocsin.api.query import OFFSET
from tocsin.api.schemas import parse
from tocsin.security import (
    SESSION_TTL,
    TOKEN_PREFIX,
    burn_password_check,
    hash_password,
    hash_token,
    issue_session,
    new_token,
    password_stamp,
    session_key,
    verify_password,
)
from tocsin.store.base import Principal, Row, Store

ID = "int(min=1, max=9223372036854775807)"
Role = Literal["OWNER", "ADMIN", "MEMBER", "VIEWER"]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_FORM_LIMIT = 16 * 1024
# How long an invitation waits for its answer, by default (days).
INVITATION_DAYS = 7


# -- request bodies -----------------------------------------------------------------------


def _valid_email(v: str) -> str:
    v = v.strip().lower()
    if not _EMAIL.match(v):
        raise ValueError("must be an email address")
    return v


def _timezone(v: str) -> str:
    try:
        schedules.time_zone(v)
    except ValueError as exc:
        raise ValueError(getattr(exc, "reason", str(exc))) from None
    return v


def _not_null(v: Any) -> Any:
    # Optional in the body, but an explicit null is not a value for these fields.
    if v is None:
        raise ValueError("may not be null")
    return v


PAGE_LIMIT = query.limit(100, 500)
CONFIRM = query.Text("confirm", "the organisation's name, to confirm its deletion")


class _Body(BaseModel):
    # Clients send more fields than a route uses: unknown ones are ignored.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


class LoginForm(_Body):
    username: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class TokenCreate(_Body):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class OrganizationCreate(_Body):
    name: str = Field(min_length=1, max_length=100)


class OrganizationSettings(_Body):
    # Unknown keys are kept: a client may store its own preferences here.
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _timezone(v)


class MemberAdd(_Body):
    email: str = Field(max_length=254)
    role: Role = "MEMBER"

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return _valid_email(v)


class MemberUpdate(_Body):
    role: Role


class InvitationCreate(_Body):
    email: str = Field(max_length=254)
    role: Role = "MEMBER"
    expires_in_days: int = Field(default=INVITATION_DAYS, ge=1, le=30)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return _valid_email(v)


class ProjectCreate(_Body):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)


class ProjectUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("name", "description")
    @classmethod
    def _present(cls, v: Any) -> Any:
        return _not_null(v)


class UserCreate(_Body):
    email: str = Field(max_length=254)
    password: str = Field(min_length=8, max_length=1024)
    full_name: str = Field(default="", max_length=200)
    is_superuser: StrictBool = False

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return _valid_email(v)


class UserMeUpdate(_Body):
    full_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)

    @field_validator("full_name", "email", "password")
    @classmethod
    def _present(cls, v: Any, info: ValidationInfo) -> Any:
        v = _not_null(v)
        return _valid_email(v) if info.field_name == "email" else v


class UserAdminUpdate(_Body):
    full_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    is_active: StrictBool | None = None
    is_superuser: StrictBool | None = None

    @field_validator("full_name", "email", "password", "is_active", "is_superuser")
    @classmethod
    def _present(cls, v: Any, info: ValidationInfo) -> Any:
        v = _not_null(v)
        return _valid_email(v) if info.field_name == "email" else v


class NotificationPreferences(_Body):
    email_enabled: StrictBool = True
    notify_on_down: StrictBool = True
    notify_on_degraded: StrictBool = True
    notify_on_recovery: StrictBool = True
    notify_on_incident_ack: StrictBool = False
    quiet_hours_start: str | None = Field(default=None, description="HH:MM")
    quiet_hours_end: str | None = Field(default=None, description="HH:MM")
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.match(v):
            raise ValueError("must be a time of day as HH:MM")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _timezone(v)


# -- responses ----------------------------------------------------------------------------


def user_json(row: Row) -> dict[str, Any]:
    # APPSEC: an explicit list, so the password hash can never leak into a response.
    return {
        "id": row["id"],
        "email": row["email"],
        "full_name": row["full_name"],
        "is_active": row["is_active"],
        "is_superuser": row["is_superuser"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def token_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "created_at": iso(row["created_at"]),
        "last_used_at": iso(row["last_used_at"]),
        "expires_at": iso(row["expires_at"]),
        "revoked_at": iso(row["revoked_at"]),
    }


def org_json(row: Row, role: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "role": role,
        "default_project_id": row["default_project_id"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def project_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"],
        "is_default": row["is_default"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def invitation_json(row: Row) -> dict[str, Any]:
    """An invitation as its organisation sees it. A declined one still reads "invited"
    until it expires: only an existing account can decline, so showing it would tell
    the organisation that the email has an account."""
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "email": row["email"],
        "role": row["role"],
        "status": "invited",
        "invited_by": row["invited_by"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "expires_at": iso(row["expires_at"]),
    }


def my_invitation_json(row: Row) -> dict[str, Any]:
    """An invitation as the invited account sees it."""
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "organization_name": row["organization_name"],
        "role": row["role"],
        "status": "invited",
        "invited_by_email": row["invited_by_email"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "expires_at": iso(row["expires_at"]),
    }


def settings_json(stored: dict[str, Any]) -> dict[str, Any]:
    return OrganizationSettings.model_validate(stored).model_dump()


def preferences_json(stored: dict[str, Any]) -> dict[str, Any]:
    return NotificationPreferences.model_validate(stored).model_dump()


# -- helpers ------------------------------------------------------------------------------


async def _password_hash(password: str) -> str:
    # PERF: argon2 takes tens of milliseconds of CPU; off the event loop.
    return await asyncio.to_thread(hash_password, password)


async def _password_ok(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        await asyncio.to_thread(burn_password_check, password)
        return False
    return await asyncio.to_thread(verify_password, password_hash, password)


async def _superuser(store: Store, p: Principal) -> None:
    user = await store.get_user(p.user_id)
    if user is None or not user["is_superuser"]:
        raise falcon.HTTPForbidden(description="this needs a superuser")


async def _org(store: Store, p: Principal, org_id: int, role: str) -> Row:
    require_role(p, org_id, role)
    rows = await store.list_organizations([org_id])
    if not rows:
        raise falcon.HTTPNotFound(description="Organization not found")
    return rows[0]


def _set_session_cookie(req: falcon.asgi.Request, resp: falcon.asgi.Response, jwt: str) -> None:
    resp.set_cookie(
        auth.SESSION_COOKIE,
        jwt,
        max_age=int(SESSION_TTL),
        path="/",
        http_only=True,
        same_site="Lax",
        secure=req.scheme == "https",
    )


async def _form(req: falcon.asgi.Request) -> dict[str, Any]:
    """The login form: URL-encoded (what OAuth2 password clients send) or JSON."""
    if (req.content_type or "").startswith("application/json"):
        return await read_json_object(req, _FORM_LIMIT)
    data = await read_bytes(req, _FORM_LIMIT)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise falcon.HTTPBadRequest(description="the form is not valid UTF-8") from None
    form = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    try:
        check_tree(form, ["body"])
    except InputError as exc:
        raise ValidationFailed([{"loc": exc.loc, "msg": exc.msg, "type": exc.kind}]) from None
    return form


# -- /api/auth ----------------------------------------------------------------------------


class TokenLoginResource:
    """`POST /api/auth/token`: password login (form fields `username`, `password`)."""

    auth_public = True

    body_models: ClassVar = {"post": LoginForm}
    body_media_types = ("application/x-www-form-urlencoded", "application/json")

    def __init__(self, store: Store, key: bytes, throttle: auth.LoginThrottle) -> None:
        self._store = store
        self._key = key
        self._throttle = throttle

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        form: LoginForm = parse(LoginForm, await _form(req))
        username = form.username.lower()
        address = req.remote_addr or ""
        wait = self._throttle.retry_after(username, address)
        if wait > 0:
            raise falcon.HTTPTooManyRequests(
                description="Too many failed logins; try again later",
                retry_after=max(1, int(wait + 0.999)),
            )
        user = await self._store.user_by_email(username)
        ok = await _password_ok(user["password_hash"] if user else None, form.password)
        if user is None or not ok or not user["is_active"]:
            self._throttle.failed(username, address)
            raise falcon.HTTPUnauthorized(
                description="Incorrect username or password", challenges=['Bearer realm="tocsin"']
            )
        self._throttle.succeeded(username, address)
        token = issue_session(self._key, user["id"], password_stamp(user["password_hash"]))
        _set_session_cookie(req, resp, token)
        resp.set_header("Cache-Control", "no-store")
        resp.media = {"access_token": token, "token_type": "bearer"}


class LogoutResource:
    """`POST /api/auth/logout`: drops the session cookie (a JWT itself stays valid until
    it expires or the password changes)."""

    auth_public = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.unset_cookie(auth.SESSION_COOKIE, path="/")
        resp.status = falcon.HTTP_204


# -- /api/users/me/tokens -----------------------------------------------------------------


class TokensResource:
    body_models: ClassVar = {"post": TokenCreate}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        rows = await self._store.list_tokens(principal(req).user_id)
        resp.media = [token_json(r) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: TokenCreate = parse(TokenCreate, await read_json_object(req))
        token = new_token()
        expires = None
        if body.expires_in_days is not None:
            expires = time.time() + body.expires_in_days * 86_400.0
        token_id = await self._store.create_token(
            p.user_id,
            body.name,
            token[: len(TOKEN_PREFIX) + 4],
            hash_token(token),
            expires_at=expires,
        )
        row = next(r for r in await self._store.list_tokens(p.user_id) if r["id"] == token_id)
        resp.status = falcon.HTTP_201
        resp.set_header("Cache-Control", "no-store")
        # The only time the token is shown: only its hash is stored.
        resp.media = {**token_json(row), "token": token}


class TokenResource:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token_id: int
    ) -> None:
        p = principal(req)
        if not await self._store.revoke_token(p.user_id, token_id):
            raise falcon.HTTPNotFound(description="Token not found")
        auth.forget_user(p.user_id)
        resp.status = falcon.HTTP_204


# -- /api/organizations -------------------------------------------------------------------


class OrganizationsResource:
    body_models: ClassVar = {"post": OrganizationCreate}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        rows = await self._store.list_organizations(p.org_ids)
        resp.media = [org_json(r, p.roles[r["id"]]) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: OrganizationCreate = parse(OrganizationCreate, await read_json_object(req))
        row = await self._store.create_organization(body.name)
        await self._store.add_membership(row["id"], p.user_id, "OWNER")
        auth.forget_user(p.user_id)
        resp.status = falcon.HTTP_201
        resp.media = org_json(row, "OWNER")


class OrganizationResource:
    query_params: ClassVar = {"delete": (CONFIRM,)}

    body_models: ClassVar = {"put": OrganizationCreate}

    def __init__(self, ctx: AppContext) -> None:
        self._store = ctx.store
        self._engine = ctx.engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        row = await _org(self._store, p, org_id, "VIEWER")
        resp.media = org_json(row, p.roles[org_id])

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: OrganizationCreate = parse(OrganizationCreate, await read_json_object(req))
        row = await self._store.update_organization([org_id], org_id, {"name": body.name})
        if row is None:
            raise falcon.HTTPNotFound(description="Organization not found")
        resp.media = org_json(row, p.roles[org_id])

    on_patch = on_put

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        row = await _org(self._store, p, org_id, "OWNER")
        if CONFIRM.get(req) != row["name"]:
            raise query_error("confirm", "must be the organisation's name, to confirm deletion")
        members = await self._store.list_members([org_id], org_id)
        check_ids: list[int] = []
        while True:
            page = await self._store.list_checks([org_id], limit=500, offset=len(check_ids))
            check_ids += [c["id"] for c in page]
            if len(page) < 500:
                break
        self._engine.remove(check_ids)
        await self._store.delete_organization([org_id], org_id)
        for m in members:
            auth.forget_user(m["user_id"])
        resp.status = falcon.HTTP_204


class MembersResource:
    body_models: ClassVar = {"post": MemberAdd}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        resp.media = await self._store.list_members([org_id], org_id)

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
        resp.media = {
            "user_id": user["id"],
            "email": user["email"],
            "full_name": user["full_name"],
            "role": body.role,
        }


class MemberResource:
    body_models: ClassVar = {"put": MemberUpdate}

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
        resp.media = {**member, "role": body.role}

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


async def _invite(
    store: Store, p: Principal, org_id: int, email: str, role: str, days: int = INVITATION_DAYS
) -> dict[str, Any]:
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


class UsageResource:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        usage = await self._store.organization_usage([org_id], org_id)
        if usage is None:
            raise falcon.HTTPNotFound(description="Organization not found")
        resp.media = {"organization_id": org_id, **usage}


class SettingsResource:
    body_models: ClassVar = {"put": OrganizationSettings}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        row = await _org(self._store, principal(req), org_id, "VIEWER")
        resp.media = settings_json(row["settings"])

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: OrganizationSettings = parse(OrganizationSettings, await read_json_object(req))
        settings = body.model_dump()
        if len(json.dumps(settings)) > 64 * 1024:
            raise field_error([], "settings are larger than 64 KiB")
        row = await self._store.update_organization([org_id], org_id, {"settings": settings})
        if row is None:
            raise falcon.HTTPNotFound(description="Organization not found")
        resp.media = settings_json(row["settings"])


# -- /api/organizations/{id}/projects -----------------------------------------------------


class ProjectsResource:
    body_models: ClassVar = {"post": ProjectCreate}
    query_params: ClassVar = {"get": (PAGE_LIMIT, OFFSET)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = PAGE_LIMIT.get(req), OFFSET.get(req)
        rows = await self._store.select("projects", [org_id], limit=limit, offset=offset)
        resp.media = [project_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        body: ProjectCreate = parse(ProjectCreate, await read_json_object(req))
        row = await self._store.insert(
            "projects", org_id, {**body.model_dump(), "is_default": False}
        )
        resp.status = falcon.HTTP_201
        resp.media = project_json(row)


class ProjectResource:
    body_models: ClassVar = {"put": ProjectUpdate}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, project_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        row = await self._store.get("projects", [org_id], project_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Project not found")
        resp.media = project_json(row)

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, project_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        body: ProjectUpdate = parse(ProjectUpdate, await read_json_object(req))
        changes = body.changes()
        if changes:
            row = await self._store.update("projects", [org_id], project_id, changes)
        else:
            row = await self._store.get("projects", [org_id], project_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Project not found")
        resp.media = project_json(row)

    on_patch = on_put

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, project_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        if not await self._store.delete_project([org_id], project_id):
            raise falcon.HTTPNotFound(description="Project not found")
        resp.status = falcon.HTTP_204


# -- /api/users ---------------------------------------------------------------------------


class MeResource:
    body_models: ClassVar = {"patch": UserMeUpdate}

    def __init__(self, store: Store, key: bytes) -> None:
        self._store = store
        self._key = key

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        user = await self._store.get_user(p.user_id)
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        orgs = await self._store.list_organizations(p.org_ids)
        resp.media = {
            **user_json(user),
            "organizations": [
                {"id": o["id"], "name": o["name"], "role": p.roles[o["id"]]} for o in orgs
            ],
        }

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: UserMeUpdate = parse(UserMeUpdate, await read_json_object(req))
        changes = body.changes()
        changes.pop("current_password", None)
        if "email" in changes or "password" in changes:
            # APPSEC: a stolen session must not be enough to take the account over.
            if body.current_password is None:
                raise field_error(
                    "current_password", "required to change the email or password", "missing"
                )
            if not await _password_ok(
                await self._store.password_hash(p.user_id), body.current_password
            ):
                raise field_error("current_password", "incorrect password")
        if "password" in changes:
            changes["password_hash"] = await _password_hash(changes.pop("password"))
        user = (
            await self._store.update_user(p.user_id, changes)
            if changes
            else await self._store.get_user(p.user_id)
        )
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        auth.forget_user(p.user_id)
        if "password_hash" in changes and req.context.session:
            # Every earlier session has just ended; this browser keeps a fresh one.
            stamp = password_stamp(changes["password_hash"])
            _set_session_cookie(req, resp, issue_session(self._key, p.user_id, stamp))
        resp.media = user_json(user)

    on_put = on_patch


class PreferencesResource:
    body_models: ClassVar = {"put": NotificationPreferences}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        user = await self._store.get_user(principal(req).user_id)
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        resp.media = preferences_json(user["notification_preferences"])

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body: NotificationPreferences = parse(NotificationPreferences, await read_json_object(req))
        user = await self._store.update_user(
            principal(req).user_id, {"notification_preferences": body.model_dump()}
        )
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        resp.media = preferences_json(user["notification_preferences"])

    on_patch = on_put


class MyInvitationsResource:
    """`/api/users/me/invitations`: the invitations addressed to the caller's email."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        rows = await self._store.user_invitations(principal(req).user_id, time.time())
        resp.media = [my_invitation_json(r) for r in rows]


class MyInvitationResource:
    """`POST /api/users/me/invitations/{id}/accept` and `…/decline`. Another account's
    invitation is not found, whatever its id."""

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
        resp.media = {**joined, "status": "accepted"}

    async def on_post_decline(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, invitation_id: int
    ) -> None:
        """Decline: the invitation is no longer offered (the organisation is not told)."""
        p = principal(req)
        if not await self._store.decline_invitation(p.user_id, invitation_id, time.time()):
            raise falcon.HTTPNotFound(description="Invitation not found")
        resp.status = falcon.HTTP_204


class UsersResource:
    body_models: ClassVar = {"post": UserCreate}
    query_params: ClassVar = {"get": (PAGE_LIMIT, OFFSET)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await _superuser(self._store, principal(req))
        limit, offset = PAGE_LIMIT.get(req), OFFSET.get(req)
        resp.media = [
            user_json(u) for u in await self._store.list_users(limit=limit, offset=offset)
        ]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await _superuser(self._store, principal(req))
        body: UserCreate = parse(UserCreate, await read_json_object(req))
        user_id = await self._store.create_user(
            body.email,
            await _password_hash(body.password),
            superuser=body.is_superuser,
            full_name=body.full_name,
        )
        user = await self._store.get_user(user_id)
        assert user is not None
        resp.status = falcon.HTTP_201
        resp.media = user_json(user)


class UserResource:
    body_models: ClassVar = {"patch": UserAdminUpdate}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _target(self, req: falcon.asgi.Request, user_id: int) -> Row:
        await _superuser(self._store, principal(req))
        user = await self._store.get_user(user_id)
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        return user

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user_id: int
    ) -> None:
        resp.media = user_json(await self._target(req, user_id))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user_id: int
    ) -> None:
        await self._target(req, user_id)
        body: UserAdminUpdate = parse(UserAdminUpdate, await read_json_object(req))
        changes = body.changes()
        if user_id == principal(req).user_id and (
            changes.get("is_active") is False or changes.get("is_superuser") is False
        ):
            raise falcon.HTTPConflict(description="you cannot deactivate or demote yourself")
        if "password" in changes:
            changes["password_hash"] = await _password_hash(changes.pop("password"))
        user = (
            await self._store.update_user(user_id, changes)
            if changes
            else await self._store.get_user(user_id)
        )
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        auth.forget_user(user_id)
        resp.media = user_json(user)

    on_put = on_patch

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user_id: int
    ) -> None:
        await self._target(req, user_id)
        if user_id == principal(req).user_id:
            raise falcon.HTTPConflict(description="you cannot delete yourself")
        if not await self._store.delete_user(user_id):
            raise falcon.HTTPNotFound(description="User not found")
        auth.forget_user(user_id)
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""
    store = ctx.store
    key = session_key(ctx.data_dir)
    org = f"/api/organizations/{{org_id:{ID}}}"
    app.add_route("/api/auth/token", TokenLoginResource(store, key, auth.LoginThrottle()))
    app.add_route("/api/auth/logout", LogoutResource())
    app.add_route("/api/users/me", MeResource(store, key))
    app.add_route("/api/users/me/notification-preferences", PreferencesResource(store))
    app.add_route("/api/users/me/invitations", MyInvitationsResource(store))
    mine = MyInvitationResource(store)
    invitation = f"/api/users/me/invitations/{{invitation_id:{ID}}}"
    app.add_route(f"{invitation}/accept", mine, suffix="accept")
    app.add_route(f"{invitation}/decline", mine, suffix="decline")
    app.add_route("/api/users/me/tokens", TokensResource(store))
    app.add_route(f"/api/users/me/tokens/{{token_id:{ID}}}", TokenResource(store))
    app.add_route("/api/users", UsersResource(store))
    app.add_route(f"/api/users/{{user_id:{ID}}}", UserResource(store))
    app.add_route("/api/organizations", OrganizationsResource(store))
    app.add_route(org, OrganizationResource(ctx))
    app.add_route(f"{org}/members", MembersResource(store))
    app.add_route(f"{org}/members/{{user_id:{ID}}}", MemberResource(store))
    app.add_route(f"{org}/invitations", InvitationsResource(store))
    app.add_route(f"{org}/invitations/{{invitation_id:{ID}}}", InvitationResource(store))
    app.add_route(f"{org}/usage", UsageResource(store))
    app.add_route(f"{org}/settings", SettingsResource(store))
    app.add_route(f"{org}/projects", ProjectsResource(store))
    app.add_route(f"{org}/projects/{{project_id:{ID}}}", ProjectResource(store))


async def start(ctx: AppContext) -> None:
    """Nothing to load at start: sessions and throttles live in memory."""
