"""`/api/checks/…`: create, list, read, replace, patch and delete checks of every type,
probe one now, and read its results. Every write reaches the engine at once."""

from __future__ import annotations

import json
from types import NoneType
from typing import TYPE_CHECKING, Any, ClassVar, Union, get_type_hints

import falcon
import falcon.asgi
from pydantic import BaseModel
from typing_extensions import TypedDict

from tocsin.api import check_exports, check_figures, query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, writable_org
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID
from tocsin.api.query import OFFSET
from tocsin.api.schemas import (
    CHECK_SETTINGS,
    CHECK_TYPES,
    COLUMN_SETTINGS,
    MASK,
    SECRET_FIELDS,
    CheckCommon,
    CheckCreate,
    CheckType,
    parse_check,
)
from tocsin.checks import engine_check, probed_remotely, runnable, scheduled_check
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.headers import merge_masked
from tocsin.models import Result, Status
from tocsin.store.base import Principal, Row, Store

NOT_FOUND = "Check not found"
# Written by the server, never taken from a request.
READ_ONLY = ("id", "uuid", "status", "agent_location_statuses", "organization_id")
_COMMON_COLUMNS = tuple(
    f for f in CheckCommon.model_fields if f not in ("assigned_agent_id", "org_id")
)


def _union_defaults() -> dict[str, Any]:
    """Every type's settings with their defaults (None where a type requires them): the
    shape of `config` in answers, the same for every check."""
    out: dict[str, Any] = {}
    for model in CHECK_SETTINGS.values():
        for name, info in model.model_fields.items():
            if name in COLUMN_SETTINGS or name in out:
                continue
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            # A nested settings object (`oidc_config`) as JSON, as it is stored.
            out[name] = default.model_dump() if isinstance(default, BaseModel) else default
    return out


_CONFIG_DEFAULTS = _union_defaults()


def _config_types() -> dict[str, Any]:
    """The type of each setting in answers: what the types that have it store (a check
    of another type shows `_CONFIG_DEFAULTS`' value, null where a type requires it)."""
    kinds: dict[str, list[Any]] = {}
    for model in CHECK_SETTINGS.values():
        for name, info in model.model_fields.items():
            if name not in COLUMN_SETTINGS and info.annotation not in kinds.get(name, []):
                kinds.setdefault(name, []).append(info.annotation)
    for name, default in _CONFIG_DEFAULTS.items():
        if default is None:
            kinds[name].append(NoneType)
    return {name: Union[tuple(types)] for name, types in kinds.items()}  # noqa: UP007


class TimingsJson(TypedDict):
    """Time spent in each phase of a probe (ms); null where the phase does not apply."""

    dns_ms: float | None
    connect_ms: float | None
    tls_ms: float | None
    first_byte_ms: float | None


class LastResultJson(TypedDict):
    status: Status
    started_at: str
    latency_ms: float
    error_kind: str | None
    message: str | None
    status_code: int | None
    source: str
    timings: TimingsJson
    details: dict[str, Any]


class CheckFields(TypedDict):
    """The fields every check's answer has; beside them, every type's settings."""

    id: int
    uuid: str
    name: str
    type: CheckType
    description: str
    url: str | None
    host: str | None
    port: int | None
    interval: int
    timeout: int
    grace_period: int
    alert_after_failures: int
    runbook_url: str | None
    escalation_policy_id: int | None
    owner_team_id: int | None
    service_id: int | None
    is_active: bool
    tags: list[str]
    assigned_agent_ids: list[int]
    geo_monitoring_enabled: bool
    check_source_critical: dict[str, bool]
    agent_location_statuses: dict[str, Status]
    schedule_error: str | None
    organization_id: int
    project_id: int
    status: Status
    status_changed_at: str | None
    last_checked_at: str | None
    last_ping_at: str | None
    last_result: LastResultJson | None
    created_at: str
    updated_at: str


def _check_type() -> Any:
    fields = get_type_hints(CheckFields, include_extras=True)
    settings = _config_types()
    clash = sorted(fields.keys() & settings.keys())
    if clash:
        raise TypeError(f"check settings {clash} clash with a check's own fields")
    # (mypy reads only the functional syntax with a literal dict of fields)
    return TypedDict("CheckJson", {**fields, **settings})  # type: ignore[operator]


