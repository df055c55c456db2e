"""`/api/users/…`: the caller's own account (`/api/users/me`: profile, password,
notification preferences, personal access tokens) and the superusers' administration of
every account (`/api/users`, `/api/users/{id}`)."""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import Field, StrictBool, field_validator
from typing_extensions import TypedDict

from tocsin.api import auth
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.identity_common import (
    LEFT_OUT,
    PAGE_LIMIT,
    Body,
    Role,
    new_password_hash,
    password_ok,
    role,
    time_zone,
    valid_email,
)
from tocsin.api.paths import ID
from tocsin.api.query import OFFSET
from tocsin.api.schemas import (
    TIME_OF_DAY_PATTERN,
    EmailAddress,
    TimeOfDay,
    TimeZoneName,
    parse,
)
from tocsin.api.sessions import set_session_cookie
from tocsin.security import (
    TOKEN_PREFIX,
    hash_token,
    issue_session,
    new_token,
    password_stamp,
)
from tocsin.store.base import Principal, Row, Store

_HHMM = re.compile(TIME_OF_DAY_PATTERN)


# -- request bodies -----------------------------------------------------------------------


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class UserCreate(Body):
    email: EmailAddress = Field(max_length=254)
    password: str = Field(min_length=8, max_length=1024)
    full_name: str = Field(default="", max_length=200)
    is_superuser: StrictBool = False

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return valid_email(v)


class UserMeUpdate(Body):
    full_name: str = Field(default=LEFT_OUT, max_length=200)
    email: EmailAddress = Field(default=LEFT_OUT, max_length=254)
    password: str = Field(default=LEFT_OUT, min_length=8, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return valid_email(v)


class UserAdminUpdate(Body):
    full_name: str = Field(default=LEFT_OUT, max_length=200)
    email: EmailAddress = Field(default=LEFT_OUT, max_length=254)
    password: str = Field(default=LEFT_OUT, min_length=8, max_length=1024)
    is_active: StrictBool = LEFT_OUT
    is_superuser: StrictBool = LEFT_OUT

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return valid_email(v)


class NotificationPreferences(Body):
    email_enabled: StrictBool = True
    notify_on_down: StrictBool = True
    notify_on_degraded: StrictBool = True
    notify_on_recovery: StrictBool = True
    notify_on_incident_ack: StrictBool = False
    quiet_hours_start: TimeOfDay | None = Field(default=None, description="HH:MM")
    quiet_hours_end: TimeOfDay | None = Field(default=None, description="HH:MM")
    timezone: TimeZoneName = Field(default="UTC", max_length=64)

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.match(v):
            raise ValueError("must be a time of day as HH:MM")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return time_zone(v)


# -- responses ----------------------------------------------------------------------------


class UserJson(TypedDict):
    id: int
    email: str
    full_name: str
    is_active: bool
    is_superuser: bool
    created_at: str
    updated_at: str | None


def user_json(row: Row) -> UserJson:
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


class MyOrganizationJson(TypedDict):
    id: int
    name: str
    role: Role


class MeJson(UserJson):
    """The caller's account and the organisations it belongs to, with its role."""

    organizations: list[MyOrganizationJson]


def me_json(user: Row, organizations: list[Row], p: Principal) -> MeJson:
    return {
        **user_json(user),
        "organizations": [
            {"id": o["id"], "name": o["name"], "role": role(p.roles[o["id"]])}
            for o in organizations
        ],
    }


class ApiTokenJson(TypedDict):
    """A personal access token without its secret (`prefix`: its first characters)."""

    id: int
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None


class NewApiTokenJson(ApiTokenJson):
    """A new token, the only time the token itself is shown."""

    token: str


def token_json(row: Row) -> ApiTokenJson:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "created_at": iso(row["created_at"]),
        "last_used_at": iso(row["last_used_at"]),
        "expires_at": iso(row["expires_at"]),
        "revoked_at": iso(row["revoked_at"]),
    }


