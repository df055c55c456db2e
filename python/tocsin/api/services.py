"""`/api/organizations/{org_id}/services/…`: what the organisation runs, who owns it, and
who hears of its incidents. Checks and integration keys name a service (`service_id`);
their incidents take its escalation policy (unless they have their own) and are told to
its channels too (tocsin/workflow/service_book.py). A service's status is derived from
its checks. See docs/services.md."""

from __future__ import annotations

import json
from typing import Any, ClassVar

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
from tocsin.api.schemas import http_url, json_number, parse
from tocsin.checks import runnable, scheduled_check
from tocsin.engine import Engine
from tocsin.models import Status
from tocsin.paging.inbound import InboundProcessor
from tocsin.store.base import Row, Store
from tocsin.workflow.service_book import ServiceBook

KIND = "services"
NOT_FOUND = "Service not found"
MAX_CHANNELS = 50
MAX_METADATA_BYTES = 16_384
# A service's checks read to derive its status (one page).
MAX_SERVICE_CHECKS = 10_000
# Worst first: a service is as bad as its worst active check.
_RANK = {
    Status.DOWN: 0,
    Status.DEGRADED: 1,
    Status.LATE: 2,
    Status.UNKNOWN: 3,
    Status.UP: 4,
}


class ServiceBody(BaseModel):
    """A service's fields; a change (PUT, PATCH) changes only what it sends. Ids may be
    0 or null: none."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    repo_url: str | None = Field(default=None, max_length=2048, description='"": none')
    docs_url: str | None = Field(default=None, max_length=2048, description='"": none')
    owner_team_id: int | None = Field(default=None, ge=0, le=query.MAX_ID)
    escalation_policy_id: int | None = Field(default=None, ge=0, le=query.MAX_ID)
    tier: str | None = Field(
        default=None, max_length=50, description='free text such as "tier-1" or "critical"'
    )
    notification_channel_ids: list[int] | None = Field(default=None, max_length=MAX_CHANNELS)
    slack_channel: str | None = Field(default=None, max_length=200)
    metadata_json: dict[str, Any] | None = Field(
        default=None, description="any JSON object (a string holding one is accepted)"
    )

    @field_validator("owner_team_id", "escalation_policy_id", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, v: Any) -> Any:
        # Clients send tiers as numbers too (1, 2, 3).
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v

    @field_validator("notification_channel_ids", mode="before")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [json_number(x) for x in v]
        return v

    @field_validator("metadata_json", mode="before")
    @classmethod
    def _metadata(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v.strip():
                return {}
            try:
                v = json.loads(v)
            except ValueError:
                raise ValueError("must be a JSON object (or a string holding one)") from None
        if isinstance(v, dict) and len(json.dumps(v)) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return v

    @field_validator("repo_url", "docs_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return http_url(v) if v else v


class ServiceCreate(ServiceBody):
    name: str = Field(min_length=1, max_length=200)


class ServiceChecksJson(TypedDict):
    total: int
    # active checks by status (paused ones are counted apart)
    by_status: dict[str, int]
    paused: int


class ServiceJson(TypedDict):
    id: int
    organization_id: int
    name: str
    description: str
    repo_url: str | None
    docs_url: str | None
    owner_team_id: int | None
    escalation_policy_id: int | None
    tier: str | None
    notification_channel_ids: list[int]
    slack_channel: str | None
    metadata_json: dict[str, Any]
    # the worst status of its active checks (UNKNOWN without any)
    status: str
    checks: ServiceChecksJson
    created_at: str
    updated_at: str


def derived_status(checks: list[Row]) -> tuple[str, ServiceChecksJson]:
    """A service's status from its checks: the worst of the active ones (DOWN, then
    DEGRADED, LATE, UNKNOWN, UP); UNKNOWN when none is active."""
    by_status: dict[str, int] = {}
    paused = 0
    worst: Status | None = None
    for c in checks:
        if not c["is_active"]:
            paused += 1
            continue
        status = Status(c["status"]) if c["status"] in Status.__members__ else Status.UNKNOWN
        by_status[status.value] = by_status.get(status.value, 0) + 1
        if worst is None or _RANK.get(status, 3) < _RANK.get(worst, 3):
            worst = status
    summary: ServiceChecksJson = {"total": len(checks), "by_status": by_status, "paused": paused}
    return (worst or Status.UNKNOWN).value, summary


def service_json(row: Row, checks: list[Row]) -> ServiceJson:
    status, summary = derived_status(checks)
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"] or "",
        "repo_url": row["repo_url"] or None,
        "docs_url": row["docs_url"] or None,
        "owner_team_id": row["owner_team_id"],
        "escalation_policy_id": row["escalation_policy_id"],
        "tier": row["tier"],
        "notification_channel_ids": [int(c) for c in row["notification_channel_ids"] or []],
        "slack_channel": row["slack_channel"],
        "metadata_json": row["metadata_json"] or {},
        "status": status,
        "checks": summary,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def _service_checks(store: Store, org_id: int, service_id: int) -> list[Row]:
    return await store.list_checks(
        [org_id], limit=MAX_SERVICE_CHECKS, offset=0, service_id=service_id
    )


async def service_fields(store: Store, org_id: int, body: ServiceBody) -> dict[str, Any]:
    """The columns to write (only what the body sent), references checked (422 naming
    the field when one is not the organisation's)."""
    fields: dict[str, Any] = {}
    if body.name is not None:
        fields["name"] = body.name  # null: unchanged (a service always has a name)
    for name in ("description", "tier", "slack_channel", "metadata_json"):
        if name in body.model_fields_set:
            value = getattr(body, name)
            if name == "description" and value is None:
                value = ""
            if name == "metadata_json" and value is None:
                value = {}
            fields[name] = value
    for name in ("repo_url", "docs_url"):
        if name in body.model_fields_set:
            fields[name] = getattr(body, name) or None
    for name, kind, what in (
        ("owner_team_id", "teams", "team"),
        ("escalation_policy_id", "escalation_policies", "escalation policy"),
    ):
        if name in body.model_fields_set:
            ref = getattr(body, name) or None
            if ref is not None and await store.get(kind, [org_id], ref) is None:
                raise field_error(name, f"{what} {ref} not found", "not_found")
            fields[name] = ref
    if body.notification_channel_ids is not None:
        ids = list(dict.fromkeys(body.notification_channel_ids))
        for i, cid in enumerate(ids):
            if cid < 1 or await store.get("notification_channels", [org_id], cid) is None:
                raise field_error(
                    ["notification_channel_ids", i], f"channel {cid} not found", "not_found"
                )
        fields["notification_channel_ids"] = ids
    elif "notification_channel_ids" in body.model_fields_set:
        fields["notification_channel_ids"] = []
    return fields


TEAM = query.OptInt("team_id", 1, query.MAX_ID, "only services owned by this team")
TIER = query.Text("tier", "only services of this tier")


class ServicesResource:
    body_models: ClassVar = {"post": ServiceCreate}
    response_models: ClassVar = {"get": list[ServiceJson], "post": ServiceJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, TEAM, TIER)}

    def __init__(self, store: Store, book: ServiceBook) -> None:
        self._store = store
        self._book = book

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        where: dict[str, Any] = {}
        if (team := TEAM.get(req)) is not None:
            where["owner_team_id"] = team
        if (tier := TIER.get(req)) is not None:
            where["tier"] = tier
        rows = await self._store.select(KIND, [org_id], where=where, limit=limit, offset=offset)
        resp.set_header("X-Total-Count", str(await self._store.count(KIND, [org_id], where=where)))
        resp.media = [
            service_json(r, await _service_checks(self._store, org_id, r["id"])) for r in rows
        ]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        body: ServiceCreate = parse(ServiceCreate, await read_json_object(req))
        fields = await service_fields(self._store, org_id, body)
        row = await self._store.insert(KIND, org_id, fields)
        self._book.invalidate()
        resp.status = falcon.HTTP_201
        resp.media = service_json(row, [])


