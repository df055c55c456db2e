"""`/api/organizations/{org_id}/playbooks/…`: what runs by itself when an incident opens,
and `…/incidents/{incident_id}/playbook-runs`: what ran for an incident. The runner is
`tocsin.workflow.playbooks`. See docs/playbooks.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, field_error
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import MAX_ID, Id, http_url, json_number, parse
from tocsin.store.base import Row, Store
from tocsin.workflow.playbooks import (
    INCIDENT_KINDS,
    MAX_STEPS,
    RUN_STATUSES,
    SEVERITIES,
    STEP_ALIASES,
    STEP_TYPES,
    TRIGGER_ALIASES,
    TRIGGER_TYPES,
    PlaybookRunner,
    canonical,
    run_json,
)

KIND = "playbooks"
NOT_FOUND = "Playbook not found"
TRIGGER = query.Text("trigger_type", "only playbooks with this trigger", choices=TRIGGER_TYPES)
SERVICE = query.OptInt("service_id", 1, query.MAX_ID, "only playbooks restricted to this service")
ACTIVE = query.Bool("is_active", "only active (true) or inactive (false) playbooks")
RUNS_STATUS = query.Text("status", "only runs in this state", choices=RUN_STATUSES)
MAX_TAGS = 50
MAX_SOURCES = 50
MAX_HEADERS = 20


# -- steps -------------------------------------------------------------------------------------


class _Step(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    # an optional label shown with the step's outcome
    name: str | None = Field(default=None, max_length=200)


class AddNoteStep(_Step):
    """A note on the incident (author: none, the server)."""

    body: str = Field(
        min_length=1, max_length=10_000, validation_alias=AliasChoices("body", "note", "text")
    )


class AddChecklistStep(_Step):
    """A note holding a checklist: the title, then one `- [ ] item` line per item."""

    title: str | None = Field(default=None, max_length=200)
    items: list[str] = Field(min_length=1, max_length=50)

    @field_validator("items")
    @classmethod
    def _items(cls, v: list[str]) -> list[str]:
        out = [i.strip() for i in v]
        if any(not i or len(i) > 500 for i in out):
            raise ValueError("each item must be 1 to 500 characters")
        return out


class NotifyChannelStep(_Step):
    """A message to one of the organisation's notification channels (through the
    outbox, retried like any delivery)."""

    channel_id: Id
    message: str | None = Field(default=None, max_length=2000)

    @field_validator("channel_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class NotifyUserStep(_Step):
    """A page to a member of the organisation on their verified contact methods, as
    their notification rules say (as an escalation step pages them)."""

    user_id: Id

    @field_validator("user_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class CallWebhookStep(_Step):
    """A POST of `{event, organization_id, incident, playbook}` as JSON to `url`; any
    answer but 2xx (or none within `timeout_s`) fails the step."""

    url: str = Field(min_length=1, max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, ge=0.5, le=30)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers")
        for k, value in v.items():
            if not k or len(k) > 100 or any(c in k for c in ":\r\n ") or len(value) > 2000:
                raise ValueError(f"header {k!r} is not a valid header")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {k!r} has a line break")
        return v

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class OpenWarRoomStep(_Step):
    """A war room for the incident (the open one is kept if there is one), with these
    members of the organisation as participants."""

    title: str | None = Field(default=None, max_length=200)
    member_ids: list[Id] = Field(default_factory=list, max_length=50)

    @field_validator("member_ids", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)


class SetSeverityStep(_Step):
    """Change the incident's severity (skipped when it has it already)."""

    severity: str

    @field_validator("severity")
    @classmethod
    def _severity(cls, v: str) -> str:
        v = v.lower()
        if v not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
        return v