class PreferencesJson(TypedDict):
    """The notification preferences (NotificationPreferences), defaults filled in."""

    email_enabled: bool
    notify_on_down: bool
    notify_on_degraded: bool
    notify_on_recovery: bool
    notify_on_incident_ack: bool
    quiet_hours_start: str | None
    quiet_hours_end: str | None
    timezone: str


def preferences_json(stored: dict[str, Any]) -> PreferencesJson:
    # Not validated again: what is stored was valid when it was written, and a rule made
    # stricter since (a time zone alias now refused) must not make reading it fail.
    prefs = NotificationPreferences.model_construct(
        **{k: v for k, v in stored.items() if k in NotificationPreferences.model_fields}
    )
    return {
        "email_enabled": prefs.email_enabled,
        "notify_on_down": prefs.notify_on_down,
        "notify_on_degraded": prefs.notify_on_degraded,
        "notify_on_recovery": prefs.notify_on_recovery,
        "notify_on_incident_ack": prefs.notify_on_incident_ack,
        "quiet_hours_start": prefs.quiet_hours_start,
        "quiet_hours_end": prefs.quiet_hours_end,
        "timezone": prefs.timezone,
    }


# -- /api/users/me ------------------------------------------------------------------------


class MeResource:
    body_models: ClassVar = {"patch": UserMeUpdate}
    response_models: ClassVar = {"get": MeJson, "patch": UserJson}

    def __init__(self, store: Store, key: bytes) -> None:
        self._store = store
        self._key = key

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        user = await self._store.get_user(p.user_id)
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        resp.media = me_json(user, await self._store.list_organizations(p.org_ids), p)

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
            if not await password_ok(
                await self._store.password_hash(p.user_id), body.current_password
            ):
                raise field_error("current_password", "incorrect password")
        if "password" in changes:
            changes["password_hash"] = await new_password_hash(changes.pop("password"))
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
            set_session_cookie(req, resp, issue_session(self._key, p.user_id, stamp))
        resp.media = user_json(user)

    on_put = on_patch


class PreferencesResource:
    body_models: ClassVar = {"put": NotificationPreferences}
    response_models: ClassVar = {"get": PreferencesJson, "put": PreferencesJson}

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


# -- /api/users/me/tokens -----------------------------------------------------------------


class TokensResource:
    body_models: ClassVar = {"post": TokenCreate}
    response_models: ClassVar = {"get": list[ApiTokenJson], "post": NewApiTokenJson}
    response_status: ClassVar = {"post": 201}

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
        answer: NewApiTokenJson = {**token_json(row), "token": token}
        resp.media = answer


class TokenResource:
    response_models: ClassVar = {"delete": None}

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


# -- /api/users (superusers) --------------------------------------------------------------


async def _superuser(store: Store, p: Principal) -> None:
    user = await store.get_user(p.user_id)
    if user is None or not user["is_superuser"]:
        raise falcon.HTTPForbidden(description="this needs a superuser")


class UsersResource:
    body_models: ClassVar = {"post": UserCreate}
    query_params: ClassVar = {"get": (PAGE_LIMIT, OFFSET)}
    response_models: ClassVar = {"get": list[UserJson], "post": UserJson}
    response_status: ClassVar = {"post": 201}

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
            await new_password_hash(body.password),
            superuser=body.is_superuser,
            full_name=body.full_name,
        )
        user = await self._store.get_user(user_id)
        assert user is not None
        resp.status = falcon.HTTP_201
        resp.media = user_json(user)


class UserResource:
    body_models: ClassVar = {"patch": UserAdminUpdate}
    response_models: ClassVar = {"get": UserJson, "patch": UserJson, "delete": None}

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
            changes["password_hash"] = await new_password_hash(changes.pop("password"))
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
    app.add_route("/api/users/me", MeResource(store, ctx.session_key))
    app.add_route("/api/users/me/notification-preferences", PreferencesResource(store))
    app.add_route("/api/users/me/tokens", TokensResource(store))
    app.add_route(f"/api/users/me/tokens/{{token_id:{ID}}}", TokenResource(store))
    app.add_route("/api/users", UsersResource(store))
    app.add_route(f"/api/users/{{user_id:{ID}}}", UserResource(store))
