"""`/api/organizations/{org_id}/oncall-schedules/…`: on-call schedules (layers that rotate
through members in the schedule's time zone, restrictions, overrides), who is on call
now and the shifts over a range. The computation is `tocsin.oncall`; see
docs/oncall.md."""

from __future__ import annotations

import datetime as dt
import math
import time
import zoneinfo
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import TypedDict

from tocsin import oncall, schedules
from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error, query_error
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import (
    MAX_EPOCH,
    TIME_OF_DAY_PATTERN,
    Id,
    TimeZoneName,
    json_number,
    not_boolean,
    parse,
    parse_time,
)
from tocsin.oncall.rows import schedule_of
from tocsin.store.base import Row, Store

KIND = "oncall_schedules"
OVERRIDES = "oncall_overrides"
MAX_LAYERS = 10
MAX_PARTICIPANTS = 100
MAX_RESTRICTIONS = 14
MAX_OVERRIDES = 1000
MAX_ROTATION_HOURS = 2160
DEFAULT_TIMELINE_S = 7 * 86_400
# Unix seconds up to the year 3000.
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RotationType = Literal["daily", "weekly", "custom"]
ClockTime = str
Time = float | str


TEAM = query.OptInt("team_id", 1, query.MAX_ID, "only schedules owned by this team")


class RestrictionBody(BaseModel):
    """On each of `days`, someone is on call from `start` to `end` (local wall time; an
    `end` at or before `start` is on the next day)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    days: list[Day] = Field(min_length=1, max_length=7)
    start: ClockTime = Field(pattern=TIME_OF_DAY_PATTERN, description="HH:MM local")
    end: ClockTime = Field(pattern=TIME_OF_DAY_PATTERN, description="HH:MM local")


class LayerBody(BaseModel):
    """A rotation through `participants` (user ids, members of the organisation)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(default="", max_length=200)
    rotation_type: RotationType = "daily"
    rotation_length_hours: int | None = Field(
        default=None, ge=1, le=MAX_ROTATION_HOURS, description="for custom rotations"
    )
    handoff_time: ClockTime = Field(
        default="09:00", pattern=TIME_OF_DAY_PATTERN, description="HH:MM local"
    )
    start: str | None = Field(
        default=None,
        max_length=40,
        description="ISO 8601 date (or date-time: its local date) of the first handoff;"
        " default today",
    )
    participants: list[Id] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    restrictions: list[RestrictionBody] = Field(default_factory=list, max_length=MAX_RESTRICTIONS)

    @field_validator("rotation_length_hours", "participants", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)


class ScheduleBody(BaseModel):
    """A schedule's fields; a change (PUT) changes only what it sends. `layers`, or the
    simple form of one layer (`rotation_type`, `handoff_time`, `participants`, …)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    timezone: TimeZoneName | None = Field(default=None, max_length=64)
    layers: list[LayerBody] | None = Field(default=None, min_length=1, max_length=MAX_LAYERS)
    # The simple form: one layer.
    rotation_type: RotationType | None = None
    rotation_length_hours: int | None = Field(default=None, ge=1, le=MAX_ROTATION_HOURS)
    handoff_time: ClockTime | None = Field(default=None, pattern=TIME_OF_DAY_PATTERN)
    start: str | None = Field(default=None, max_length=40)
    participants: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_PARTICIPANTS)
    restrictions: list[RestrictionBody] | None = Field(default=None, max_length=MAX_RESTRICTIONS)
    owner_team_id: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="the team that owns it (0 or null: none)"
    )

    @field_validator("rotation_length_hours", "participants", "owner_team_id", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)


class ScheduleCreate(ScheduleBody):
    """A new schedule: a name, and `layers` or `participants`."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        json_schema_extra={
            "anyOf": [
                {"required": [f], "properties": {f: {"not": {"type": "null"}}}}
                for f in ("layers", "participants")
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)