if TYPE_CHECKING:
    # To mypy, the fields every check has (`check_json` builds exactly those); the
    # settings exist at run time only (tests/test_api_answer_types.py checks them).
    CheckJson = CheckFields
else:
    # A check's answer: CheckFields and every type's settings (`config`), typed from
    # CHECK_SETTINGS as `check_json` fills them (the OpenAPI document's `CheckJson`).
    CheckJson = _check_type()


def check_json(row: Row, engine: Engine | None = None) -> CheckJson:
    last = row["last_result"]
    if last is not None:
        # The store builds it (`_last_result`: LastResultJson's keys); its time as text.
        last = {**last, "started_at": iso(last["started_at"])}
    status = row["status"] if row["is_active"] else Status.PAUSED
    # Any: its keys are CheckJson's settings, which mypy does not see.
    config: Any = {**_CONFIG_DEFAULTS, **row["config"]}
    for secret in SECRET_FIELDS:
        config[secret] = MASK if config.get(secret) else ""
    if config.get("http_headers"):
        # Header values carry credentials (Authorization, API keys): names shown only.
        config["http_headers"] = dict.fromkeys(config["http_headers"], MASK)
    if config.get("api_scenario_secrets"):
        config["api_scenario_secrets"] = dict.fromkeys(config["api_scenario_secrets"], MASK)
    oidc = config.get("oidc_config")
    if isinstance(oidc, dict) and oidc.get("client_secret"):
        config["oidc_config"] = {**oidc, "client_secret": MASK}
    sources: dict[str, Status] = {}
    if engine is not None and engine.get(row["id"]) is not None:
        sources = {
            name: status for name, status in engine.sources(row["id"]).items() if name != "central"
        }
    answer: CheckJson = {
        "id": row["id"],
        "uuid": row["uuid"],
        "name": row["name"],
        "type": row["type"],
        "description": row["description"],
        "url": row["url"],
        "host": row["host"],
        "port": row["port"],
        "interval": row["interval"],
        "timeout": row["timeout"],
        "grace_period": row["grace_period"],
        "alert_after_failures": row["alert_after_failures"],
        "runbook_url": row["runbook_url"],
        "escalation_policy_id": row["escalation_policy_id"],
        "owner_team_id": row.get("owner_team_id"),
        "service_id": row.get("service_id"),
        "is_active": row["is_active"],
        "tags": row["tags"],
        "assigned_agent_ids": row["assigned_agent_ids"],
        "geo_monitoring_enabled": row["geo_monitoring_enabled"],
        "check_source_critical": row["check_source_critical"],
        "agent_location_statuses": sources,
        # Why the engine could not schedule the stored check at start-up, if it could
        # not (e.g. a rule refused since it was stored); cleared by a valid change.
        "schedule_error": engine.refusal(row["id"]) if engine is not None else None,
        "organization_id": row["organization_id"],
        "project_id": row["project_id"],
        "status": status,
        "status_changed_at": iso(row["status_changed_at"]),
        "last_checked_at": iso(row["last_checked_at"]),
        "last_ping_at": iso(row.get("last_ping_at")),
        "last_result": last,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
    # The settings of every type (CheckJson's other keys), in place.
    answer.update(config)
    return answer


class ResultJson(TypedDict):
    id: int
    check_id: int
    source: str
    status: Status
    started_at: str
    due_at: str | None
    latency_ms: float
    error_kind: str | None
    message: str | None
    status_code: int | None
    timings: TimingsJson
    details: dict[str, Any]


def result_json(row: Row) -> ResultJson:
    return {
        "id": row["id"],
        "check_id": row["check_id"],
        "source": row["source"],
        "status": row["status"],
        "started_at": iso(row["started_at"]),
        "due_at": iso(row["due_at"]),
        "latency_ms": round(row["latency_ms"], 3),
        "error_kind": row["error_kind"],
        "message": row["message"],
        "status_code": row["status_code"],
        "timings": {
            "dns_ms": row["dns_ms"],
            "connect_ms": row["connect_ms"],
            "tls_ms": row["tls_ms"],
            "first_byte_ms": row["first_byte_ms"],
        },
        "details": json.loads(row["details"]) if row["details"] else {},
    }


class RunJson(TypedDict):
    """A probe run on demand (recorded like a scheduled one)."""

    check_id: int
    source: str
    status: Status
    started_at: str
    latency_ms: float
    error_kind: str | None
    message: str | None
    status_code: int | None
    timings: TimingsJson
    details: dict[str, Any]


def run_json(r: Result) -> RunJson:
    t = r.timings
    return {
        "check_id": r.check_id,
        "source": r.source,
        "status": r.status,
        "started_at": iso(r.started_at),
        "latency_ms": round(r.latency_ms, 3),
        "error_kind": r.error_kind,
        "message": r.message,
        "status_code": r.status_code,
        "timings": {
            "dns_ms": t.dns_ms if t else None,
            "connect_ms": t.connect_ms if t else None,
            "tls_ms": t.tls_ms if t else None,
            "first_byte_ms": t.first_byte_ms if t else None,
        },
        "details": r.details,
    }


def _with_secrets(body: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """`******` (or an omitted secret) keeps the stored secret; `""` clears it. The
    same for each value of `http_headers`: `******` keeps the stored value of that
    header, `""` removes the header."""
    out = dict(body)
    for secret in SECRET_FIELDS:
        kept = (stored or {}).get(secret) or ""
        if secret not in out or out[secret] == MASK:
            out[secret] = kept
    headers = out.get("http_headers")
    if isinstance(headers, dict):
        out["http_headers"] = merge_masked(headers, (stored or {}).get("http_headers") or {}, MASK)
    oidc = out.get("oidc_config")
    if isinstance(oidc, dict) and oidc.get("client_secret", MASK) == MASK:
        kept_oidc = ((stored or {}).get("oidc_config") or {}).get("client_secret") or ""
        out["oidc_config"] = {**oidc, "client_secret": kept_oidc}
    secrets = out.get("api_scenario_secrets")
    if isinstance(secrets, dict):
        kept = (stored or {}).get("api_scenario_secrets") or {}
        out["api_scenario_secrets"] = merge_masked(secrets, kept, MASK)
    return out


def store_fields(common: CheckCommon, settings: BaseModel) -> dict[str, Any]:
    """Columns and `config` for the store from a validated body."""
    fields = common.model_dump(include=set(_COMMON_COLUMNS))
    values = settings.model_dump()
    for col in COLUMN_SETTINGS:
        fields[col] = values.pop(col, None)
    fields["config"] = values
    return fields


def _unmasked(row: Row) -> dict[str, Any]:
    """The stored check as a request body (secrets in clear): what PATCH starts from."""
    body = {k: row[k] for k in _COMMON_COLUMNS if k in row}
    body.update({col: row[col] for col in COLUMN_SETTINGS})
    body.update(row["config"])
    return body


class Checks:
    """What the routes share: reads scoped to the caller, writes that reach the engine
    and the live events."""

    def __init__(self, store: Store, engine: Engine, events: EventHub) -> None:
        self.store = store
        self.engine = engine
        self.events = events

    async def get(self, p: Principal, check_id: int) -> Row:
        row = await self.store.get_check(p.org_ids, check_id)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def writable(self, p: Principal, check_id: int) -> Row:
        row = await self.get(p, check_id)
        writable_org(p, row["organization_id"])
        return row

    async def check_refs(self, org_id: int, common: CheckCommon) -> None:
        """The agents, escalation policy, team and service the check names are the
        organisation's."""
        for name, kind, what in (
            ("owner_team_id", "teams", "team"),
            ("service_id", "services", "service"),
        ):
            ref = getattr(common, name)
            if ref and await self.store.get(kind, [org_id], ref) is None:
                raise field_error(name, f"{what} {ref} not found", "not_found")
        for agent_id in common.assigned_agent_ids:
            if await self.store.get("agents", [org_id], agent_id) is None:
                raise field_error("assigned_agent_ids", f"agent {agent_id} not found", "not_found")
        policy = common.escalation_policy_id
        if policy and await self.store.get("escalation_policies", [org_id], policy) is None:
            raise field_error(
                "escalation_policy_id", f"escalation policy {policy} not found", "not_found"
            )

    def validate(self, fields: dict[str, Any], check_id: int = 0) -> None:
        """Refuse (422 naming the field) what the engine would refuse, before anything
        is stored: the engine's own validation, without scheduling."""
        if not runnable(fields["type"]):
            return
        # Critical sources left out: mapping them would intern their names in the engine
        # for a check that may yet be refused (they are ids the engine always takes).
        row = {"id": check_id, **fields, "check_source_critical": {}}
        try:
            self.engine.validate([scheduled_check(row, self.engine)])
        except ValueError as exc:
            raise _engine_refusal(exc) from None

    def sync(self, row: Row) -> None:
        """Schedule, reschedule or unschedule the check. ValueError (with `field` when
        the engine names one) if the engine refuses its settings."""
        if runnable(row["type"]):
            self.engine.upsert([scheduled_check(row, self.engine)])
        else:
            self.engine.remove([row["id"]])

    def publish(self, row: Row, action: str) -> None:
        self.events.publish(
            row["organization_id"], "check.update", {"id": row["id"], "action": action}
        )


def _engine_refusal(exc: ValueError) -> Exception:
    reason = getattr(exc, "reason", None) or str(exc)
    return field_error(getattr(exc, "field", None) or "type", reason)


LIST_LIMIT = query.limit(100, 500)
ORG_ID = query.OptInt("org_id", 1, query.MAX_ID, "only this organisation's checks")
TYPE = query.Text("type", "only checks of this type", choices=CHECK_TYPES)
STATUS = query.Text("status", "only checks in this status", choices=tuple(Status.__members__))
TAG = query.Text("tag", "only checks with this tag")
TEAM = query.OptInt("team_id", 1, query.MAX_ID, "only checks owned by this team")
SERVICE = query.OptInt("service_id", 1, query.MAX_ID, "only checks of this service")
SEARCH = query.Text("q", "text in the name, URL or host")
SEARCH_ALIAS = query.Text("search", "the same as q")
LOGS_LIMIT = query.limit(50, 500)
LOGS_BEFORE = query.OptInt("before", 1, query.MAX_ID, "results older than this id (keyset)")


class ChecksResource:
    body_models: ClassVar = {"post": CheckCreate}
    response_models: ClassVar = {"get": list[CheckJson], "post": CheckJson}
    query_params: ClassVar = {
        "get": (LIST_LIMIT, OFFSET, ORG_ID, TYPE, STATUS, TAG, TEAM, SERVICE, SEARCH, SEARCH_ALIAS)
    }

    def __init__(self, checks: Checks) -> None:
        self._c = checks

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        limit, offset = LIST_LIMIT.get(req), OFFSET.get(req)
        org_ids = p.org_ids
        org_filter = ORG_ID.get(req)
        if org_filter is not None:
            org_ids = [o for o in org_ids if o == org_filter]
        check_type = TYPE.get(req)
        status = STATUS.get(req)
        text = SEARCH.get(req) or SEARCH_ALIAS.get(req)
        rows = await self._c.store.list_checks(
            org_ids,
            limit=limit,
            offset=offset,
            type=check_type,
            status=status,
            tag=TAG.get(req),
            text=text,
            team_id=TEAM.get(req),
            service_id=SERVICE.get(req),
        )
        resp.media = [check_json(r, self._c.engine) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body = _with_secrets(await read_json_object(req), None)
        common, settings = parse_check(body)
        org_id = writable_org(p, common.org_id)
        await self._c.check_refs(org_id, common)
        fields = store_fields(common, settings)
        self._c.validate(fields)
        row = await self._c.store.create_check(org_id, fields)
        try:
            self._c.sync(row)
        except ValueError as exc:
            # Validated above; should the engine still refuse it, undo the write.
            await self._c.store.delete_check([org_id], row["id"])
            raise _engine_refusal(exc) from None
        self._c.publish(row, "created")
        resp.media = check_json(row, self._c.engine)


class CheckResource:
    body_models: ClassVar = {"put": CheckCreate, "patch": CheckCreate}
    response_models: ClassVar = {
        "get": CheckJson,
        "put": CheckJson,
        "patch": CheckJson,
        "delete": None,
    }

    def __init__(self, checks: Checks) -> None:
        self._c = checks

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        resp.media = check_json(await self._c.get(principal(req), check_id), self._c.engine)

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Replace every field; a secret sent as `******` or left out is kept."""
        p = principal(req)
        current = await self._c.writable(p, check_id)
        body = await read_json_object(req)
        await self._replace(resp, current, _with_secrets(body, current["config"]))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Change only the fields sent."""
        p = principal(req)
        current = await self._c.writable(p, check_id)
        patch = await read_json_object(req)
        body = {**_unmasked(current), **{k: v for k, v in patch.items() if k not in READ_ONLY}}
        await self._replace(resp, current, _with_secrets(body, current["config"]))

    async def _replace(
        self, resp: falcon.asgi.Response, current: Row, body: dict[str, Any]
    ) -> None:
        common, settings = parse_check(body)
        org_id = current["organization_id"]
        await self._c.check_refs(org_id, common)
        fields = store_fields(common, settings)
        # The project stays unless another one is named.
        fields["project_id"] = common.project_id or current["project_id"]
        self._c.validate(fields, current["id"])
        row = await self._c.store.update_check([org_id], current["id"], fields)
        if row is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        try:
            self._c.sync(row)
        except ValueError as exc:
            restore = {k: current[k] for k in (*_COMMON_COLUMNS, *COLUMN_SETTINGS, "config")}
            await self._c.store.update_check([org_id], current["id"], restore)
            raise _engine_refusal(exc) from None
        self._c.publish(row, "updated")
        resp.media = check_json(row, self._c.engine)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        row = await self._c.writable(p, check_id)
        # Stored first: a refused delete (the database unavailable) leaves it scheduled.
        await self._c.store.delete_check([row["organization_id"]], check_id)
        self._c.engine.remove([check_id])
        self._c.publish(row, "deleted")
        resp.status = falcon.HTTP_204


class CheckRunNowResource:
    response_models: ClassVar = {"post": RunJson}

    def __init__(self, checks: Checks) -> None:
        self._c = checks

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Probe the check now; the result is recorded like a scheduled one."""
        row = await self._c.writable(principal(req), check_id)
        if probed_remotely(row):
            raise falcon.HTTPConflict(
                description="this check is probed by its agents and geo locations, not here"
            )
        if row["type"] == "heartbeat" or not runnable(row["type"]):
            raise falcon.HTTPConflict(
                description=f"{row['type']} checks cannot be probed on demand"
                + ("" if row["type"] == "heartbeat" else " yet: no probe for this type")
            )
        try:
            result = await self._c.engine.run_once(engine_check(row, self._c.engine), record=True)
        except ValueError as exc:
            raise _engine_refusal(exc) from None
        resp.media = run_json(result)


class CheckLogsResource:
    query_params: ClassVar = {"get": (LOGS_LIMIT, LOGS_BEFORE)}
    response_models: ClassVar = {"get": list[ResultJson]}

    def __init__(self, checks: Checks) -> None:
        self._c = checks

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        await self._c.get(p, check_id)
        limit, before = LOGS_LIMIT.get(req), LOGS_BEFORE.get(req)
        rows = await self._c.store.list_results(p.org_ids, check_id, limit=limit, before=before)
        resp.media = [result_json(r) for r in rows]
        if len(rows) == limit:
            resp.set_header("X-Next-Before", str(rows[-1]["id"]))


# Ids beyond a BIGINT are no route (404), not a database overflow.
CHECK = f"/api/checks/{{check_id:{ID}}}"


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    checks = Checks(ctx.store, ctx.engine, ctx.events)
    app.add_route("/api/checks", ChecksResource(checks))
    app.add_route(CHECK, CheckResource(checks))
    app.add_route(f"{CHECK}/run-now", CheckRunNowResource(checks))
    app.add_route(f"{CHECK}/logs", CheckLogsResource(checks))
    check_figures.register(app, ctx)
    check_exports.register(app, ctx)
