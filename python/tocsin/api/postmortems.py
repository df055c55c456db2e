"""`/api/organizations/{org_id}/postmortems/…`: reviews of one or more incidents, started
from their timelines (tocsin/workflow/postmortems.py), written in sections, moved from
draft to review to published, and exported as Markdown. See docs/postmortems.md.

Rights: VIEWER reads; MEMBER writes (incident work); deleting is for an ADMIN or the
review's author."""

from __future__ import annotations

import datetime as dt
import time
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
from tocsin.api.schemas import MAX_ID, json_number, parse
from tocsin.store.base import Principal, Row, Store
from tocsin.workflow import postmortems as pm

KIND = "postmortems"
NOT_FOUND = "Postmortem not found"
MAX_INCIDENTS = 50
MAX_ACTION_ITEMS = 100
MAX_SECTION = 50_000

Status = Literal["draft", "in_review", "published"]
STATUS_ALIASES = {"review": "in_review", "in-review": "in_review", "inreview": "in_review"}
ItemStatus = Literal["open", "done"]
ITEM_ALIASES = {"todo": "open", "in_progress": "open", "completed": "done", "closed": "done"}


def _alias(aliases: dict[str, str]) -> Any:
    def convert(v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower()
            return aliases.get(v, v)
        return v

    return convert


class ActionItem(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=500)
    owner_id: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="a member (0 or null: none)"
    )
    due_date: dt.date | None = Field(default=None, description="YYYY-MM-DD")
    status: ItemStatus = "open"

    _status = field_validator("status", mode="before")(_alias(ITEM_ALIASES))

    @field_validator("owner_id", mode="before")
    @classmethod
    def _owner(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("due_date", mode="before")
    @classmethod
    def _due(cls, v: Any) -> Any:
        if v == "":
            return None
        if isinstance(v, str) and "T" in v:
            return v.split("T", 1)[0]  # a datetime: its day
        return v


class PostmortemBody(BaseModel):
    """A review's fields; a change (PUT, PATCH) changes only what it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str | None = Field(default=None, max_length=300)
    status: Status | None = None
    incident_ids: list[int] | None = Field(default=None, max_length=MAX_INCIDENTS)
    summary: str | None = Field(default=None, max_length=MAX_SECTION)
    impact: str | None = Field(default=None, max_length=MAX_SECTION)
    root_cause: str | None = Field(default=None, max_length=MAX_SECTION)
    what_went_well: str | None = Field(default=None, max_length=MAX_SECTION)
    what_went_wrong: str | None = Field(default=None, max_length=MAX_SECTION)
    action_items: list[ActionItem] | None = Field(default=None, max_length=MAX_ACTION_ITEMS)

    _status = field_validator("status", mode="before")(_alias(STATUS_ALIASES))

    @field_validator("incident_ids", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [json_number(x) for x in v]
        return v


class PostmortemCreate(PostmortemBody):
    incident_ids: list[int] = Field(min_length=1, max_length=MAX_INCIDENTS)


class ActionItemJson(TypedDict):
    title: str
    owner_id: int | None
    due_date: str | None
    status: str


class PostmortemJson(TypedDict):
    id: int
    organization_id: int
    title: str
    status: str
    incident_ids: list[int]
    # derived from the incidents' timelines (see docs/postmortems.md)
    timeline: dict[str, Any]
    summary: str
    impact: str
    root_cause: str
    what_went_well: str
    what_went_wrong: str
    action_items: list[ActionItemJson]
    author_id: int | None
    published_at: str | None
    created_at: str
    updated_at: str


def postmortem_json(row: Row) -> PostmortemJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "title": row["title"],
        "status": row["status"],
        "incident_ids": [int(i) for i in row["incident_ids"] or []],
        "timeline": row["timeline"] or {},
        "summary": row["summary"] or "",
        "impact": row["impact"] or "",
        "root_cause": row["root_cause"] or "",
        "what_went_well": row["what_went_well"] or "",
        "what_went_wrong": row["what_went_wrong"] or "",
        "action_items": row["action_items"] or [],
        "author_id": row["author_id"],
        "published_at": iso(row["published_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def _incidents(store: Store, org_id: int, ids: list[int]) -> list[Row]:
    """The organisation's incidents, in the order given (once each); 422 naming the
    first that is not one of them."""
    out: list[Row] = []
    seen: set[int] = set()
    for i, iid in enumerate(ids):
        row = await store.get("incidents", [org_id], iid) if 1 <= iid <= MAX_ID else None
        if row is None:
            raise field_error(["incident_ids", i], f"incident {iid} not found", "not_found")
        if iid not in seen:
            seen.add(iid)
            out.append(row)
    return out


async def _timeline(store: Store, org_id: int, incidents: list[Row]) -> dict[str, Any]:
    return pm.prefill([(r, await pm.incident_events(store, org_id, r["id"])) for r in incidents])


async def _check_names(store: Store, org_id: int, incidents: list[Row]) -> dict[int, str]:
    ids = [int(r["check_id"]) for r in incidents if r.get("check_id")]
    return {int(c["id"]): c["name"] for c in await store.get_checks([org_id], ids)} if ids else {}


async def _items(store: Store, org_id: int, items: list[ActionItem]) -> list[dict[str, Any]]:
    members = {int(m["user_id"]) for m in await store.list_members([org_id], org_id)}
    out = []
    for i, item in enumerate(items):
        owner = item.owner_id or None
        if owner is not None and owner not in members:
            raise field_error(
                ["action_items", i, "owner_id"],
                f"user {owner} is not a member of the organisation",
                "not_found",
            )
        out.append(
            {
                "title": item.title,
                "owner_id": owner,
                "due_date": item.due_date.isoformat() if item.due_date else None,
                "status": item.status,
            }
        )
    return out


_SECTIONS = ("summary", "impact", "root_cause", "what_went_well", "what_went_wrong")


async def _fields(
    store: Store, org_id: int, body: PostmortemBody, old: Row | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in _SECTIONS:
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if body.title:
        fields["title"] = body.title
    if body.action_items is not None:
        fields["action_items"] = await _items(store, org_id, body.action_items)
    if body.incident_ids is not None:
        if not body.incident_ids:
            raise field_error("incident_ids", "must name at least one incident")
        incidents = await _incidents(store, org_id, body.incident_ids)
        fields["incident_ids"] = [int(r["id"]) for r in incidents]
        fields["timeline"] = await _timeline(store, org_id, incidents)
        if old is None:
            fields.setdefault("title", f"Postmortem: {incidents[0]['title']}"[:300])
            if not fields.get("impact"):
                names = await _check_names(store, org_id, incidents)
                fields["impact"] = pm.default_impact(fields["timeline"], names)
    if body.status is not None:
        fields["status"] = body.status
        if body.status == "published" and (old is None or old["status"] != "published"):
            fields["published_at"] = time.time()
        elif body.status != "published":
            fields["published_at"] = None
    return fields


STATUS = query.Text(
    "status", "only reviews in this status", choices=("draft", "in_review", "published")
)
INCIDENT = query.OptInt("incident_id", 1, query.MAX_ID, "only reviews of this incident")


class PostmortemsResource:
    body_models: ClassVar = {"post": PostmortemCreate}
    response_models: ClassVar = {"get": list[PostmortemJson], "post": PostmortemJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, STATUS, INCIDENT)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        status = STATUS.get(req)
        where = {"status": status} if status is not None else None
        incident = INCIDENT.get(req)
        if incident is None:
            rows = await self._store.select(
                KIND, [org_id], where=where, limit=limit, offset=offset, newest_first=True
            )
            total = await self._store.count(KIND, [org_id], where=where)
        else:
            every: list[Row] = []
            while True:
                page = await self._store.select(
                    KIND, [org_id], where=where, limit=500, offset=len(every), newest_first=True
                )
                every += page
                if len(page) < 500:
                    break
            matching = [r for r in every if incident in (r["incident_ids"] or [])]
            total, rows = len(matching), matching[offset : offset + limit]
        resp.set_header("X-Total-Count", str(total))
        resp.media = [postmortem_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """A review of these incidents, its timeline filled in from theirs."""
        p = principal(req)
        require_role(p, org_id, "MEMBER")
        body: PostmortemCreate = parse(PostmortemCreate, await read_json_object(req))
        fields = await _fields(self._store, org_id, body, None)
        fields.setdefault("status", "draft")
        fields["author_id"] = p.user_id
        row = await self._store.insert(KIND, org_id, fields)
        resp.status = falcon.HTTP_201
        resp.media = postmortem_json(row)


async def _get(store: Store, p: Principal, org_id: int, pid: int, role: str) -> Row:
    require_role(p, org_id, role)
    row = await store.get(KIND, [org_id], pid)
    if row is None:
        raise falcon.HTTPNotFound(description=NOT_FOUND)
    return row


class PostmortemResource:
    body_models: ClassVar = {"put": PostmortemBody, "patch": PostmortemBody}
    response_models: ClassVar = {
        "get": PostmortemJson,
        "put": PostmortemJson,
        "patch": PostmortemJson,
        "delete": None,
    }

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, pid: int
    ) -> None:
        resp.media = postmortem_json(await _get(self._store, principal(req), org_id, pid, "VIEWER"))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, pid: int
    ) -> None:
        old = await _get(self._store, principal(req), org_id, pid, "MEMBER")
        body: PostmortemBody = parse(PostmortemBody, await read_json_object(req))
        fields = await _fields(self._store, org_id, body, old)
        row = await self._store.update(KIND, [org_id], pid, fields) if fields else old
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        resp.media = postmortem_json(row)

    on_patch = on_put

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, pid: int
    ) -> None:
        """An ADMIN, or the review's author, deletes it."""
        p = principal(req)
        row = await _get(self._store, p, org_id, pid, "MEMBER")
        if row["author_id"] != p.user_id:
            require_role(p, org_id, "ADMIN")
        await self._store.delete(KIND, [org_id], pid)
        resp.status = falcon.HTTP_204


class RefreshResource:
    response_models: ClassVar = {"post": PostmortemJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, pid: int
    ) -> None:
        """Derive the timeline again from the incidents' timelines (they may have moved
        on since the review started); the written sections stay."""
        row = await _get(self._store, principal(req), org_id, pid, "MEMBER")
        incidents = [
            r
            for r in [await self._store.get("incidents", [org_id], i) for i in row["incident_ids"]]
            if r is not None
        ]
        fields = {
            "incident_ids": [int(r["id"]) for r in incidents],
            "timeline": await _timeline(self._store, org_id, incidents),
        }
        updated = await self._store.update(KIND, [org_id], pid, fields)
        if updated is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        resp.media = postmortem_json(updated)


class ExportResource:
    response_media_type = "text/markdown"

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, pid: int
    ) -> None:
        """The review as Markdown (`text/markdown`), to paste or download."""
        row = await _get(self._store, principal(req), org_id, pid, "VIEWER")
        people = {
            int(m["user_id"]): m.get("full_name") or m["email"]
            for m in await self._store.list_members([org_id], org_id)
        }
        resp.content_type = "text/markdown; charset=utf-8"
        resp.set_header("Content-Disposition", f'attachment; filename="postmortem-{pid}.md"')
        resp.text = pm.markdown(postmortem_json(row), people)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/postmortems"
    one = f"{base}/{{pid:{ID}}}"
    app.add_route(base, PostmortemsResource(ctx.store))
    app.add_route(one, PostmortemResource(ctx.store))
    app.add_route(f"{one}/refresh-timeline", RefreshResource(ctx.store))
    app.add_route(f"{one}/export.md", ExportResource(ctx.store))
