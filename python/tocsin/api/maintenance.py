"""`/api/maintenance/…`: one-off and recurring maintenance windows in a time zone, kept
in the store and pushed to the engine (which flags their checks while they are open)."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from typing_extensions import TypedDict

from tocsin import schedules
from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID
from tocsin.api.schemas import (
    MAX_ID,
    Id,
    TimeZoneName,
    json_number,
    not_boolean,
    parse,
    parse_time,
)
from tocsin.maintenance import MaintenanceWindow
from tocsin.store.base import Row, Store
from tocsin.windows import KIND, WindowBook, check_rule, engine_window

log = logging.getLogger("tocsin.api.maintenance")

MAX_DURATION_S = 366 * 86_400
# A body whose keys are all these is a Checkstack plugin call, not a new window.
PLUGIN_PROCEDURES = frozenset({"getWindows", "scheduleWindow"})
Time = float | str | None


class WindowBody(BaseModel):
    """A window's fields as clients send them; a change (PUT) changes only what it
    sends."""

    # Clients send extra fields (and the plugin surface shares this path): ignored.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    check_ids: list[Id] | None = Field(default=None, max_length=1000)
    starts_at: Time = Field(default=None, description="ISO 8601 or Unix seconds")
    start_time: Time = Field(default=None, description="alias of starts_at")
    duration: int | None = Field(default=None, ge=1, le=MAX_DURATION_S, description="seconds")
    ends_at: Time = Field(default=None, description="instead of duration: end of the first one")
    end_time: Time = Field(default=None, description="alias of ends_at")
    rrule: str | None = Field(default=None, max_length=500, description="e.g. FREQ=WEEKLY;BYDAY=SU")
    cron: str | None = Field(default=None, max_length=200)
    timezone: TimeZoneName | None = Field(default=None, max_length=64)
    is_active: StrictBool | None = None
    organization_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    org_id: int | None = Field(default=None, ge=0, le=MAX_ID)

    @field_validator("duration", "organization_id", "org_id", "check_ids", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("starts_at", "start_time", "ends_at", "end_time", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return not_boolean(v)


def _one_of(*fields: str) -> dict[str, Any]:
    """At least one of `fields` is sent, and not null."""
    return {
        "anyOf": [{"required": [f], "properties": {f: {"not": {"type": "null"}}}} for f in fields]
    }


class WindowCreate(WindowBody):
    """A new window: a name, a start (`starts_at` or `start_time`) and a length
    (`duration`, `ends_at` or `end_time`). A body of only Checkstack plugin procedures
    (`getWindows`, `scheduleWindow`) is answered 501: that surface is not served yet."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        json_schema_extra={
            "allOf": [
                _one_of("starts_at", "start_time"),
                _one_of("duration", "ends_at", "end_time"),
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)


class WindowJson(TypedDict):
    id: int
    organization_id: int
    name: str
    description: str
    check_ids: list[int]
    # the first occurrence (both names say the same)
    starts_at: str
    start_time: str
    ends_at: str
    end_time: str
    # seconds
    duration: int
    rrule: str | None
    cron: str | None
    is_recurring: bool
    timezone: str
    is_active: bool
    created_by: int | None
    # why the stored window could not be loaded at start (null when it was)
    schedule_error: str | None
    created_at: str
    updated_at: str


def window_json(row: Row, book: WindowBook | None = None) -> WindowJson:
    start, duration = row["starts_at"], row["duration_s"]
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"],
        "check_ids": row["check_ids"],
        "starts_at": iso(start),
        "start_time": iso(start),
        "ends_at": iso(start + duration),
        "end_time": iso(start + duration),
        "duration": duration,
        "rrule": row["rrule"],
        "cron": row["cron"],
        "is_recurring": bool(row["rrule"] or row["cron"]),
        "timezone": row["timezone"],
        "is_active": row["is_active"],
        "created_by": row["created_by"],
        # Why the stored window could not be loaded at start (null when it was).
        "schedule_error": book.refused.get(row["id"]) if book is not None else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def next_start(window: MaintenanceWindow, t: float) -> float | None:
    """When the window next opens after `t` (not counting an occurrence open at `t`)."""
    if window.active_at(t):
        end = window.next_change(t)
        if end is None or window.active_at(end):
            # Occurrences that overlap: the next one is already open when this one ends.
            return end
        t = end
    return window.next_change(t)


def _pick(body: WindowBody, *names: str) -> tuple[str, float | str] | None:
    for name in names:
        value = getattr(body, name)
        if value is not None:
            return name, value
    return None