class OverrideCreate(BaseModel):
    """`user_id` is on call over [starts_at, ends_at) instead of whoever is."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    user_id: Id
    starts_at: Time = Field(description="ISO 8601 (local to the schedule without offset) or Unix s")
    ends_at: Time = Field(description="ISO 8601 (local to the schedule without offset) or Unix s")

    @field_validator("user_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return not_boolean(v)


class RestrictionJson(TypedDict):
    days: list[str]
    start: str
    end: str


class LayerJson(TypedDict):
    name: str
    rotation_type: str
    rotation_length_hours: int | None
    handoff_time: str
    start: str
    participants: list[int]
    restrictions: list[RestrictionJson]


class ScheduleJson(TypedDict):
    id: int
    organization_id: int
    name: str
    description: str
    timezone: str
    layers: list[LayerJson]
    # the first layer's, for clients of the simple form
    rotation_type: str
    handoff_time: str
    participants: list[int]
    owner_team_id: int | None
    created_at: str
    updated_at: str


class OverrideJson(TypedDict):
    id: int
    schedule_id: int
    user_id: int
    starts_at: str
    ends_at: str
    created_by: int | None
    created_at: str


class ShiftJson(TypedDict):
    user_id: int
    start: str
    end: str
    # the layer's index, null for an override
    layer: int | None
    override_id: int | None


class TimelineJson(TypedDict):
    schedule_id: int
    timezone: str
    # the range asked for
    start: str
    end: str
    shifts: list[ShiftJson]


class LayerNowJson(TypedDict):
    layer: int
    name: str
    user_id: int | None


class CurrentJson(TypedDict):
    schedule_id: int
    timezone: str
    at: str
    # who is on call now overall (null: nobody)
    user_id: int | None
    # the layer's index, null for an override or nobody
    layer: int | None
    override_id: int | None
    # when this shift ends (null: nobody, or not within 31 days)
    until: str | None
    layers: list[LayerNowJson]


def schedule_json(row: Row) -> ScheduleJson:
    layers: list[LayerJson] = row["layers"] or []
    first: dict[str, Any] = dict(layers[0]) if layers else {}
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"] or "",
        "timezone": row["timezone"],
        "layers": layers,
        "rotation_type": first.get("rotation_type", "daily"),
        "handoff_time": first.get("handoff_time", "09:00"),
        "participants": first.get("participants", []),
        "owner_team_id": row.get("owner_team_id"),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def override_json(row: Row) -> OverrideJson:
    return {
        "id": row["id"],
        "schedule_id": row["schedule_id"],
        "user_id": row["user_id"],
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
    }


def _start_date(field: Any, text: str | None, zone: zoneinfo.ZoneInfo) -> str:
    if text is None or text == "":
        return dt.datetime.now(zone).date().isoformat()
    try:
        if len(text) <= 10:
            return dt.date.fromisoformat(text).isoformat()
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise field_error(field, "must be an ISO 8601 date", "date_parsing") from None
    if not 1970 <= when.year <= 2999:
        raise field_error(field, "is out of range")
    if when.tzinfo is not None:
        when = when.astimezone(zone)
    if not 1970 <= when.year <= 2999:
        raise field_error(field, "is out of range")
    return when.date().isoformat()


def _layer_row(body: LayerBody, where: list[str | int], zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    if body.rotation_type == "custom" and body.rotation_length_hours is None:
        raise field_error([*where, "rotation_length_hours"], "is required for custom rotations")
    start = _start_date([*where, "start"], body.start, zone)
    if not "1970-01-02" <= start <= "2999-12-31":
        raise field_error([*where, "start"], "is out of range")
    return {
        "name": body.name,
        "rotation_type": body.rotation_type,
        "rotation_length_hours": body.rotation_length_hours
        if body.rotation_type == "custom"
        else None,
        "handoff_time": body.handoff_time,
        "start": start,
        "participants": list(body.participants),
        "restrictions": [
            {"days": list(dict.fromkeys(r.days)), "start": r.start, "end": r.end}
            for r in body.restrictions
        ],
    }


SIMPLE = (
    "rotation_type",
    "rotation_length_hours",
    "handoff_time",
    "start",
    "participants",
    "restrictions",
)


def schedule_fields(body: ScheduleBody, old: Row | None) -> dict[str, Any]:
    """The row to store: the body over the stored row (if any)."""
    fields: dict[str, Any] = {}
    if body.name is not None:
        fields["name"] = body.name
    elif old is None:
        raise field_error("name", "Field required", "missing")
    if body.description is not None:
        fields["description"] = body.description
    if "owner_team_id" in body.model_fields_set:
        # The store checks the team is the organisation's (422 naming the field).
        fields["owner_team_id"] = body.owner_team_id or None
    tz = body.timezone if body.timezone is not None else (old or {}).get("timezone") or "UTC"
    try:
        zone = schedules.time_zone(tz)
    except ValueError as exc:
        raise field_error("timezone", getattr(exc, "reason", None) or str(exc)) from None
    fields["timezone"] = tz
    simple = {k: getattr(body, k) for k in SIMPLE if getattr(body, k) is not None}
    if body.layers is not None:
        if simple:
            raise field_error(next(iter(simple)), "send layers or the simple form, not both")
        fields["layers"] = [
            _layer_row(layer, ["layers", i], zone) for i, layer in enumerate(body.layers)
        ]
    elif simple:
        base: dict[str, Any] = {}
        if old is not None and len(old["layers"] or []) == 1:
            base = {k: v for k, v in old["layers"][0].items() if v is not None}
        if "participants" not in simple and "participants" not in base:
            raise field_error("participants", "Field required", "missing")
        try:
            layer = LayerBody.model_validate({**base, **simple})
        except ValidationError:  # the stored layer and the sent fields disagree
            raise field_error(next(iter(simple)), "does not make a valid layer") from None
        fields["layers"] = [_layer_row(layer, [], zone)]
    elif old is None:
        raise field_error("participants", "Field required (or layers)", "missing")
    return fields


async def _members(store: Store, org_id: int) -> set[int]:
    return {m["user_id"] for m in await store.list_members([org_id], org_id)}


async def _check_members(
    store: Store, org_id: int, layers: list[dict[str, Any]], simple: bool
) -> None:
    members = await _members(store, org_id)
    for i, layer in enumerate(layers):
        for j, user in enumerate(layer["participants"]):
            if user not in members:
                where: list[str | int] = (
                    ["participants", j]
                    if simple
                    else [
                        "layers",
                        i,
                        "participants",
                        j,
                    ]
                )
                raise field_error(where, f"user {user} is not a member of the organisation")


class SchedulesResource:
    body_models: ClassVar = {"post": ScheduleCreate}
    response_models: ClassVar = {"get": list[ScheduleJson], "post": ScheduleJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, TEAM)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        team = TEAM.get(req)
        where = {"owner_team_id": team} if team is not None else None
        rows = await self._store.select(KIND, [org_id], where=where, limit=limit, offset=offset)
        resp.set_header("X-Total-Count", str(await self._store.count(KIND, [org_id], where=where)))
        resp.media = [schedule_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        body: ScheduleCreate = parse(ScheduleCreate, await read_json_object(req))
        fields = schedule_fields(body, None)
        await _check_members(self._store, org_id, fields["layers"], body.layers is None)
        row = await self._store.insert(KIND, org_id, fields)
        resp.status = falcon.HTTP_201
        resp.media = schedule_json(row)


async def _schedule(store: Store, req: falcon.asgi.Request, org_id: int, sid: int) -> Row:
    require_role(principal(req), org_id, "VIEWER")
    row = await store.get(KIND, [org_id], sid)
    if row is None:
        raise falcon.HTTPNotFound(description="On-call schedule not found")
    return row


async def _overrides(store: Store, org_id: int, sid: int) -> list[Row]:
    return await store.select(OVERRIDES, [org_id], where={"schedule_id": sid}, limit=MAX_OVERRIDES)


class ScheduleResource:
    body_models: ClassVar = {"put": ScheduleBody}
    response_models: ClassVar = {"get": ScheduleJson, "put": ScheduleJson, "delete": None}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        resp.media = schedule_json(await _schedule(self._store, req, org_id, schedule_id))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        old = await _schedule(self._store, req, org_id, schedule_id)
        require_role(principal(req), org_id, "ADMIN")
        body: ScheduleBody = parse(ScheduleBody, await read_json_object(req))
        fields = schedule_fields(body, old)
        if "layers" in fields:
            await _check_members(self._store, org_id, fields["layers"], body.layers is None)
        row = await self._store.update(KIND, [org_id], schedule_id, fields)
        if row is None:
            raise falcon.HTTPNotFound(description="On-call schedule not found")
        resp.media = schedule_json(row)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        await _schedule(self._store, req, org_id, schedule_id)
        require_role(principal(req), org_id, "ADMIN")
        if not await self._store.delete(KIND, [org_id], schedule_id):
            raise falcon.HTTPNotFound(description="On-call schedule not found")
        resp.status = falcon.HTTP_204


def _shift_json(s: oncall.Shift) -> ShiftJson:
    return {
        "user_id": s.user_id,
        "start": iso(s.start),
        "end": iso(s.end),
        "layer": s.layer,
        "override_id": s.override_id,
    }


class CurrentResource:
    response_models: ClassVar = {"get": CurrentJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        row = await _schedule(self._store, req, org_id, schedule_id)
        sched = schedule_of(row, await _overrides(self._store, org_id, schedule_id))
        now = time.time()
        shift = oncall.on_call_at(sched, now)
        answer: CurrentJson = {
            "schedule_id": schedule_id,
            "timezone": sched.timezone,
            "at": iso(now),
            "user_id": shift.user_id if shift else None,
            "layer": shift.layer if shift else None,
            "override_id": shift.override_id if shift else None,
            "until": iso(shift.end) if shift and shift.end < now + oncall.HORIZON_S else None,
            "layers": [
                {
                    "layer": i,
                    "name": (row["layers"][i].get("name") or ""),
                    "user_id": oncall.layer_on_call_at(sched, i, now),
                }
                for i in range(len(sched.layers))
            ],
        }
        resp.media = answer


FROM = query.Time("from", "start of the range (default now)")
TO = query.Time("to", "end of the range (default 7 days after from; at most 90 days)")


class TimelineResource:
    response_models: ClassVar = {"get": TimelineJson}
    query_params: ClassVar = {"get": (FROM, TO)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        start, end = FROM.get(req), TO.get(req)
        if start is None:
            start = time.time() if end is None else end - DEFAULT_TIMELINE_S
        if end is None:
            end = start + DEFAULT_TIMELINE_S
        for name, value in (("from", start), ("to", end)):
            if not math.isfinite(value) or not 0 <= value <= MAX_EPOCH:
                raise query_error(name, "is out of range")
        if end <= start:
            raise query_error("to", "must be after from")
        if end - start > oncall.MAX_RANGE_S:
            raise query_error("to", f"at most {oncall.MAX_RANGE_S // 86_400} days after from")
        row = await _schedule(self._store, req, org_id, schedule_id)
        sched = schedule_of(row, await _overrides(self._store, org_id, schedule_id))
        try:
            found = oncall.shifts(sched, start, end)
        except ValueError as exc:
            raise query_error("to", str(exc)) from None
        answer: TimelineJson = {
            "schedule_id": schedule_id,
            "timezone": sched.timezone,
            "start": iso(start),
            "end": iso(end),
            "shifts": [_shift_json(s) for s in found],
        }
        resp.media = answer


class OverridesResource:
    body_models: ClassVar = {"post": OverrideCreate}
    response_models: ClassVar = {"get": list[OverrideJson], "post": OverrideJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        await _schedule(self._store, req, org_id, schedule_id)
        rows = await _overrides(self._store, org_id, schedule_id)
        resp.media = [override_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, schedule_id: int
    ) -> None:
        row = await _schedule(self._store, req, org_id, schedule_id)
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: OverrideCreate = parse(OverrideCreate, await read_json_object(req))
        zone = schedules.time_zone(row["timezone"])
        start = parse_time("starts_at", body.starts_at, zone)
        end = parse_time("ends_at", body.ends_at, zone)
        if end <= start:
            raise field_error("ends_at", "must be after starts_at")
        if end - start > oncall.MAX_RANGE_S:
            raise field_error("ends_at", "an override lasts at most 90 days")
        if body.user_id not in await _members(self._store, org_id):
            raise field_error("user_id", f"user {body.user_id} is not a member of the organisation")
        where = {"schedule_id": schedule_id}
        if await self._store.count(OVERRIDES, [org_id], where=where) >= MAX_OVERRIDES:
            raise field_error("starts_at", f"a schedule has at most {MAX_OVERRIDES} overrides")
        created = await self._store.insert(
            OVERRIDES,
            org_id,
            {
                "schedule_id": schedule_id,
                "user_id": body.user_id,
                "starts_at": start,
                "ends_at": end,
                "created_by": p.user_id,
            },
        )
        resp.status = falcon.HTTP_201
        resp.media = override_json(created)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    store = ctx.store
    base = f"{ORG}/oncall-schedules"
    one = f"{base}/{{schedule_id:{ID}}}"
    app.add_route(base, SchedulesResource(store))
    app.add_route(one, ScheduleResource(store))
    app.add_route(f"{one}/current", CurrentResource(store))
    app.add_route(f"{one}/timeline", TimelineResource(store))
    app.add_route(f"{one}/overrides", OverridesResource(store))
