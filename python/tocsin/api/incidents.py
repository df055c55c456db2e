"""Incidents opened and resolved by verdict transitions: `/api/incidents`, one check's
incident (`GET /api/checks/{id}/incidents/{iid}`), ack, resolve, notes and timeline."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import parse
from tocsin.incidents import (
    INCIDENT_STATUSES,
    IncidentJson,
    IncidentManager,
    NoteJson,
    TimelineEventJson,
    incident_json,
    note_json,
    timeline_json,
)
from tocsin.store.base import Row, Store

# `{kind}` in the organisation routes: incidents of checks, or from inbound events.
INCIDENT_TYPES = {"check": "check", "inbound": "inbound"}
KIND = query.PathChoice(
    "kind", tuple(INCIDENT_TYPES), "incidents of checks, or from inbound events"
)
_SCAN_PAGE = 500


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    body: str = Field(min_length=1, max_length=10_000)


INCIDENTS_LIMIT = query.limit(50, 200)
INCIDENT_STATUS = query.Text("status", "only incidents in this state", choices=INCIDENT_STATUSES)
INCIDENT_CHECK = query.OptInt("check_id", 1, query.MAX_ID, "only this check's incidents")
INCIDENT_KIND = query.Text(
    "kind", "only incidents of checks, or from inbound events", choices=tuple(INCIDENT_TYPES)
)
SINCE = query.Time("since", "only incidents still open at or after this time")
UNTIL = query.Time("until", "only incidents started before this time")
NOTES_LIMIT = query.limit(100, 500)


class IncidentPageJson(TypedDict):
    """A page of incidents, newest first; `total` counts every one that matches."""

    total: int
    offset: int
    limit: int
    incidents: list[IncidentJson]


class TimelineJson(TypedDict):
    incident: IncidentJson
    # oldest first
    timeline: list[TimelineEventJson]


class IncidentsResource:
    query_params: ClassVar = {
        "get": (
            INCIDENTS_LIMIT,
            query.OFFSET,
            query.ORGANIZATION_ID,
            INCIDENT_STATUS,
            INCIDENT_CHECK,
            INCIDENT_KIND,
            SINCE,
            UNTIL,
        )
    }
    response_models: ClassVar = {"get": IncidentPageJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        limit, offset = INCIDENTS_LIMIT.get(req), query.OFFSET.get(req)
        org_ids = p.org_ids
        org_filter = query.ORGANIZATION_ID.get(req)
        if org_filter is not None:
            org_ids = [o for o in org_ids if o == org_filter]
        where: dict[str, Any] = {}
        status = INCIDENT_STATUS.get(req)
        if status is not None:
            where["status"] = status
        check_id = INCIDENT_CHECK.get(req)
        if check_id is not None:
            where["check_id"] = check_id
        kind = INCIDENT_KIND.get(req)
        if kind is not None:
            where["kind"] = INCIDENT_TYPES[kind]
        since, until = SINCE.get(req), UNTIL.get(req)
        if not org_ids:
            total, rows = 0, []
        elif since is None and until is None:
            total = await self._store.count("incidents", org_ids, where=where)
            rows = await self._store.select(
                "incidents", org_ids, where=where, limit=limit, offset=offset, newest_first=True
            )
        else:
            total, rows = await self._scan(org_ids, where, since, until, limit, offset)
        page: IncidentPageJson = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "incidents": [incident_json(r) for r in rows],
        }
        resp.media = page

    async def _scan(
        self,
        org_ids: list[int],
        where: dict[str, Any],
        since: float | None,
        until: float | None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[Row]]:
        # PERF: the generic store filters by equality only, so a time range is applied
        # here over the (already status/check-filtered) rows.
        total = 0
        out: list[Row] = []
        at = 0
        while True:
            page = await self._store.select(
                "incidents", org_ids, where=where, limit=_SCAN_PAGE, offset=at, newest_first=True
            )
            for row in page:
                started = row["started_at"]
                if (since is None or started >= since) and (until is None or started < until):
                    if offset <= total < offset + limit:
                        out.append(row)
                    total += 1
            if len(page) < _SCAN_PAGE:
                return total, out
            at += _SCAN_PAGE


async def check_incident(store: Store, req: falcon.asgi.Request, check_id: int, ref: int) -> Row:
    """The caller's incident `ref` of check `check_id`, for a MEMBER or higher."""
    p = principal(req)
    row = await store.get("incidents", p.org_ids, ref)
    if row is None or row["check_id"] != check_id:
        raise falcon.HTTPNotFound(description="Incident not found")
    require_role(p, row["organization_id"], "MEMBER")
    return row


