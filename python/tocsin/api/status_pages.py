"""`/api/status-pages/…`: an organisation's status pages. A page shows some of the
organisation's checks as components (a display name, a section, a description); its
`check_ids` are always the components' checks, in order. Its public side (by slug, no
token) is in status_public.py; see docs/status-pages.md."""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID
from tocsin.api.schemas import MAX_ID, Id, json_number, parse
from tocsin.slugs import slugify
from tocsin.statuspages.invalidation import invalidate_page
from tocsin.statuspages.model import SLUG_RE, Component, components_of
from tocsin.statuspages.public import page_url
from tocsin.store.base import ConflictError, Row, Store

# The store table (generic organisation-owned rows).
KIND = "status_pages"
MAX_COMPONENTS = 1000
# A slug, or "" (a client's zero value: made from the name).
SLUG_OR_EMPTY = r"^(?:[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)?$"


class ComponentBody(BaseModel):
    """A check shown on the page."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    check_id: Id
    name: str = Field(default="", max_length=200, description='display name; "": the check\'s')
    section: str = Field(default="", max_length=200, description='"": in no section')
    description: str = Field(default="", max_length=1000)

    @field_validator("check_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class PageBody(BaseModel):
    """A page's fields as clients send them (unknown fields ignored, zero values taken as
    not given where a field cannot be empty); a change (PUT) changes only what it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, max_length=200)
    slug: str | None = Field(
        default=None,
        max_length=64,
        pattern=SLUG_OR_EMPTY,
        description="lower-case letters, digits and inner hyphens; unique on the server",
    )
    description: str | None = Field(default=None, max_length=2000)
    is_public: StrictBool | None = None
    logo_url: str | None = Field(default=None, max_length=2000, description="http(s) URL")
    check_ids: list[Id] | None = Field(default=None, max_length=MAX_COMPONENTS)
    components: list[ComponentBody] | None = Field(default=None, max_length=MAX_COMPONENTS)
    organization_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    org_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    owner_team_id: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="the team that owns it (0 or null: none)"
    )

    @field_validator("organization_id", "org_id", "check_ids", "owner_team_id", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)


class PageCreate(PageBody):
    """A new page: a name (the slug, when not given, is made from it)."""

    name: str = Field(min_length=1, max_length=200, pattern=r"\S")


class ComponentJson(TypedDict):
    check_id: int
    name: str
    section: str
    description: str


class StatusPageJson(TypedDict):
    id: int
    organization_id: int
    name: str
    slug: str
    description: str
    is_public: bool
    logo_url: str | None
    check_ids: list[int]
    components: list[ComponentJson]
    owner_team_id: int | None
    # the public HTML page (404 while the page is private)
    url: str
    created_at: str
    updated_at: str


def page_json(row: Row) -> StatusPageJson:
    comps = components_of(row.get("components") or [], row.get("check_ids") or [])
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "slug": row["slug"],
        "description": row["description"] or "",
        "is_public": bool(row["is_public"]),
        "logo_url": row.get("logo_url") or None,
        "check_ids": [c.check_id for c in comps],
        "owner_team_id": row.get("owner_team_id"),
        "components": [
            {
                "check_id": c.check_id,
                "name": c.name,
                "section": c.section,
                "description": c.description,
            }
            for c in comps
        ],
        "url": page_url(row["slug"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def _logo(url: str) -> str | None:
    if url == "":
        return None
    parts = urllib.parse.urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ch.isspace() or ord(ch) < 32 or ch in "\"'<>\\" for ch in url)
    ):
        raise field_error("logo_url", "must be an http or https URL")
    return url


def _components(body: PageBody, old: Row | None) -> list[Component] | None:
    """The components to store, or None to keep the stored ones."""
    if body.components:
        comps = [Component(c.check_id, c.name, c.section, c.description) for c in body.components]
        seen: set[int] = set()
        for i, c in enumerate(comps):
            if c.check_id in seen:
                raise field_error(["components", i, "check_id"], "lists a check twice")
            seen.add(c.check_id)
        if body.check_ids and set(body.check_ids) != seen:
            raise field_error("check_ids", "disagrees with components; send one of them")
        return comps
    if body.check_ids is not None:
        # Checks that stay keep their display names and sections.
        kept = {c.check_id: c for c in _stored(old)}
        ids = list(dict.fromkeys(body.check_ids))
        return [kept.get(cid) or Component(cid) for cid in ids]
    if body.components is not None or old is None:
        return []
    return None


def _stored(row: Row | None) -> list[Component]:
    if row is None:
        return []
    return components_of(row.get("components") or [], row.get("check_ids") or [])