def window_fields(body: WindowBody, old: Row | None) -> dict[str, Any]:
    """The row to store: the body over the stored row (if any), validated as a whole."""
    fields: dict[str, Any] = {}
    name = body.name if body.name is not None else (old or {}).get("name")
    if name is None:
        raise field_error("name", "Field required", "missing")
    fields["name"] = name
    fields["description"] = (
        body.description if body.description is not None else (old or {}).get("description", "")
    )
    fields["is_active"] = (
        body.is_active if body.is_active is not None else (old or {}).get("is_active", True)
    )
    tz = body.timezone if body.timezone is not None else (old or {}).get("timezone") or "UTC"
    try:
        zone = schedules.time_zone(tz)
    except ValueError as exc:
        raise _refusal(exc, "timezone") from None
    fields["timezone"] = tz

    given = _pick(body, "starts_at", "start_time")
    if given is not None:
        start = parse_time(given[0], given[1], zone)
    elif old is not None:
        start = float(old["starts_at"])
    else:
        raise field_error("starts_at", "Field required", "missing")
    fields["starts_at"] = start

    end = _pick(body, "ends_at", "end_time")
    duration: int | None = body.duration
    if end is not None:
        by_end = round(parse_time(end[0], end[1], zone) - start)
        if by_end < 1:
            raise field_error(end[0], "must be after starts_at")
        if duration is not None and duration != by_end:
            raise field_error(end[0], "disagrees with duration; send one of them")
        if by_end > MAX_DURATION_S:
            raise field_error(end[0], f"a window lasts at most {MAX_DURATION_S} seconds")
        duration = by_end
    if duration is None:
        if old is None:
            raise field_error("duration", "Field required (or ends_at)", "missing")
        duration = int(old["duration_s"])
    fields["duration_s"] = duration

    for key in ("rrule", "cron"):
        sent = getattr(body, key)
        fields[key] = (sent if sent is not None else (old or {}).get(key)) or None
    ids = body.check_ids if body.check_ids is not None else (old or {}).get("check_ids", [])
    fields["check_ids"] = sorted(set(ids))
    try:
        engine_window({**fields, "timezone": tz})
    except ValueError as exc:
        raise _refusal(exc, "rrule") from None
    return fields


def _refusal(exc: ValueError, default_field: str) -> Exception:
    field = getattr(exc, "field", None) or default_field
    return field_error(field, getattr(exc, "reason", None) or str(exc))


async def check_recurrence(fields: dict[str, Any]) -> None:
    """A recurring window must match at some time and recur at most hourly: the same
    check (`windows.check_rule`) the engine's window book makes when it loads it."""
    key = "cron" if fields["cron"] else "rrule"
    try:
        await check_rule(fields)
    except ValueError as exc:
        raise _refusal(exc, key) from None


async def _own_checks(store: Store, org_id: int, check_ids: list[int]) -> None:
    for cid in check_ids:
        if await store.get_check([org_id], cid) is None:
            raise field_error("check_ids", f"check {cid} not found", "not_found")


ACTIVE = query.Bool("is_active", "only enabled (true) or disabled (false) windows")


