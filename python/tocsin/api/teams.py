"""`/api/organizations/{org_id}/teams/…`: teams, their members (each with a role in the
team) and what they own: checks, services, on-call schedules, escalation policies and
status pages name an owning team (`owner_team_id`) and their lists filter by it
(`?team_id=`). See docs/teams.md.

Rights: VIEWER reads; ADMIN creates, changes and deletes teams; the members of a team are
managed by an ADMIN or by a `lead` of that team."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import json_number, parse
from tocsin.slugs import SLUG_RE, numbered, slugify
from tocsin.store.base import ConflictError, Principal, Row, Store

KIND = "teams"
MEMBERS = "team_members"
NOT_FOUND = "Team not found"
MEMBER_NOT_FOUND = "Team member not found"
MAX_TEAM_MEMBERS = 1000
# The resources of a team listed per kind (the first ones; counts are exact).
RESOURCES_LIMIT = 500

TeamRole = Literal["lead", "member", "observer"]
# What clients send for a team role, as tocsin names it.
ROLE_ALIASES = {
    "owner": "lead",
    "manager": "lead",
    "admin": "lead",
    "responder": "member",
    "viewer": "observer",
}


def _role(v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip().lower()
        return ROLE_ALIASES.get(v, v)
    return v


class TeamBody(BaseModel):
    """A team's fields; a change (PUT) changes only what it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(
        default=None,
        max_length=64,
        description="unique in the organisation; made from the name when absent or empty",
    )
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str | None) -> str | None:
        if v:
            v = v.lower()
            if not SLUG_RE.fullmatch(v):
                raise ValueError("must be lower-case letters, digits and inner hyphens")
        return v or None


class MemberRoleBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: TeamRole = "member"

    @field_validator("role", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return _role(v)


class TeamCreate(TeamBody):
    name: str = Field(min_length=1, max_length=200)
    # Members to add with the team (each a member of the organisation).
    members: list[MemberAdd] = Field(default_factory=list, max_length=MAX_TEAM_MEMBERS)


class MemberAdd(MemberRoleBody):
    user_id: int = Field(ge=1, le=query.MAX_ID)

    @field_validator("user_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


TeamCreate.model_rebuild()


class TeamMemberJson(TypedDict):
    user_id: int
    email: str | None
    full_name: str | None
    role: str
    added_at: str


class TeamJson(TypedDict):
    id: int
    organization_id: int
    name: str
    slug: str
    description: str
    member_count: int
    members: list[TeamMemberJson]
    created_at: str
    updated_at: str


class ResourceJson(TypedDict):
    id: int
    name: str
    # checks: their status; services: derived from their checks (see services)
    status: str | None


class TeamResourcesJson(TypedDict):
    team_id: int
    checks: list[ResourceJson]
    services: list[ResourceJson]
    schedules: list[ResourceJson]
    escalation_policies: list[ResourceJson]
    status_pages: list[ResourceJson]
    counts: dict[str, int]


async def _members(store: Store, org_id: int, team_id: int) -> list[TeamMemberJson]:
    rows = await store.select(MEMBERS, [org_id], where={"team_id": team_id}, limit=MAX_TEAM_MEMBERS)
    people = {int(m["user_id"]): m for m in await store.list_members([org_id], org_id)}
    out: list[TeamMemberJson] = []
    for r in rows:
        who = people.get(int(r["user_id"])) or {}
        out.append(
            {
                "user_id": int(r["user_id"]),
                "email": who.get("email"),
                "full_name": who.get("full_name"),
                "role": r["role"],
                "added_at": iso(r["created_at"]),
            }
        )
    return out


def team_json(row: Row, members: list[TeamMemberJson]) -> TeamJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "slug": row["slug"],
        "description": row["description"] or "",
        "member_count": len(members),
        "members": members,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def _free_slug(store: Store, org_id: int, wanted: str | None, name: str, own: int) -> str:
    """`wanted` if free in the organisation (else 422), or one made from the name
    (numbered when taken)."""

    async def taken(slug: str) -> bool:
        rows = await store.select(KIND, [org_id], where={"slug": slug}, limit=1)
        return bool(rows) and int(rows[0]["id"]) != own

    if wanted:
        if await taken(wanted):
            raise field_error("slug", "is taken by another team of the organisation", "unique")
        return wanted
    base = slugify(name) or "team"
    for n in range(1, 1000):
        slug = base if n == 1 else numbered(base, n)
        if not await taken(slug):
            return slug
    raise field_error("slug", "cannot be made from the name; send one")


async def _org_members(store: Store, org_id: int) -> set[int]:
    return {int(m["user_id"]) for m in await store.list_members([org_id], org_id)}


async def _can_manage_members(store: Store, p: Principal, org_id: int, team_id: int) -> None:
    """ADMIN of the organisation, or a lead of the team (who is at least a MEMBER)."""
    require_role(p, org_id, "VIEWER")
    try:
        require_role(p, org_id, "ADMIN")
        return
    except falcon.HTTPForbidden:
        pass
    mine = await store.select(
        MEMBERS, [org_id], where={"team_id": team_id, "user_id": p.user_id}, limit=1
    )
    if mine and mine[0]["role"] == "lead" and p.roles.get(org_id) != "VIEWER":
        return
    raise falcon.HTTPForbidden(description="this needs the ADMIN role or a lead of the team")


TEAM_MEMBER = query.OptInt("user_id", 1, query.MAX_ID, "only teams this user is a member of")


class TeamsResource:
    body_models: ClassVar = {"post": TeamCreate}
    response_models: ClassVar = {"get": list[TeamJson], "post": TeamJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, TEAM_MEMBER)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        user = TEAM_MEMBER.get(req)
        if user is None:
            rows = await self._store.select(KIND, [org_id], limit=limit, offset=offset)
            total = await self._store.count(KIND, [org_id])
        else:
            links = await self._store.select(
                MEMBERS, [org_id], where={"user_id": user}, limit=MAX_TEAM_MEMBERS
            )
            ids = sorted(int(m["team_id"]) for m in links)
            total = len(ids)
            rows = [
                r for r in [await self._store.get(KIND, [org_id], i) for i in ids] if r is not None
            ][offset : offset + limit]
        resp.set_header("X-Total-Count", str(total))
        resp.media = [team_json(r, await _members(self._store, org_id, int(r["id"]))) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        body: TeamCreate = parse(TeamCreate, await read_json_object(req))
        people = await _org_members(self._store, org_id)
        for i, m in enumerate(body.members):
            if m.user_id not in people:
                raise field_error(
                    ["members", i, "user_id"],
                    f"user {m.user_id} is not a member of the organisation",
                    "not_found",
                )
        slug = await _free_slug(self._store, org_id, body.slug, body.name, 0)
        try:
            row = await self._store.insert(
                KIND,
                org_id,
                {"name": body.name, "slug": slug, "description": body.description or ""},
            )
        except ConflictError:
            raise field_error(
                "slug", "is taken by another team of the organisation", "unique"
            ) from None
        seen: set[int] = set()
        for m in body.members:
            if m.user_id not in seen:
                seen.add(m.user_id)
                await self._store.insert(
                    MEMBERS, org_id, {"team_id": row["id"], "user_id": m.user_id, "role": m.role}
                )
        resp.status = falcon.HTTP_201
        resp.media = team_json(row, await _members(self._store, org_id, int(row["id"])))


class TeamResource:
    body_models: ClassVar = {"put": TeamBody, "patch": TeamBody}
    response_models: ClassVar = {
        "get": TeamJson,
        "put": TeamJson,
        "patch": TeamJson,
        "delete": None,
    }

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _get(self, req: falcon.asgi.Request, org_id: int, team_id: int, role: str) -> Row:
        require_role(principal(req), org_id, role)
        row = await self._store.get(KIND, [org_id], team_id)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, team_id: int
    ) -> None:
        row = await self._get(req, org_id, team_id, "VIEWER")
        resp.media = team_json(row, await _members(self._store, org_id, team_id))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, team_id: int
    ) -> None:
        row = await self._get(req, org_id, team_id, "ADMIN")
        body: TeamBody = parse(TeamBody, await read_json_object(req))
        fields: dict[str, Any] = {}
        if body.name is not None:
            fields["name"] = body.name
        if body.description is not None:
            fields["description"] = body.description
        if body.slug is not None and body.slug != row["slug"]:
            fields["slug"] = await _free_slug(self._store, org_id, body.slug, "", team_id)
        if fields:
            try:
                updated = await self._store.update(KIND, [org_id], team_id, fields)
            except ConflictError:
                raise field_error(
                    "slug", "is taken by another team of the organisation", "unique"
                ) from None
            if updated is None:
                raise falcon.HTTPNotFound(description=NOT_FOUND)
            row = updated
        resp.media = team_json(row, await _members(self._store, org_id, team_id))

    on_patch = on_put

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, team_id: int
    ) -> None:
        """Delete the team: what it owned is owned by no team from now on."""
        await self._get(req, org_id, team_id, "ADMIN")
        if not await self._store.delete(KIND, [org_id], team_id):
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        resp.status = falcon.HTTP_204