class RunCheckStep(_Step):
    """Probe a check now (recorded like a scheduled run): `check_id`, or the incident's
    own check."""

    check_id: Id | None = None

    @field_validator("check_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v) if v not in (0, None) else None


STEP_MODELS: dict[str, type[_Step]] = {
    "add_note": AddNoteStep,
    "add_checklist": AddChecklistStep,
    "notify_channel": NotifyChannelStep,
    "notify_user": NotifyUserStep,
    "call_webhook": CallWebhookStep,
    "open_war_room": OpenWarRoomStep,
    "set_severity": SetSeverityStep,
    "run_check": RunCheckStep,
}


def _steps(raw: list[Any]) -> list[dict[str, Any]]:
    """Each step validated by its type's model; 422 naming `steps.{i}.{field}` (i from 0)."""
    errors: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, step in enumerate(raw):
        if not isinstance(step, dict):
            errors.append(
                {"loc": ["body", "steps", i], "msg": "must be an object", "type": "dict_type"}
            )
            continue
        kind_raw = step.get("type", step.get("action"))
        kind = canonical(kind_raw, STEP_TYPES, STEP_ALIASES) if isinstance(kind_raw, str) else None
        if kind is None:
            errors.append(
                {
                    "loc": ["body", "steps", i, "type"],
                    "msg": f"must be one of {', '.join(STEP_TYPES)}",
                    "type": "enum" if kind_raw is not None else "missing",
                }
            )
            continue
        # A step's settings may sit beside its type or under `config` / `params`.
        fields = {**(step.get("config") or {}), **(step.get("params") or {})}
        fields.update({k: v for k, v in step.items() if k not in ("config", "params")})
        try:
            model = STEP_MODELS[kind].model_validate(fields)
        except ValidationError as exc:
            for e in exc.errors(include_url=False, include_input=False):
                errors.append(
                    {"loc": ["body", "steps", i, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                )
            continue
        out.append({"type": kind, **model.model_dump(exclude_none=True)})
    if errors:
        raise ValidationFailed(errors)
    return out


async def _check_step_refs(store: Store, org_id: int, steps: list[dict[str, Any]]) -> None:
    members: set[int] | None = None
    for i, step in enumerate(steps):
        if step["type"] == "notify_channel":
            if await store.get("notification_channels", [org_id], step["channel_id"]) is None:
                raise field_error(
                    ["steps", i, "channel_id"],
                    f"channel {step['channel_id']} not found",
                    "not_found",
                )
        elif step["type"] == "run_check" and step.get("check_id"):
            if await store.get_check([org_id], step["check_id"]) is None:
                raise field_error(
                    ["steps", i, "check_id"], f"check {step['check_id']} not found", "not_found"
                )
        elif step["type"] in ("notify_user", "open_war_room"):
            if members is None:
                members = {int(m["user_id"]) for m in await store.list_members([org_id], org_id)}
            if step["type"] == "notify_user":
                if step["user_id"] not in members:
                    raise field_error(
                        ["steps", i, "user_id"],
                        f"user {step['user_id']} is not a member of the organisation",
                        "not_found",
                    )
            else:
                for j, uid in enumerate(step.get("member_ids") or []):
                    if uid not in members:
                        raise field_error(
                            ["steps", i, "member_ids", j],
                            f"user {uid} is not a member of the organisation",
                            "not_found",
                        )


# -- trigger conditions ------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ids(where: list[str | int], value: Any) -> list[int]:
    out = []
    for v in _as_list(value):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_ID:
            raise field_error(where, "must be an id (a positive integer) or a list of them")
        out.append(v)
    return list(dict.fromkeys(out))


def _texts(where: list[str | int], value: Any, most: int) -> list[str]:
    out = []
    items = _as_list(value)
    if len(items) > most:
        raise field_error(where, f"at most {most} values")
    for v in items:
        if not isinstance(v, str) or not v.strip() or len(v.strip()) > 200:
            raise field_error(where, "must be text (1 to 200 characters) or a list of them")
        out.append(v.strip())
    return list(dict.fromkeys(out))


async def conditions(
    store: Store, org_id: int, trigger: str, raw: Mapping[str, Any], service_id: int | None
) -> dict[str, Any]:
    """The trigger's conditions checked and written one way (docs/playbooks.md); 422
    naming `trigger_conditions.{key}`."""
    at = "trigger_conditions"
    out: dict[str, Any] = {}
    kinds = _texts([at, "kinds"], raw.get("kinds", raw.get("kind")), 2)
    for k in kinds:
        if k.lower() not in INCIDENT_KINDS:
            raise field_error([at, "kinds"], f"must be among {', '.join(INCIDENT_KINDS)}")
    if kinds:
        out["kinds"] = sorted({k.lower() for k in kinds})
    if trigger == "severity":
        values = _texts(
            [at, "severity"], raw.get("severity", raw.get("severities")), len(SEVERITIES)
        )
        if not values:
            raise field_error([at, "severity"], "give the severities that trigger it", "missing")
        bad = [v for v in values if v.lower() not in SEVERITIES]
        if bad:
            raise field_error([at, "severity"], f"must be among {', '.join(SEVERITIES)}")
        out["severity"] = [v.lower() for v in values]
    elif trigger == "service":
        ids = _ids([at, "service_id"], raw.get("service_id"))
        if len(ids) > 1:
            raise field_error([at, "service_id"], "one service")
        wanted = ids[0] if ids else service_id
        if not wanted:
            raise field_error(
                [at, "service_id"], "give the service (here or as service_id)", "missing"
            )
        if await store.get("services", [org_id], wanted) is None:
            raise field_error([at, "service_id"], f"service {wanted} not found", "not_found")
        out["service_id"] = wanted
    elif trigger == "check_tag":
        tags = _texts([at, "tags"], raw.get("tags", raw.get("tag")), MAX_TAGS)
        if not tags:
            raise field_error([at, "tags"], "give the tags that trigger it", "missing")
        match = raw.get("match", "any")
        if match not in ("any", "all"):
            raise field_error([at, "match"], "must be any or all")
        out.update(tags=tags, match=match)
    elif trigger == "inbound_source":
        keys = _ids(
            [at, "integration_key_id"],
            raw.get("integration_key_id", raw.get("integration_key_ids")),
        )
        sources = _texts([at, "source"], raw.get("source", raw.get("sources")), MAX_SOURCES)
        if not keys and not sources:
            raise field_error(
                [at, "integration_key_id"], "give an integration_key_id or a source", "missing"
            )
        for key_id in keys:
            if await store.get("integration_keys", [org_id], key_id) is None:
                raise field_error(
                    [at, "integration_key_id"], f"integration key {key_id} not found", "not_found"
                )
        out.update(integration_key_ids=keys, sources=sources)
    return out


# -- bodies and answers ------------------------------------------------------------------------


class PlaybookBody(BaseModel):
    """A playbook's fields; a change (PUT) changes only what it sends."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    trigger_type: str | None = Field(
        default=None,
        description="incident_opened, severity, service, check_tag or inbound_source"
        " (a few aliases are read too: docs/playbooks.md)",
    )
    trigger_conditions: dict[str, Any] | None = Field(
        default=None, description="what the trigger looks at (docs/playbooks.md)"
    )
    service_id: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="only incidents of this service (0 or null: any)",
    )
    suppress_default_notifications: StrictBool | None = Field(
        default=None,
        description="the incident's default channel notifications are kept `suppressed`"
        " when this playbook matches it",
    )
    is_active: StrictBool | None = None
    steps: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEPS,
        description="run in order: {type, …its fields}; type one of " + ", ".join(STEP_TYPES),
    )

    @field_validator("trigger_type")
    @classmethod
    def _trigger(cls, v: str | None) -> str | None:
        if v is None:
            return v
        found = canonical(v, TRIGGER_TYPES, TRIGGER_ALIASES)
        if found is None:
            raise ValueError(f"must be one of {', '.join(TRIGGER_TYPES)}")
        return found

    @field_validator("service_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class PlaybookCreate(PlaybookBody):
    """A new playbook: a name, its trigger and its steps."""

    name: str = Field(min_length=1, max_length=200)
    trigger_type: str = Field(
        description="incident_opened, severity, service, check_tag or inbound_source"
    )
    steps: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_STEPS)


class PlaybookJson(TypedDict):
    id: int
    organization_id: int
    name: str
    description: str
    trigger_type: str
    trigger_conditions: dict[str, Any]
    service_id: int | None
    suppress_default_notifications: bool
    is_active: bool
    steps: list[dict[str, Any]]
    created_by: int | None
    created_at: str
    updated_at: str


class PlaybookStepOutcomeJson(TypedDict):
    # the step's number, from 1
    step: int
    type: str
    # ok, failed or skipped
    status: str
    message: str
    at: str
    # what the step made: note_id, war_room_id, channel_id, response_code, …
    detail: dict[str, Any]


class PlaybookRunJson(TypedDict):
    id: int
    organization_id: int
    # null once the playbook was deleted
    playbook_id: int | None
    playbook_name: str | None
    incident_id: int
    # running, completed, partial (some steps failed), failed (all failed), interrupted
    status: str
    steps: list[PlaybookStepOutcomeJson]
    started_at: str
    finished_at: str | None
    duration_s: float | None


def playbook_json(row: Row) -> PlaybookJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"] or "",
        "trigger_type": row["trigger_type"],
        "trigger_conditions": row["trigger_conditions"] or {},
        "service_id": row["service_id"],
        "suppress_default_notifications": bool(row["suppress_default_notifications"]),
        "is_active": bool(row["is_active"]),
        "steps": row["steps"] or [],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def playbook_fields(
    store: Store, org_id: int, body: PlaybookBody, current: Row | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    sent = body.model_fields_set
    for name in ("name", "description", "suppress_default_notifications", "is_active"):
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if "service_id" in sent:
        # The store checks the service is the organisation's (422 naming the field).
        fields["service_id"] = body.service_id or None
    trigger = body.trigger_type or (current["trigger_type"] if current else "incident_opened")
    if body.trigger_type is not None or body.trigger_conditions is not None or "service_id" in sent:
        raw = body.trigger_conditions
        if raw is None:
            raw = current["trigger_conditions"] if current else {}
            if body.trigger_type is not None and current and trigger != current["trigger_type"]:
                raw = {}
        service_id = (
            fields["service_id"]
            if "service_id" in fields
            else (current["service_id"] if current else None)
        )
        fields["trigger_type"] = trigger
        fields["trigger_conditions"] = await conditions(store, org_id, trigger, raw, service_id)
    if body.steps is not None:
        steps = _steps(body.steps)
        await _check_step_refs(store, org_id, steps)
        fields["steps"] = steps
    return fields


# -- resources ---------------------------------------------------------------------------------


class PlaybooksResource:
    body_models: ClassVar = {"post": PlaybookCreate}
    response_models: ClassVar = {"get": list[PlaybookJson], "post": PlaybookJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {
        "get": (query.limit(100, 500), query.OFFSET, TRIGGER, SERVICE, ACTIVE)
    }

    def __init__(self, store: Store, runner: PlaybookRunner) -> None:
        self._store = store
        self._runner = runner

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        where: dict[str, Any] = {}
        for param, column in (
            (TRIGGER, "trigger_type"),
            (SERVICE, "service_id"),
            (ACTIVE, "is_active"),
        ):
            value = param.get(req)
            if value is not None:
                where[column] = value
        rows = await self._store.select(KIND, [org_id], where=where, limit=limit, offset=offset)
        resp.set_header("X-Total-Count", str(await self._store.count(KIND, [org_id], where=where)))
        resp.media = [playbook_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: PlaybookCreate = parse(PlaybookCreate, await read_json_object(req))
        fields = await playbook_fields(self._store, org_id, body, None)
        fields.setdefault("description", "")
        fields["created_by"] = p.user_id
        row = await self._store.insert(KIND, org_id, fields)
        await self._runner.reload(org_id)
        resp.status = falcon.HTTP_201
        resp.media = playbook_json(row)


class PlaybookResource:
    body_models: ClassVar = {"put": PlaybookBody}
    response_models: ClassVar = {"get": PlaybookJson, "put": PlaybookJson, "delete": None}

    def __init__(self, store: Store, runner: PlaybookRunner) -> None:
        self._store = store
        self._runner = runner

    async def _get(self, req: falcon.asgi.Request, org_id: int, playbook_id: int, role: str) -> Row:
        require_role(principal(req), org_id, role)
        row = await self._store.get(KIND, [org_id], playbook_id)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, playbook_id: int
    ) -> None:
        resp.media = playbook_json(await self._get(req, org_id, playbook_id, "VIEWER"))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, playbook_id: int
    ) -> None:
        current = await self._get(req, org_id, playbook_id, "ADMIN")
        body: PlaybookBody = parse(PlaybookBody, await read_json_object(req))
        fields = await playbook_fields(self._store, org_id, body, current)
        row = await self._store.update(KIND, [org_id], playbook_id, fields)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        await self._runner.reload(org_id)
        resp.media = playbook_json(row)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, playbook_id: int
    ) -> None:
        """Delete the playbook; its past runs stay on their incidents (without it)."""
        require_role(principal(req), org_id, "ADMIN")
        if not await self._store.delete(KIND, [org_id], playbook_id):
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        await self._runner.reload(org_id)
        resp.status = falcon.HTTP_204


async def _runs(
    store: Store, org_id: int, where: dict[str, Any], limit: int, offset: int
) -> list[PlaybookRunJson]:
    rows = await store.select("playbook_runs", [org_id], where=where, limit=limit, offset=offset)
    names: dict[int, Row | None] = {}
    out: list[PlaybookRunJson] = []
    for r in rows:
        pid = r["playbook_id"]
        if pid is not None and pid not in names:
            names[pid] = await store.get(KIND, [org_id], pid)
        out.append(run_json(r, names.get(pid) if pid is not None else None))  # type: ignore[arg-type]
    return out


class IncidentRunsResource:
    """The playbook runs of an incident, by its id (`…/incidents/{incident_id}/…`: the
    path segment is shared with `…/incidents/{kind}/{ref}/…`, so it is read here)."""

    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, RUNS_STATUS)}
    response_models: ClassVar = {"get": list[PlaybookRunJson]}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        kind: str,
        ref: int | None = None,
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        if ref is None:
            if not kind.isdigit() or not 1 <= int(kind) <= MAX_ID:
                raise falcon.HTTPNotFound(description="Incident not found")
            incident_id = int(kind)
        else:
            if kind not in ("check", "inbound"):
                raise falcon.HTTPNotFound(description="Incident not found")
            incident_id = ref
        incident = await self._store.get("incidents", [org_id], incident_id)
        if incident is None or (ref is not None and incident["kind"] != kind):
            raise falcon.HTTPNotFound(description="Incident not found")
        where: dict[str, Any] = {"incident_id": incident_id}
        status = RUNS_STATUS.get(req)
        if status is not None:
            where["status"] = status
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        resp.set_header(
            "X-Total-Count", str(await self._store.count("playbook_runs", [org_id], where=where))
        )
        resp.media = await _runs(self._store, org_id, where, limit, offset)


class PlaybookRunsResource:
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, RUNS_STATUS)}
    response_models: ClassVar = {"get": list[PlaybookRunJson]}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, playbook_id: int
    ) -> None:
        """The runs of one playbook, oldest first."""
        require_role(principal(req), org_id, "VIEWER")
        if await self._store.get(KIND, [org_id], playbook_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        where: dict[str, Any] = {"playbook_id": playbook_id}
        status = RUNS_STATUS.get(req)
        if status is not None:
            where["status"] = status
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        resp.set_header(
            "X-Total-Count", str(await self._store.count("playbook_runs", [org_id], where=where))
        )
        resp.media = await _runs(self._store, org_id, where, limit, offset)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"{ORG}/playbooks"
    app.add_route(base, PlaybooksResource(ctx.store, ctx.playbooks))
    app.add_route(f"{base}/{{playbook_id:{ID}}}", PlaybookResource(ctx.store, ctx.playbooks))
    app.add_route(f"{base}/{{playbook_id:{ID}}}/runs", PlaybookRunsResource(ctx.store))
    runs = IncidentRunsResource(ctx.store)
    # `{kind}`: the segment is shared with `…/incidents/{kind}/{ref}/…` (one spelling for
    # Falcon's router); here it holds the incident's id.
    app.add_route(f"{ORG}/incidents/{{kind}}/playbook-runs", runs)
    app.add_route(f"{ORG}/incidents/{{kind}}/{{ref:{ID}}}/playbook-runs", runs)