class WindowsResource:
    body_models: ClassVar = {"post": WindowCreate}
    response_models: ClassVar = {"get": list[WindowJson], "post": WindowJson}
    query_params: ClassVar = {
        "get": (query.limit(100, 500), query.OFFSET, query.ORGANIZATION_ID, ACTIVE)
    }

    def __init__(self, ctx: AppContext, book: WindowBook) -> None:
        self._store = ctx.store
        self._book = book
        self._subscribers = ctx.subscribers

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        org_ids = p.org_ids
        org = query.ORGANIZATION_ID.get(req)
        if org is not None:
            org_ids = [o for o in org_ids if o == org]
        where: dict[str, Any] = {}
        active = ACTIVE.get(req)
        if active is not None:
            where["is_active"] = active
        if not org_ids:
            resp.media = []
            resp.set_header("X-Total-Count", "0")
            return
        rows = await self._store.select(KIND, org_ids, where=where, limit=limit, offset=offset)
        total = await self._store.count(KIND, org_ids, where=where)
        resp.media = [window_json(r, self._book) for r in rows]
        resp.set_header("X-Total-Count", str(total))

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Create a window (a Checkstack plugin call is answered 501: see WindowCreate)."""
        p = principal(req)
        raw = await read_json_object(req)
        if raw and set(raw) <= PLUGIN_PROCEDURES:
            raise falcon.HTTPError(falcon.HTTP_501, description="plugin surface not available yet")
        body: WindowCreate = parse(WindowCreate, raw)
        org_id = body.organization_id or body.org_id or p.default_org_id
        if org_id is None:
            raise falcon.HTTPForbidden(description="you belong to no organisation")
        require_role(p, org_id, "MEMBER")
        fields = window_fields(body, None)
        await check_recurrence(fields)
        await _own_checks(self._store, org_id, fields["check_ids"])
        row = await self._store.insert(KIND, org_id, {**fields, "created_by": p.user_id})
        self._book.put(row)
        # Status page subscribers hear of it (if this fails, the subscribers' watcher
        # announces windows created in the last day: notify/subscribers.py).
        try:
            await self._subscribers.window_scheduled(row)
        except Exception:
            log.exception("announcing maintenance window %s to subscribers failed", row["id"])
        resp.media = window_json(row, self._book)


class WindowResource:
    body_models: ClassVar = {"put": WindowBody}
    response_models: ClassVar = {"get": WindowJson, "put": WindowJson, "delete": None}

    def __init__(self, ctx: AppContext, book: WindowBook) -> None:
        self._store = ctx.store
        self._book = book

    async def _row(self, req: falcon.asgi.Request, window_id: int) -> Row:
        row = await self._store.get(KIND, principal(req).org_ids, window_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Maintenance window not found")
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, window_id: int
    ) -> None:
        resp.media = window_json(await self._row(req, window_id), self._book)

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, window_id: int
    ) -> None:
        p = principal(req)
        old = await self._row(req, window_id)
        org_id = old["organization_id"]
        require_role(p, org_id, "MEMBER")
        body: WindowBody = parse(WindowBody, await read_json_object(req))
        fields = window_fields(body, old)
        await check_recurrence(fields)
        if body.check_ids is not None:
            await _own_checks(self._store, org_id, fields["check_ids"])
        row = await self._store.update(KIND, [org_id], window_id, fields)
        if row is None:  # deleted meanwhile
            raise falcon.HTTPNotFound(description="Maintenance window not found")
        self._book.put(row)
        resp.media = window_json(row, self._book)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, window_id: int
    ) -> None:
        p = principal(req)
        old = await self._row(req, window_id)
        require_role(p, old["organization_id"], "MEMBER")
        if not await self._store.delete(KIND, [old["organization_id"]], window_id):
            raise falcon.HTTPNotFound(description="Maintenance window not found")
        self._book.drop(window_id)
        resp.status = falcon.HTTP_204


class CurrentWindowJson(TypedDict):
    id: int
    name: str
    ends_at: str


class CheckMaintenanceJson(TypedDict):
    check_id: int
    in_maintenance: bool
    # the open window that ends last (null when none is open)
    current_window: CurrentWindowJson | None
    next_window_start: str | None


class CheckMaintenanceResource:
    """Whether a check is in maintenance now, and when its next window opens."""

    response_models: ClassVar = {"get": CheckMaintenanceJson}

    def __init__(self, ctx: AppContext, book: WindowBook) -> None:
        self._store = ctx.store
        self._engine = ctx.engine
        self._book = book

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        check = await self._store.get_check(principal(req).org_ids, check_id)
        if check is None:
            raise falcon.HTTPNotFound(description="Check not found")
        now = time.time()
        current: dict[str, Any] | None = None
        starts: list[float] = []
        for row, window in self._book.of_check(check["organization_id"], check_id):
            if window.active_at(now):
                ends = window.next_change(now)
                if current is None or (ends or 0) > current["_ends"]:
                    current = {"id": row["id"], "name": row["name"], "_ends": ends or 0}
            nxt = next_start(window, now)
            if nxt is not None:
                starts.append(nxt)
        answer: CheckMaintenanceJson = {
            "check_id": check_id,
            "in_maintenance": self._engine.in_maintenance(check_id),
            "current_window": None
            if current is None
            else {"id": current["id"], "name": current["name"], "ends_at": iso(current["_ends"])},
            "next_window_start": iso(min(starts)) if starts else None,
        }
        resp.media = answer


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    book = ctx.windows
    app.add_route("/api/maintenance", WindowsResource(ctx, book))
    app.add_route(f"/api/maintenance/{{window_id:{ID}}}", WindowResource(ctx, book))
    app.add_route(
        f"/api/maintenance/check/{{check_id:{ID}}}/status", CheckMaintenanceResource(ctx, book)
    )
