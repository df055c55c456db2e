"""`/api/organizations/{org_id}/lifecycle-watches/…`: watches of a product version's end
of life and new releases, and the notices they gave. The watching itself is
tocsin/workflow/lifecycle.py. See docs/lifecycle.md."""

from __future__ import annotations

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
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import Id, json_number, parse
from tocsin.store.base import Row, Store
from tocsin.workflow.lifecycle import PLATFORM, LifecycleWatcher

KIND = "lifecycle_watches"
NOT_FOUND = "Lifecycle watch not found"
MAX_CHANNELS = 50
PLATFORM_FILTER = query.Text("platform", "only watches of this platform")
VENDOR_FILTER = query.Text("vendor", "only watches of this vendor")
LIST_LIMIT = query.limit(100, 500)
NOTICES_LIMIT = query.limit(100, 500)


class WatchBody(BaseModel):
    """A watch's fields; a change (PUT) changes only what it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    vendor: str | None = Field(default=None, max_length=200)
    platform: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="the product's name in the feed (an endoflife.date product:"
        " `python`, `postgresql`, …); letters are read in lower case",
    )
    resource_id: str | None = Field(default=None, max_length=500)
    resource_type: str | None = Field(default=None, max_length=200)
    version: str | None = Field(
        default=None,
        max_length=100,
        description="the release cycle watched (`3.11`), or a release in it (`3.11.4`);"
        " empty or absent: the newest cycle",
    )
    notify_on_new: StrictBool | None = None
    notify_90d: StrictBool | None = None
    notify_30d: StrictBool | None = None
    notify_7d: StrictBool | None = None
    channel_ids: list[Id] | None = Field(default=None, max_length=MAX_CHANNELS)

    @field_validator("channel_ids", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("resource_id", "resource_type", "version", "vendor", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # Identifiers sent as numbers (`"resource_id": 42`) are kept as their text.
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if not PLATFORM.match(v):
            raise ValueError(
                "must be a product name: lower-case letters, digits, '.', '_', '+' or '-'"
            )
        return v


class WatchCreate(WatchBody):
    """A new watch: at least its platform."""

    platform: str = Field(
        min_length=1,
        max_length=100,
        description="the product's name in the feed (an endoflife.date product)",
    )


class LifecycleJson(TypedDict):
    """What the feed said of the watched cycle at the last pass."""

    cycle: str
    # the end-of-life date, or true/false when the feed gives no date (null: unknown)
    eol: str | bool | None
    # days until the end of life (negative: past it); null without a date
    days_left: int | None
    is_eol: bool
    latest: str | None
    latest_release_date: str | None
    release_date: str | None
    lts: bool


class WatchJson(TypedDict):
    id: int
    organization_id: int
    vendor: str
    platform: str
    resource_id: str | None
    resource_type: str | None
    version: str | None
    notify_on_new: bool
    notify_90d: bool
    notify_30d: bool
    notify_7d: bool
    channel_ids: list[int]
    last_checked_at: str | None
    known_latest: str | None
    # null until a pass of the watcher read the feed for it (or the cycle is unknown)
    lifecycle: LifecycleJson | None
    created_by: int | None
    created_at: str
    updated_at: str


class NoticeJson(TypedDict):
    id: int
    watch_id: int
    # eol_90d, eol_30d, eol_7d or new_release
    kind: str
    # the notice's key, unique per watch: `eol_30d:{cycle}`, `new_release:{version}`
    notice: str
    detail: dict[str, Any]
    at: str


def watch_json(row: Row, watcher: LifecycleWatcher) -> WatchJson:
    info = watcher.info(row["platform"], row.get("version"))
    lifecycle: LifecycleJson | None = None
    if info is not None:
        j = info.json()
        lifecycle = {
            "cycle": j["cycle"],
            "eol": j["eol"],
            "days_left": j["days_left"],
            "is_eol": j["is_eol"],
            "latest": j["latest"],
            "latest_release_date": j["latest_release_date"],
            "release_date": j["release_date"],
            "lts": j["lts"],
        }
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "vendor": row.get("vendor") or "",
        "platform": row["platform"],
        "resource_id": row.get("resource_id"),
        "resource_type": row.get("resource_type"),
        "version": row.get("version"),
        "notify_on_new": bool(row["notify_on_new"]),
        "notify_90d": bool(row["notify_90d"]),
        "notify_30d": bool(row["notify_30d"]),
        "notify_7d": bool(row["notify_7d"]),
        "channel_ids": [int(c) for c in row.get("channel_ids") or []],
        "last_checked_at": iso(row.get("last_checked_at")),
        "known_latest": row.get("known_latest"),
        "lifecycle": lifecycle,
        "created_by": row.get("created_by"),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def notice_json(row: Row) -> NoticeJson:
    key = str(row["notice"])
    return {
        "id": row["id"],
        "watch_id": row["watch_id"],
        "kind": key.split(":", 1)[0],
        "notice": key,
        "detail": row.get("detail") or {},
        "at": iso(row["at"]),
    }


async def _check_channels(store: Store, org_id: int, channel_ids: list[int]) -> None:
    """Every channel is one of the organisation's; 422 naming the first that is not."""
    for i, cid in enumerate(channel_ids):
        if await store.get("notification_channels", [org_id], cid) is None:
            raise field_error(["channel_ids", i], f"channel {cid} not found", "not_found")


