"""`/api/organizations/{org_id}/escalation-policies/…`: who is paged, in which order,
until someone acknowledges. The walk through a policy is `tocsin.paging.policies`; the
paging itself `tocsin.paging.escalation`. See docs/escalation.md."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import MAX_ID, Id, json_number, parse
from tocsin.checks import runnable, scheduled_check
from tocsin.engine import Engine
from tocsin.paging.inbound import InboundProcessor
from tocsin.paging.policies import (
    MAX_DELAY_S,
    MAX_REPEATS,
    MAX_STEPS,
    MAX_TARGETS,
    TargetType,
)
from tocsin.store.base import Row, Store

KIND = "escalation_policies"
TEAM = query.OptInt("team_id", 1, query.MAX_ID, "only policies owned by this team")
NOT_FOUND = "Escalation policy not found"


class TargetBody(BaseModel):
    """Who a step pages: a `user` (by their notification rules), whoever a `schedule`
    has on call when the step fires, the leads and members of a `team`, or a
    notification `channel`."""

    model_config = ConfigDict(extra="ignore")

    type: TargetType
    id: Id

    @field_validator("id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class StepBody(BaseModel):
    """One step: its targets, and how long it waits for an acknowledgement before the
    next step (`delay_minutes`, or `delay_seconds`; default 30 minutes)."""

    model_config = ConfigDict(extra="ignore")

    delay_minutes: float | None = Field(default=None, ge=0, le=MAX_DELAY_S / 60)
    delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY_S)
    targets: list[TargetBody] = Field(min_length=1, max_length=MAX_TARGETS)

    @field_validator("delay_minutes", "delay_seconds", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)

    @model_validator(mode="after")
    def _one_delay(self) -> StepBody:
        if self.delay_minutes is not None and self.delay_seconds is not None:
            raise ValueError("give delay_minutes or delay_seconds, not both")
        return self

    @property
    def delay(self) -> int:
        if self.delay_seconds is not None:
            return self.delay_seconds
        if self.delay_minutes is not None:
            return round(self.delay_minutes * 60)
        return 30 * 60


class PolicyBody(BaseModel):
    """A policy's fields; a change (PUT) changes only what it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    steps: list[StepBody] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    repeat_count: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPEATS,
        description="how many more times the policy runs from step 1 when nobody"
        " acknowledged by the end of the last step",
    )

    owner_team_id: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="the team that owns it (0 or null: none)"
    )

    @field_validator("repeat_count", "owner_team_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class PolicyCreate(PolicyBody):
    """A new policy: a name and its steps."""

    name: str = Field(min_length=1, max_length=200)
    steps: list[StepBody] = Field(min_length=1, max_length=MAX_STEPS)


class TargetJson(TypedDict):
    type: str
    id: int


class StepJson(TypedDict):
    # the step's number, from 1
    step: int
    # how long it waits for an acknowledgement before the next step
    delay_seconds: int
    delay_minutes: float
    targets: list[TargetJson]


class PolicyJson(TypedDict):
    id: int
    organization_id: int
    name: str
    description: str
    repeat_count: int
    owner_team_id: int | None
    steps: list[StepJson]
    created_at: str
    updated_at: str


def policy_json(row: Row) -> PolicyJson:
    steps: list[StepJson] = []
    for i, s in enumerate(row["steps"] or []):
        delay = int(s.get("delay_seconds") or 0)
        steps.append(
            {
                "step": i + 1,
                "delay_seconds": delay,
                "delay_minutes": round(delay / 60, 3),
                "targets": [{"type": t["type"], "id": t["id"]} for t in s.get("targets") or []],
            }
        )
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"] or "",
        "repeat_count": int(row["repeat_count"] or 0),
        "owner_team_id": row.get("owner_team_id"),
        "steps": steps,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def _check_targets(store: Store, org_id: int, steps: list[StepBody]) -> None:
    """Every target exists in the organisation (users: members of it); 422 naming it."""
    members = {m["user_id"] for m in await store.list_members([org_id], org_id)}
    for i, step in enumerate(steps):
        for j, target in enumerate(step.targets):
            where: list[str | int] = ["steps", i, "targets", j, "id"]
            if target.type == "user":
                if target.id not in members:
                    raise field_error(
                        where, f"user {target.id} is not a member of the organisation"
                    )
                continue
            kind = {
                "schedule": "oncall_schedules",
                "team": "teams",
                "channel": "notification_channels",
            }[target.type]
            if await store.get(kind, [org_id], target.id) is None:
                raise field_error(where, f"{target.type} {target.id} not found", "not_found")


async def policy_fields(store: Store, org_id: int, body: PolicyBody) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if body.name is not None:
        fields["name"] = body.name
    if body.description is not None:
        fields["description"] = body.description
    if body.repeat_count is not None:
        fields["repeat_count"] = body.repeat_count
    if "owner_team_id" in body.model_fields_set:
        # The store checks the team is the organisation's (422 naming the field).
        fields["owner_team_id"] = body.owner_team_id or None
    if body.steps is not None:
        await _check_targets(store, org_id, body.steps)
        fields["steps"] = [
            {
                "delay_seconds": s.delay,
                "targets": [{"type": t.type, "id": t.id} for t in s.targets],
            }
            for s in body.steps
        ]
    return fields


class PoliciesResource:
    body_models: ClassVar = {"post": PolicyCreate}
    response_models: ClassVar = {"get": list[PolicyJson], "post": PolicyJson}
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
        resp.media = [policy_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        body: PolicyCreate = parse(PolicyCreate, await read_json_object(req))
        row = await self._store.insert(KIND, org_id, await policy_fields(self._store, org_id, body))
        resp.status = falcon.HTTP_201
        resp.media = policy_json(row)


class PolicyResource:
    body_models: ClassVar = {"put": PolicyBody}
    response_models: ClassVar = {"get": PolicyJson, "put": PolicyJson, "delete": None}

    def __init__(self, store: Store, engine: Engine, inbound: InboundProcessor) -> None:
        self._store = store
        self._engine = engine
        self._inbound = inbound

    async def _get(self, req: falcon.asgi.Request, org_id: int, policy_id: int, role: str) -> Row:
        require_role(principal(req), org_id, role)
        row = await self._store.get(KIND, [org_id], policy_id)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, policy_id: int
    ) -> None:
        resp.media = policy_json(await self._get(req, org_id, policy_id, "VIEWER"))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, policy_id: int
    ) -> None:
        await self._get(req, org_id, policy_id, "ADMIN")
        body: PolicyBody = parse(PolicyBody, await read_json_object(req))
        fields = await policy_fields(self._store, org_id, body)
        row = await self._store.update(KIND, [org_id], policy_id, fields)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        resp.media = policy_json(row)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, policy_id: int
    ) -> None:
        """Delete the policy; checks and integration keys that used it no longer
        escalate, and incidents it was paging stop at their next step."""
        require_role(principal(req), org_id, "ADMIN")
        cleared = await self._store.delete_escalation_policy([org_id], policy_id)
        if cleared is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        # The engine's copy of those checks, and the cached keys, drop it too: their next
        # incidents do not escalate.
        for row in await self._store.get_checks([org_id], cleared):
            if runnable(row["type"]):
                self._engine.upsert([scheduled_check(row, self._engine)])
        self._inbound.keys.forget_policy(policy_id)
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/escalation-policies"
    app.add_route(base, PoliciesResource(ctx.store))
    app.add_route(f"{base}/{{policy_id:{ID}}}", PolicyResource(ctx.store, ctx.engine, ctx.inbound))