class TeamMembersResource:
    body_models: ClassVar = {"post": MemberAdd}
    response_models: ClassVar = {"get": list[TeamMemberJson], "post": TeamMemberJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, team_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        if await self._store.get(KIND, [org_id], team_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        resp.media = await _members(self._store, org_id, team_id)

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, team_id: int
    ) -> None:
        """Add a member of the organisation to the team (or change their role)."""
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        if await self._store.get(KIND, [org_id], team_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        await _can_manage_members(self._store, p, org_id, team_id)
        body: MemberAdd = parse(MemberAdd, await read_json_object(req))
        if body.user_id not in await _org_members(self._store, org_id):
            raise field_error(
                "user_id", f"user {body.user_id} is not a member of the organisation", "not_found"
            )
        existing = await self._store.select(
            MEMBERS, [org_id], where={"team_id": team_id, "user_id": body.user_id}, limit=1
        )
        if existing:
            await self._store.update(MEMBERS, [org_id], existing[0]["id"], {"role": body.role})
        else:
            try:
                await self._store.insert(
                    MEMBERS,
                    org_id,
                    {"team_id": team_id, "user_id": body.user_id, "role": body.role},
                )
            except ConflictError:
                # Added at the same moment by another request: set the role.
                again = await self._store.select(
                    MEMBERS, [org_id], where={"team_id": team_id, "user_id": body.user_id}, limit=1
                )
                if again:
                    await self._store.update(MEMBERS, [org_id], again[0]["id"], {"role": body.role})
        resp.status = falcon.HTTP_201
        members = await _members(self._store, org_id, team_id)
        resp.media = next(m for m in members if m["user_id"] == body.user_id)


class TeamMemberResource:
    body_models: ClassVar = {"put": MemberRoleBody, "patch": MemberRoleBody}
    response_models: ClassVar = {
        "put": TeamMemberJson,
        "patch": TeamMemberJson,
        "delete": None,
    }

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _link(self, req: falcon.asgi.Request, org_id: int, team_id: int, user_id: int) -> Row:
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        if await self._store.get(KIND, [org_id], team_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        await _can_manage_members(self._store, p, org_id, team_id)
        rows = await self._store.select(
            MEMBERS, [org_id], where={"team_id": team_id, "user_id": user_id}, limit=1
        )
        if not rows:
            raise falcon.HTTPNotFound(description=MEMBER_NOT_FOUND)
        return rows[0]

    async def on_put(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        team_id: int,
        user_id: int,
    ) -> None:
        link = await self._link(req, org_id, team_id, user_id)
        body: MemberRoleBody = parse(MemberRoleBody, await read_json_object(req))
        await self._store.update(MEMBERS, [org_id], link["id"], {"role": body.role})
        members = await _members(self._store, org_id, team_id)
        resp.media = next(m for m in members if m["user_id"] == user_id)

    on_patch = on_put

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        team_id: int,
        user_id: int,
    ) -> None:
        link = await self._link(req, org_id, team_id, user_id)
        await self._store.delete(MEMBERS, [org_id], link["id"])
        resp.status = falcon.HTTP_204


class TeamResourcesResource:
    response_models: ClassVar = {"get": TeamResourcesJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, team_id: int
    ) -> None:
        """What the team owns: its checks (with their status), services, on-call
        schedules, escalation policies and status pages."""
        require_role(principal(req), org_id, "VIEWER")
        if await self._store.get(KIND, [org_id], team_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        store = self._store
        checks = await store.list_checks([org_id], limit=RESOURCES_LIMIT, offset=0, team_id=team_id)
        owned = {"owner_team_id": team_id}
        answer: TeamResourcesJson = {
            "team_id": team_id,
            "checks": [
                {
                    "id": c["id"],
                    "name": c["name"],
                    "status": c["status"] if c["is_active"] else "PAUSED",
                }
                for c in checks
            ],
            "services": [],
            "schedules": [],
            "escalation_policies": [],
            "status_pages": [],
            "counts": {},
        }
        for key, kind in (
            ("services", "services"),
            ("schedules", "oncall_schedules"),
            ("escalation_policies", "escalation_policies"),
            ("status_pages", "status_pages"),
        ):
            rows = await store.select(kind, [org_id], where=owned, limit=RESOURCES_LIMIT)
            answer[key] = [  # type: ignore[literal-required]
                {"id": r["id"], "name": r["name"], "status": None} for r in rows
            ]
            answer["counts"][key] = await store.count(kind, [org_id], where=owned)
        answer["counts"]["checks"] = len(checks)
        resp.media = answer


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/teams"
    team = f"{base}/{{team_id:{ID}}}"
    app.add_route(base, TeamsResource(ctx.store))
    app.add_route(team, TeamResource(ctx.store))
    app.add_route(f"{team}/members", TeamMembersResource(ctx.store))
    app.add_route(f"{team}/members/{{user_id:{ID}}}", TeamMemberResource(ctx.store))
    app.add_route(f"{team}/resources", TeamResourcesResource(ctx.store))