class CheckIncidentResource:
    response_models: ClassVar = {"get": IncidentJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int, ref: int
    ) -> None:
        """One incident of the check, as in `GET /api/checks/{id}/incidents` (VIEWER)."""
        p = principal(req)
        row = await self._store.get("incidents", p.org_ids, ref)
        if row is None or row["check_id"] != check_id:
            raise falcon.HTTPNotFound(description="Incident not found")
        require_role(p, row["organization_id"], "VIEWER")
        resp.media = incident_json(row)


class AckResource:
    response_models: ClassVar = {"post": IncidentJson}

    def __init__(self, store: Store, manager: IncidentManager) -> None:
        self._store = store
        self._manager = manager

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int, ref: int
    ) -> None:
        row = await check_incident(self._store, req, check_id, ref)
        resp.media = incident_json(await self._manager.acknowledge(row, principal(req).user_id))


class ResolveResource:
    response_models: ClassVar = {"post": IncidentJson}

    def __init__(self, store: Store, manager: IncidentManager) -> None:
        self._store = store
        self._manager = manager

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int, ref: int
    ) -> None:
        row = await check_incident(self._store, req, check_id, ref)
        resp.media = incident_json(await self._manager.resolve(row, principal(req).user_id))


async def org_incident(
    store: Store, req: falcon.asgi.Request, org_id: int, kind: str, ref: int, role: str
) -> Row:
    p = principal(req)
    require_role(p, org_id, role)
    KIND.check(kind)
    row = await store.get("incidents", [org_id], ref)
    if row is None or row["kind"] != INCIDENT_TYPES[kind]:
        raise falcon.HTTPNotFound(description="Incident not found")
    return row


class NotesResource:
    path_params = (KIND,)
    body_models: ClassVar = {"post": NoteCreate}
    query_params: ClassVar = {"get": (NOTES_LIMIT, query.OFFSET)}
    response_models: ClassVar = {"get": list[NoteJson], "post": NoteJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store, manager: IncidentManager) -> None:
        self._store = store
        self._manager = manager

    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        kind: str,
        ref: int,
    ) -> None:
        row = await org_incident(self._store, req, org_id, kind, ref, "VIEWER")
        limit, offset = NOTES_LIMIT.get(req), query.OFFSET.get(req)
        notes = await self._store.select(
            "incident_notes", [org_id], where={"incident_id": row["id"]}, limit=limit, offset=offset
        )
        resp.media = [note_json(n) for n in notes]

    async def on_post(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        kind: str,
        ref: int,
    ) -> None:
        row = await org_incident(self._store, req, org_id, kind, ref, "MEMBER")
        body: NoteCreate = parse(NoteCreate, await read_json_object(req))
        note = await self._manager.add_note(row, principal(req).user_id, body.body)
        resp.status = falcon.HTTP_201
        resp.media = note_json(note)


class TimelineResource:
    path_params = (KIND,)
    response_models: ClassVar = {"get": TimelineJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        kind: str,
        ref: int,
    ) -> None:
        row = await org_incident(self._store, req, org_id, kind, ref, "VIEWER")
        events: list[Row] = []
        while True:
            page = await self._store.select(
                "incident_events",
                [org_id],
                where={"incident_id": row["id"]},
                limit=_SCAN_PAGE,
                offset=len(events),
            )
            events += page
            if len(page) < _SCAN_PAGE:
                break
        events.sort(key=lambda e: (e["at"], e["id"]))
        answer: TimelineJson = {
            "incident": incident_json(row),
            "timeline": [timeline_json(e) for e in events],
        }
        resp.media = answer


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    m = ctx.incidents
    app.add_route("/api/incidents", IncidentsResource(ctx.store))
    base = f"/api/checks/{{check_id:{ID}}}/incidents/{{ref:{ID}}}"
    app.add_route(base, CheckIncidentResource(ctx.store))
    app.add_route(base + "/ack", AckResource(ctx.store, m))
    app.add_route(base + "/resolve", ResolveResource(ctx.store, m))
    # The organisation segment is the shared one (Falcon's router needs one spelling).
    org_base = f"{ORG}/incidents/{{kind}}/{{ref:{ID}}}"
    app.add_route(org_base + "/notes", NotesResource(ctx.store, m))
    app.add_route(org_base + "/timeline", TimelineResource(ctx.store))
