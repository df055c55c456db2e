"""`/api/organizations/…`: organisations (create, list, rename, delete with
confirmation), their settings and usage, and their projects. Members and invitations are
api/members.py."""

from __future__ import annotations

import json
from typing import Any, ClassVar, cast

import falcon
import falcon.asgi
from pydantic import ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from tocsin.api import auth, query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error, query_error
from tocsin.api.identity_common import (
    LEFT_OUT,
    PAGE_LIMIT,
    Body,
    Role,
    role,
    time_zone,
)
from tocsin.api.paths import ID, ORG
from tocsin.api.query import OFFSET
from tocsin.api.schemas import TimeZoneName, parse
from tocsin.slugs import SLUG_PATTERN
from tocsin.store.base import ConflictError, Principal, Row, Store

CONFIRM = query.Text("confirm", "the organisation's name, to confirm its deletion")


# -- request bodies -----------------------------------------------------------------------


SLUG_FIELD = Field(
    default=None,
    min_length=1,
    max_length=64,
    pattern=SLUG_PATTERN,
    description="lower-case letters, digits and inner hyphens; unique across the server",
)


class OrganizationCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    # Made from the name when absent (numbered when taken: `acme-2`).
    slug: str | None = SLUG_FIELD


class OrganizationUpdate(Body):
    """A rename (ADMIN) or a new slug (OWNER); what is left out stays."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    slug: str | None = SLUG_FIELD


class OrganizationSettings(Body):
    # Unknown keys are kept: a client may store its own preferences here.
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    timezone: TimeZoneName = Field(default="UTC", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return time_zone(v)


class ProjectCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)


class ProjectUpdate(Body):
    name: str = Field(default=LEFT_OUT, min_length=1, max_length=100)
    description: str = Field(default=LEFT_OUT, max_length=2000)


# -- responses ----------------------------------------------------------------------------


class OrganizationJson(TypedDict):
    """An organisation and the caller's role in it."""

    id: int
    name: str
    # Unique across the server: `GET /api/organizations/by-slug/{slug}`.
    slug: str
    role: Role
    default_project_id: int | None
    created_at: str
    updated_at: str | None


