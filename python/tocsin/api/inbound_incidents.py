"""`/api/organizations/{org_id}/inbound-incidents…`: the incidents inbound events opened
(docs/inbound.md), MEMBER and up: a filtered page of them, one with its latest events,
and acknowledging one (through the incident manager, like a check's incident). Their
notes and timeline are the incidents area's
(`/api/organizations/{org_id}/incidents/inbound/{ref}/notes|timeline`)."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon
import falcon.asgi
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.paths import ID, ORG
from tocsin.incidents import INCIDENT_STATUSES, IncidentJson, IncidentManager, incident_json
from tocsin.paging.inbound_formats import SEVERITIES
from tocsin.store.base import Row, Store

# The latest events shown with one incident.
RECENT_EVENTS = 20
LIMIT = query.limit(50, 200)
STATUS = query.Text("status", "only incidents in this state", choices=INCIDENT_STATUSES)
SEVERITY = query.Text("severity", "only incidents of this severity", choices=SEVERITIES)
KEY = query.OptInt("integration_key_id", 1, query.MAX_ID, "only this integration key's")
TEXT = query.Text("q", "only incidents with this text in their title (any letter case)")
SINCE = query.Time("since", "only incidents started at or after this time")
UNTIL = query.Time("until", "only incidents started before this time")


class InboundIncidentPageJson(TypedDict):
    """A page of inbound incidents, newest first; `total` counts every one that
    matches."""

    total: int
    offset: int
    limit: int
    incidents: list[IncidentJson]


class InboundEventJson(TypedDict):
    id: int
    integration_key_id: int | None
    incident_id: int | None
    # trigger, acknowledge or resolve
    action: str
    dedup_key: str
    # native, pagerduty, alertmanager or grafana
    source_format: str
    summary: str
    severity: str
    # source, component, group, class, custom_details, links… as the sender gave them
    payload: dict[str, Any]
    received_at: str


class InboundIncidentJson(IncidentJson):
    # its latest events, newest first
    events: list[InboundEventJson]


def event_json(row: Row) -> InboundEventJson:
    return {
        "id": row["id"],
        "integration_key_id": row["integration_key_id"],
        "incident_id": row["incident_id"],
        "action": row["action"],
        "dedup_key": row["dedup_key"],
        "source_format": row["source_format"],
        "summary": row["summary"],
        "severity": row["severity"],
        "payload": row["payload"] or {},
        "received_at": iso(row["received_at"]) or "",
    }


async def inbound_incident(
    store: Store, req: falcon.asgi.Request, org_id: int, incident_id: int
) -> Row:
    """The organisation's inbound incident, for a MEMBER or higher."""
    require_role(principal(req), org_id, "MEMBER")
    row = await store.get("incidents", [org_id], incident_id)
    if row is None or row["kind"] != "inbound":
        raise falcon.HTTPNotFound(description="Incident not found")
    return row


class InboundIncidentsResource:
    query_params: ClassVar = {
        "get": (LIMIT, query.OFFSET, STATUS, SEVERITY, KEY, TEXT, SINCE, UNTIL)
    }
    response_models: ClassVar = {"get": InboundIncidentPageJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """The organisation's inbound incidents, newest first."""
        require_role(principal(req), org_id, "MEMBER")
        limit, offset = LIMIT.get(req), query.OFFSET.get(req)
        rows, total = await self._store.list_inbound_incidents(
            [org_id],
            status=STATUS.get(req),
            severity=SEVERITY.get(req),
            integration_key_id=KEY.get(req),
            text=TEXT.get(req),
            since=SINCE.get(req),
            until=UNTIL.get(req),
            limit=limit,
            offset=offset,
        )
        page: InboundIncidentPageJson = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "incidents": [incident_json(r) for r in rows],
        }
        resp.media = page


class InboundIncidentResource:
    response_models: ClassVar = {"get": InboundIncidentJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, ref: int
    ) -> None:
        """One inbound incident with its latest events."""
        row = await inbound_incident(self._store, req, org_id, ref)
        events = await self._store.select(
            "inbound_events",
            [org_id],
            where={"incident_id": row["id"]},
            limit=RECENT_EVENTS,
            newest_first=True,
        )
        answer: InboundIncidentJson = {
            **incident_json(row),
            "events": [event_json(e) for e in events],
        }
        resp.media = answer


class InboundAckResource:
    response_models: ClassVar = {"post": IncidentJson}

    def __init__(self, store: Store, manager: IncidentManager) -> None:
        self._store = store
        self._manager = manager

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, ref: int
    ) -> None:
        """Acknowledge an inbound incident (its escalation stops); 409 once resolved."""
        row = await inbound_incident(self._store, req, org_id, ref)
        resp.media = incident_json(await self._manager.acknowledge(row, principal(req).user_id))


class InboundResolveResource:
    response_models: ClassVar = {"post": IncidentJson}

    def __init__(self, store: Store, manager: IncidentManager) -> None:
        self._store = store
        self._manager = manager

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, ref: int
    ) -> None:
        """Resolve an inbound incident by hand (for a sender that never resolves); 409
        once resolved. A later trigger with its dedup key opens a new one."""
        row = await inbound_incident(self._store, req, org_id, ref)
        resp.media = incident_json(await self._manager.resolve(row, principal(req).user_id))


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/inbound-incidents"
    app.add_route(base, InboundIncidentsResource(ctx.store))
    app.add_route(f"{base}/{{ref:{ID}}}", InboundIncidentResource(ctx.store))
    app.add_route(f"{base}/{{ref:{ID}}}/ack", InboundAckResource(ctx.store, ctx.incidents))
    app.add_route(f"{base}/{{ref:{ID}}}/resolve", InboundResolveResource(ctx.store, ctx.incidents))