async def watch_fields(store: Store, org_id: int, body: WatchBody) -> dict[str, Any]:
    sent = body.model_fields_set
    fields: dict[str, Any] = {}
    if body.vendor is not None:
        fields["vendor"] = body.vendor
    if body.platform is not None:
        fields["platform"] = body.platform
    for name in ("resource_id", "resource_type", "version"):
        if name in sent:
            # Empty text is no value.
            fields[name] = getattr(body, name) or None
    for name in ("notify_on_new", "notify_90d", "notify_30d", "notify_7d"):
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if body.channel_ids is not None:
        channels = list(dict.fromkeys(body.channel_ids))
        await _check_channels(store, org_id, channels)
        fields["channel_ids"] = channels
    return fields


class WatchesResource:
    body_models: ClassVar = {"post": WatchCreate}
    response_models: ClassVar = {"get": list[WatchJson], "post": WatchJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (LIST_LIMIT, query.OFFSET, PLATFORM_FILTER, VENDOR_FILTER)}

    def __init__(self, store: Store, watcher: LifecycleWatcher) -> None:
        self._store = store
        self._watcher = watcher

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = LIST_LIMIT.get(req), query.OFFSET.get(req)
        where: dict[str, Any] = {}
        platform = PLATFORM_FILTER.get(req)
        if platform is not None:
            where["platform"] = platform.lower()
        vendor = VENDOR_FILTER.get(req)
        if vendor is not None:
            where["vendor"] = vendor
        rows = await self._store.select(KIND, [org_id], where=where, limit=limit, offset=offset)
        resp.set_header("X-Total-Count", str(await self._store.count(KIND, [org_id], where=where)))
        resp.media = [watch_json(r, self._watcher) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: WatchCreate = parse(WatchCreate, await read_json_object(req))
        fields = await watch_fields(self._store, org_id, body)
        row = await self._store.insert(KIND, org_id, {**fields, "created_by": p.user_id})
        self._watcher.wake()
        resp.status = falcon.HTTP_201
        resp.media = watch_json(row, self._watcher)


class WatchResource:
    body_models: ClassVar = {"put": WatchBody}
    response_models: ClassVar = {"get": WatchJson, "put": WatchJson, "delete": None}

    def __init__(self, store: Store, watcher: LifecycleWatcher) -> None:
        self._store = store
        self._watcher = watcher

    async def _get(self, req: falcon.asgi.Request, org_id: int, watch_id: int, role: str) -> Row:
        require_role(principal(req), org_id, role)
        row = await self._store.get(KIND, [org_id], watch_id)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, watch_id: int
    ) -> None:
        resp.media = watch_json(await self._get(req, org_id, watch_id, "VIEWER"), self._watcher)

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, watch_id: int
    ) -> None:
        """Change the watch (only the fields sent). A change of platform or version
        starts the new-release tracking afresh: the next pass records the latest
        release without a notice."""
        current = await self._get(req, org_id, watch_id, "ADMIN")
        body: WatchBody = parse(WatchBody, await read_json_object(req))
        fields = await watch_fields(self._store, org_id, body)
        if any(k in fields and fields[k] != current.get(k) for k in ("platform", "version")):
            fields["known_latest"] = None
        row = await self._store.update(KIND, [org_id], watch_id, fields)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        self._watcher.wake()
        resp.media = watch_json(row, self._watcher)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, watch_id: int
    ) -> None:
        """Delete the watch and its notices."""
        require_role(principal(req), org_id, "ADMIN")
        if not await self._store.delete(KIND, [org_id], watch_id):
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        resp.status = falcon.HTTP_204


class NoticesResource:
    """The notices a watch gave, oldest first."""

    response_models: ClassVar = {"get": list[NoticeJson]}
    query_params: ClassVar = {"get": (NOTICES_LIMIT, query.OFFSET)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, watch_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        if await self._store.get(KIND, [org_id], watch_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        limit, offset = NOTICES_LIMIT.get(req), query.OFFSET.get(req)
        where = {"watch_id": watch_id}
        rows = await self._store.select(
            "lifecycle_notices", [org_id], where=where, limit=limit, offset=offset
        )
        total = await self._store.count("lifecycle_notices", [org_id], where=where)
        resp.set_header("X-Total-Count", str(total))
        resp.media = [notice_json(r) for r in rows]


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/lifecycle-watches"
    item = f"{base}/{{watch_id:{ID}}}"
    app.add_route(base, WatchesResource(ctx.store, ctx.lifecycle))
    app.add_route(item, WatchResource(ctx.store, ctx.lifecycle))
    app.add_route(f"{item}/notices", NoticesResource(ctx.store))