def org_json(row: Row, caller_role: str) -> OrganizationJson:
    return {
        "id": row["id"],
        "name": row["name"],
        "slug": row.get("slug") or f"org-{row['id']}",
        "role": role(caller_role),
        "default_project_id": row["default_project_id"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class ProjectJson(TypedDict):
    id: int
    organization_id: int
    name: str
    description: str
    is_default: bool
    created_at: str
    updated_at: str | None


def project_json(row: Row) -> ProjectJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"],
        "is_default": row["is_default"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class OrganizationSettingsJson(TypedDict):
    """The settings (OrganizationSettings), defaults filled in; the keys a client stored
    beside them are answered too."""

    timezone: str


def settings_json(stored: dict[str, Any]) -> OrganizationSettingsJson:
    # Not validated again: what is stored was valid when it was written, and a rule made
    # stricter since (a time zone alias now refused) must not make reading it fail.
    known: OrganizationSettingsJson = {"timezone": str(stored.get("timezone") or "UTC")}
    extra = {k: v for k, v in stored.items() if k not in OrganizationSettings.model_fields}
    # NOTE: a TypedDict cannot say "and any other key" to mypy; the known ones are
    # checked above.
    return cast(OrganizationSettingsJson, {**known, **extra})


class UsageJson(TypedDict):
    """What the organisation holds: how many of each."""

    organization_id: int
    checks: int
    results_stored: int
    agents: int
    projects: int
    members: int


def usage_json(org_id: int, counts: Row) -> UsageJson:
    return {
        "organization_id": org_id,
        "checks": counts["checks"],
        "results_stored": counts["results_stored"],
        "agents": counts["agents"],
        "projects": counts["projects"],
        "members": counts["members"],
    }


async def _org(store: Store, p: Principal, org_id: int, role: str) -> Row:
    require_role(p, org_id, role)
    rows = await store.list_organizations([org_id])
    if not rows:
        raise falcon.HTTPNotFound(description="Organization not found")
    return rows[0]


# -- /api/organizations -------------------------------------------------------------------


class OrganizationsResource:
    body_models: ClassVar = {"post": OrganizationCreate}
    response_models: ClassVar = {"get": list[OrganizationJson], "post": OrganizationJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        rows = await self._store.list_organizations(p.org_ids)
        resp.media = [org_json(r, p.roles[r["id"]]) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: OrganizationCreate = parse(OrganizationCreate, await read_json_object(req))
        try:
            row = await self._store.create_organization(body.name, body.slug)
        except ConflictError:
            raise field_error("slug", "is taken by another organisation", "unique") from None
        await self._store.add_membership(row["id"], p.user_id, "OWNER")
        auth.forget_user(p.user_id)
        resp.status = falcon.HTTP_201
        resp.media = org_json(row, "OWNER")


class OrganizationResource:
    query_params: ClassVar = {"delete": (CONFIRM,)}
    body_models: ClassVar = {"put": OrganizationUpdate}
    response_models: ClassVar = {"get": OrganizationJson, "put": OrganizationJson, "delete": None}

    def __init__(self, ctx: AppContext) -> None:
        self._store = ctx.store
        self._engine = ctx.engine
        self._inbound = ctx.inbound

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
        body: OrganizationUpdate = parse(OrganizationUpdate, await read_json_object(req))
        fields: dict[str, Any] = {}
        if body.name is not None:
            fields["name"] = body.name
        if body.slug is not None:
            # The slug is in URLs others may have kept: only an OWNER changes it.
            require_role(p, org_id, "OWNER")
            fields["slug"] = body.slug
        if not fields:
            raise field_error("name", "Field required", "missing")
        try:
            row = await self._store.update_organization([org_id], org_id, fields)
        except ConflictError:
            raise field_error("slug", "is taken by another organisation", "unique") from None
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
        # Stored first: a refused delete (the database unavailable) leaves them scheduled.
        await self._store.delete_organization([org_id], org_id)
        self._engine.remove(check_ids)
        self._inbound.forget_organization(org_id)
        for m in members:
            auth.forget_user(m["user_id"])
        resp.status = falcon.HTTP_204


class BySlugResource:
    """`GET /api/organizations/by-slug/{slug}`: an organisation the caller is a member
    of, by its slug (404 otherwise, as for an id)."""

    response_models: ClassVar = {"get": OrganizationJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        p = principal(req)
        row = await self._store.organization_by_slug(slug)
        if row is None or row["id"] not in p.roles:
            raise falcon.HTTPNotFound(description="Organization not found")
        resp.media = org_json(row, p.roles[row["id"]])


class UsageResource:
    response_models: ClassVar = {"get": UsageJson}

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
        resp.media = usage_json(org_id, usage)


class SettingsResource:
    body_models: ClassVar = {"put": OrganizationSettings}
    response_models: ClassVar = {"get": OrganizationSettingsJson, "put": OrganizationSettingsJson}

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
    response_models: ClassVar = {"get": list[ProjectJson], "post": ProjectJson}
    response_status: ClassVar = {"post": 201}

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
    response_models: ClassVar = {"get": ProjectJson, "put": ProjectJson, "delete": None}

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


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""
    store = ctx.store
    app.add_route("/api/organizations", OrganizationsResource(store))
    app.add_route(ORG, OrganizationResource(ctx))
    app.add_route("/api/organizations/by-slug/{slug}", BySlugResource(store))
    app.add_route(f"{ORG}/usage", UsageResource(store))
    app.add_route(f"{ORG}/settings", SettingsResource(store))
    app.add_route(f"{ORG}/projects", ProjectsResource(store))
    app.add_route(f"{ORG}/projects/{{project_id:{ID}}}", ProjectResource(store))