async def page_fields(store: Store, body: PageBody, old: Row | None, org_id: int) -> dict[str, Any]:
    """The columns to write: the body over the stored row (if any), validated."""
    fields: dict[str, Any] = {}
    if body.name:
        fields["name"] = body.name
    elif old is None:
        raise field_error("name", "Field required", "missing")
    slug = body.slug or (slugify(body.name or "") if old is None else "")
    if old is None and not slug:
        raise field_error("slug", "cannot be made from the name; send one")
    if slug and (old is None or slug != old["slug"]):
        if not SLUG_RE.fullmatch(slug):
            raise field_error("slug", "must be lower-case letters, digits and inner hyphens")
        if await store.status_page_by_slug(slug) is not None:
            raise field_error("slug", "is taken by another status page", "unique")
        fields["slug"] = slug
    if body.description is not None:
        fields["description"] = body.description
    if "owner_team_id" in body.model_fields_set:
        # The store checks the team is the organisation's (422 naming the field).
        fields["owner_team_id"] = body.owner_team_id or None
    if body.is_public is not None:
        fields["is_public"] = body.is_public
    if body.logo_url is not None:
        fields["logo_url"] = _logo(body.logo_url)
    comps = _components(body, old)
    if comps is not None:
        from_components = bool(body.components)
        # One read for every component (a page may have a thousand).
        found = {
            int(r["id"]) for r in await store.check_states([org_id], [c.check_id for c in comps])
        }
        for i, c in enumerate(comps):
            if c.check_id not in found:
                where: str | list[str | int] = (
                    ["components", i, "check_id"] if from_components else "check_ids"
                )
                raise field_error(where, f"check {c.check_id} not found", "not_found")
        fields["components"] = [c.as_row() for c in comps]
        fields["check_ids"] = [c.check_id for c in comps]
    return fields


async def _write(store: Store, op: Any, *args: Any) -> Any:
    """A write that may lose the slug to another one at the same moment: 422 on slug."""
    try:
        return await op(*args)
    except ConflictError:
        raise field_error("slug", "is taken by another status page", "unique") from None


TEAM = query.OptInt("team_id", 1, query.MAX_ID, "only pages owned by this team")


class PagesResource:
    body_models: ClassVar = {"post": PageCreate}
    response_models: ClassVar = {"get": list[StatusPageJson], "post": StatusPageJson}
    query_params: ClassVar = {
        "get": (query.limit(100, 500), query.OFFSET, query.ORGANIZATION_ID, TEAM)
    }

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        org = query.ORGANIZATION_ID.get(req)
        org_ids = [o for o in p.org_ids if org is None or o == org]
        if not org_ids:
            resp.media = []
            resp.set_header("X-Total-Count", "0")
            return
        store = self._ctx.store
        team = TEAM.get(req)
        where = {"owner_team_id": team} if team is not None else None
        rows = await store.select(KIND, org_ids, where=where, limit=limit, offset=offset)
        resp.set_header("X-Total-Count", str(await store.count(KIND, org_ids, where=where)))
        resp.media = [page_json(r) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: PageCreate = parse(PageCreate, await read_json_object(req))
        org_id = body.organization_id or body.org_id or p.default_org_id
        if org_id is None:
            raise falcon.HTTPForbidden(description="you belong to no organisation")
        require_role(p, org_id, "MEMBER")
        store = self._ctx.store
        fields = await page_fields(store, body, None, org_id)
        fields.setdefault("description", "")
        fields.setdefault("is_public", True)
        fields.setdefault("logo_url", None)
        row = await _write(store, store.insert, KIND, org_id, fields)
        invalidate_page(self._ctx.public_cache, row["slug"])
        resp.media = page_json(row)


class PageResource:
    body_models: ClassVar = {"put": PageBody}
    response_models: ClassVar = {"get": StatusPageJson, "put": StatusPageJson, "delete": None}

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    async def _row(self, req: falcon.asgi.Request, page_id: int) -> Row:
        row = await self._ctx.store.get(KIND, principal(req).org_ids, page_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Status page not found")
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, page_id: int
    ) -> None:
        resp.media = page_json(await self._row(req, page_id))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, page_id: int
    ) -> None:
        p = principal(req)
        old = await self._row(req, page_id)
        org_id = old["organization_id"]
        require_role(p, org_id, "MEMBER")
        body: PageBody = parse(PageBody, await read_json_object(req))
        store = self._ctx.store
        fields = await page_fields(store, body, old, org_id)
        row = await _write(store, store.update, KIND, [org_id], page_id, fields)
        if row is None:  # deleted meanwhile
            raise falcon.HTTPNotFound(description="Status page not found")
        invalidate_page(self._ctx.public_cache, old["slug"], row["slug"])
        resp.media = page_json(row)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, page_id: int
    ) -> None:
        p = principal(req)
        old = await self._row(req, page_id)
        require_role(p, old["organization_id"], "MEMBER")
        if not await self._ctx.store.delete(KIND, [old["organization_id"]], page_id):
            raise falcon.HTTPNotFound(description="Status page not found")
        invalidate_page(self._ctx.public_cache, old["slug"])
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route("/api/status-pages", PagesResource(ctx))
    app.add_route(f"/api/status-pages/{{page_id:{ID}}}", PageResource(ctx))