class ServiceResource:
    body_models: ClassVar = {"put": ServiceBody, "patch": ServiceBody}
    response_models: ClassVar = {
        "get": ServiceJson,
        "put": ServiceJson,
        "patch": ServiceJson,
        "delete": None,
    }

    def __init__(
        self, store: Store, engine: Engine, book: ServiceBook, inbound: InboundProcessor
    ) -> None:
        self._store = store
        self._engine = engine
        self._book = book
        self._inbound = inbound

    async def _get(self, req: falcon.asgi.Request, org_id: int, service_id: int, role: str) -> Row:
        require_role(principal(req), org_id, role)
        row = await self._store.get(KIND, [org_id], service_id)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, service_id: int
    ) -> None:
        row = await self._get(req, org_id, service_id, "VIEWER")
        resp.media = service_json(row, await _service_checks(self._store, org_id, service_id))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, service_id: int
    ) -> None:
        await self._get(req, org_id, service_id, "ADMIN")
        body: ServiceBody = parse(ServiceBody, await read_json_object(req))
        fields = await service_fields(self._store, org_id, body)
        row = await self._store.update(KIND, [org_id], service_id, fields) if fields else None
        if row is None:
            row = await self._get(req, org_id, service_id, "ADMIN")
        # Its incidents from now on follow the new policy and channels.
        self._book.invalidate()
        self._inbound.keys.forget_all()
        resp.media = service_json(row, await _service_checks(self._store, org_id, service_id))

    on_patch = on_put

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, service_id: int
    ) -> None:
        """Delete the service; its checks, integration keys and incidents no longer
        belong to one."""
        await self._get(req, org_id, service_id, "ADMIN")
        checks = await _service_checks(self._store, org_id, service_id)
        if not await self._store.delete(KIND, [org_id], service_id):
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        self._book.invalidate()
        self._inbound.keys.forget_all()
        # The engine's copies of its checks drop it (the column was cleared).
        for row in await self._store.get_checks([org_id], [c["id"] for c in checks]):
            if runnable(row["type"]):
                self._engine.upsert([scheduled_check(row, self._engine)])
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/services"
    app.add_route(base, ServicesResource(ctx.store, ctx.service_book))
    app.add_route(
        f"{base}/{{service_id:{ID}}}",
        ServiceResource(ctx.store, ctx.engine, ctx.service_book, ctx.inbound),
    )
