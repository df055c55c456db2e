"""Agents and geo locations, for users (Bearer `pat_…` or a session): registration tokens
(`/api/organizations/{id}/agent-tokens`, ADMIN, shown once), `GET /api/agents/`,
revocation (`DELETE /api/agents/{id}`), `GET /api/agents/geo-locations` and a check's
per-source `geo-summary`/`geo-timeseries`. The SysTeam clients' spellings of the same
(`/api/organizations/{id}/agents…`, `POST /api/agents/registration-token`) are aliases
over the same logic. The agents' own routes are in api/agent_wire.py."""

from __future__ import annotations

import math
import os
import shlex
import time
from collections import defaultdict
from typing import ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from tocsin.agent import wire
from tocsin.agent.fleet import AgentFleet, source_of
from tocsin.api import query
from tocsin.api.body import MAX_BODY, parse_json_body, read_bytes, read_json_object
from tocsin.api.checks import NOT_FOUND
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, query_error
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import _Part, parse
from tocsin.models import Status
from tocsin.notify.router import PUBLIC_URL_ENV, Router
from tocsin.notify.router import public_url as default_public_url
from tocsin.security import hash_token, new_token
from tocsin.store.base import Principal, Row

# Besides letters and digits (any script: str.isalnum), what a location may hold.
LOCATION_CHARS = "-_."
MAX_BUCKETS = 10_000


class AgentBody(_Part):
    """What agents and their administrators send: unknown fields ignored, numbers as
    JSON numbers, text as sent (not stripped); `""` or null is no value."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    @field_validator("name", "location", "version", check_fields=False)
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None

    @field_validator("location", check_fields=False)
    @classmethod
    def _location(cls, v: str | None) -> str | None:
        if v is not None and not all(ch.isalnum() or ch in LOCATION_CHARS for ch in v):
            raise ValueError(f"may contain letters, digits and {LOCATION_CHARS!r} only")
        return v


class AgentTokenCreate(AgentBody):
    name: str | None = Field(default=None, max_length=200)
    location: str | None = Field(
        default=None,
        max_length=64,
        description="the geo location the agent will report from (a geo agent); none: a"
        f" private agent. Letters, digits and {LOCATION_CHARS!r}",
    )
    expires_in: float = Field(
        default=24 * 3600, ge=60, le=366 * 86400, description="seconds until it expires"
    )


class AgentJson(TypedDict):
    id: int
    organization_id: int
    name: str
    kind: Literal["private", "geo"]
    location: str | None
    source: str
    status: Literal["online", "offline", "revoked"]
    version: str | None
    load: float | None
    queue_depth: int | None
    last_heartbeat_at: str | None
    last_batch_seq: int
    checks_assigned: int | None
    revoked_at: str | None
    created_at: str


def agent_json(row: Row, assigned: int | None = None) -> AgentJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "kind": row["kind"],
        "location": row["location"],
        "source": source_of(row),
        "status": "revoked" if row["revoked_at"] else row["status"],
        "version": row["version"],
        "load": row["load"],
        "queue_depth": row["queue_depth"],
        "last_heartbeat_at": iso(row["last_heartbeat_at"]),
        "last_batch_seq": row["last_batch_seq"],
        "checks_assigned": assigned,
        "revoked_at": iso(row["revoked_at"]),
        "created_at": iso(row["created_at"]),
    }


# -- user routes ----------------------------------------------------------------------


class RegistrationTokenJson(TypedDict):
    """A registration token without its secret (`prefix`: its first characters)."""

    id: int
    organization_id: int
    name: str
    prefix: str
    location: str | None
    expires_at: str | None
    used_at: str | None
    agent_id: int | None
    created_at: str


class NewRegistrationTokenJson(RegistrationTokenJson):
    """A new token, the only time the token itself is shown."""

    token: str


def _token_json(row: Row) -> RegistrationTokenJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "location": row["location"],
        "expires_at": iso(row["expires_at"]),
        "used_at": iso(row["used_at"]),
        "agent_id": row["agent_id"],
        "created_at": iso(row["created_at"]),
    }


class AgentTokensResource:
    body_models: ClassVar = {"post": AgentTokenCreate}
    response_models: ClassVar = {
        "get": list[RegistrationTokenJson],
        "post": NewRegistrationTokenJson,
    }
    response_status: ClassVar = {"post": 201}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        rows = await self._a.store.select(
            "agent_registration_tokens", [org_id], limit=500, offset=0, newest_first=True
        )
        resp.media = [_token_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """A one-time registration token, shown only in this answer."""
        require_role(principal(req), org_id, "ADMIN")
        body: AgentTokenCreate = parse(AgentTokenCreate, await read_json_object(req))
        resp.status = falcon.HTTP_201
        resp.media = await create_token(self._a, org_id, body)


async def create_token(
    agents: AgentFleet, org_id: int, body: AgentTokenCreate
) -> NewRegistrationTokenJson:
    """A new one-time registration token of `org_id` (the caller checked the role)."""
    token = new_token(wire.REGISTRATION_TOKEN_PREFIX)
    row = await agents.store.insert(
        "agent_registration_tokens",
        org_id,
        {
            "name": body.name or "",
            "token_hash": hash_token(token),
            "prefix": token[:8],
            "location": body.location,
            "expires_at": time.time() + body.expires_in,
        },
    )
    return {**_token_json(row), "token": token}


class AgentTokenResource:
    response_models: ClassVar = {"delete": None}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, token_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        if not await self._a.store.delete("agent_registration_tokens", [org_id], token_id):
            raise falcon.HTTPNotFound(description="Registration token not found")
        resp.status = falcon.HTTP_204


async def _assigned_counts(agents: AgentFleet, p: Principal, rows: list[Row]) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for org_id in {r["organization_id"] for r in rows}:
        for check in await agents.store.list_checks([org_id], limit=100_000, offset=0):
            if not check["is_active"]:
                continue
            for agent_id in check["assigned_agent_ids"]:
                counts[agent_id] += 1
            if check["geo_monitoring_enabled"]:
                for r in rows:
                    if r["organization_id"] == org_id and r["kind"] == "geo":
                        counts[r["id"]] += 1
    return counts


AGENTS_ORG = query.OptInt("org_id", 1, query.MAX_ID, "only this organisation's agents")
AGENTS_LIMIT = query.limit(100, 500)


class AgentListResource:
    query_params: ClassVar = {"get": (AGENTS_LIMIT, query.OFFSET, AGENTS_ORG)}
    response_models: ClassVar = {"get": list[AgentJson]}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        org_ids = p.org_ids
        org_filter = AGENTS_ORG.get(req)
        if org_filter is not None:
            org_ids = [o for o in org_ids if o == org_filter]
        resp.media = await list_agents(self._a, p, org_ids, req)


async def list_agents(
    agents: AgentFleet, p: Principal, org_ids: list[int], req: falcon.asgi.Request
) -> list[AgentJson]:
    """A page (`limit`, `offset`) of the agents of `org_ids`."""
    limit, offset = AGENTS_LIMIT.get(req), query.OFFSET.get(req)
    rows = await agents.store.select("agents", org_ids, limit=limit, offset=offset)
    counts = await _assigned_counts(agents, p, rows)
    return [agent_json(r, counts.get(r["id"], 0)) for r in rows]


class AgentResource:
    response_models: ClassVar = {"get": AgentJson, "delete": None}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def _get(self, p: Principal, agent_id: int) -> Row:
        row = await self._a.store.get("agents", p.org_ids, agent_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Agent not found")
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, agent_id: int
    ) -> None:
        p = principal(req)
        row = await self._get(p, agent_id)
        counts = await _assigned_counts(self._a, p, [row])
        resp.media = agent_json(row, counts.get(agent_id, 0))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, agent_id: int
    ) -> None:
        """Revoke the agent: its credential stops working at its next request."""
        p = principal(req)
        row = await self._get(p, agent_id)
        require_role(p, row["organization_id"], "ADMIN")
        await revoke_agent(self._a, row)
        resp.status = falcon.HTTP_204


async def revoke_agent(agents: AgentFleet, row: Row) -> None:
    """Revoke agent `row` (once; again is a no-op): its credential stops working at its
    next request, its sources go stale."""
    if row["revoked_at"] is not None:
        return
    row = (
        await agents.store.update(
            "agents",
            [row["organization_id"]],
            row["id"],
            {"revoked_at": time.time(), "status": "offline"},
        )
        or row
    )
    agents.publish_status(row, "revoked")
    await agents.sources_gone(row)


class GeoLocationJson(TypedDict):
    """A geo location where the caller's organisations have agents."""

    id: str
    code: str
    name: str
    region: str
    source: str
    agents_online: int
    is_active: bool


class GeoLocationsResource:
    response_models: ClassVar = {"get": list[GeoLocationJson]}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        agents = await self._a.store.select(
            "agents", p.org_ids, where={"kind": "geo"}, limit=10_000, offset=0
        )
        online: dict[str, int] = defaultdict(int)
        seen: set[str] = set()
        for a in agents:
            if a["location"] and not a["revoked_at"]:
                seen.add(a["location"])
                online[a["location"]] += a["status"] == "online"
        out: list[GeoLocationJson] = []
        for loc in await self._a.store.list_geo_locations():
            if loc["code"] not in seen:
                continue  # another organisation's location
            out.append(
                {
                    "id": loc["code"],
                    "code": loc["code"],
                    "name": loc["name"],
                    "region": loc["region"],
                    "source": f"geo:{loc['code']}",
                    "agents_online": online[loc["code"]],
                    "is_active": bool(loc["is_active"]) and online[loc["code"]] > 0,
                }
            )
        resp.media = out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return round(values[k], 3)


WINDOW = query.Int("window", 86_400, 60, 90 * 86_400, "seconds back from now")
BUCKET = query.OptInt(
    "bucket",
    1,
    86_400,
    f"seconds per bucket (default: window / 100, ≥ 60); a window has at most {MAX_BUCKETS:,}"
    " buckets",
)


def _window(req: falcon.asgi.Request) -> int:
    return WINDOW.get(req)


class SourceSummaryJson(TypedDict):
    status: str
    runs: int
    uptime_pct: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    last_checked_at: str | None


class GeoSummaryJson(TypedDict):
    """Per source of the check's results (`agent:<id>`, `geo:<location>`)."""

    check_id: int
    window_seconds: int
    sources: dict[str, SourceSummaryJson]


class GeoSummaryResource:
    query_params: ClassVar = {"get": (WINDOW,)}
    response_models: ClassVar = {"get": GeoSummaryJson}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Per source: current status, uptime and latency percentiles over `window`
        seconds (a day by default)."""
        p = principal(req)
        window = _window(req)
        if await self._a.store.get_check(p.org_ids, check_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        rows = await self._a.store.source_results(p.org_ids, check_id, time.time() - window)
        by_source: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            by_source[r["source"]].append(r)
        engine = self._a.engine
        current = engine.sources(check_id) if engine.get(check_id) is not None else {}
        sources: dict[str, SourceSummaryJson] = {}
        for source in sorted(set(by_source) | {s for s in current if s != "central"}):
            runs = by_source.get(source, [])
            up = sum(r["status"] != Status.DOWN.value for r in runs)
            latencies = sorted(float(r["latency_ms"]) for r in runs if r["status"] != "DOWN")
            sources[source] = {
                "status": current.get(source, Status.UNKNOWN).value,
                "runs": len(runs),
                "uptime_pct": round(100.0 * up / len(runs), 4) if runs else None,
                "latency_p50_ms": _pct(latencies, 0.50),
                "latency_p95_ms": _pct(latencies, 0.95),
                "latency_p99_ms": _pct(latencies, 0.99),
                "last_checked_at": iso(runs[-1]["started_at"]) if runs else None,
            }
        summary: GeoSummaryJson = {
            "check_id": check_id,
            "window_seconds": window,
            "sources": sources,
        }
        resp.media = summary


class GeoPointJson(TypedDict):
    """A bucket: `t` its start; `status` the worst seen in it."""

    t: str
    runs: int
    uptime_pct: float
    latency_avg_ms: float | None
    latency_p95_ms: float | None
    status: str


class GeoTimeseriesJson(TypedDict):
    """Per source of the check's results, its buckets with results, oldest first."""

    check_id: int
    window_seconds: int
    bucket_seconds: int
    sources: dict[str, list[GeoPointJson]]


class GeoTimeseriesResource:
    query_params: ClassVar = {"get": (WINDOW, BUCKET)}
    response_models: ClassVar = {"get": GeoTimeseriesJson}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Per source, per `bucket` seconds over `window`: runs, uptime, latency
        (average, p95) and the worst status seen."""
        p = principal(req)
        window = _window(req)
        bucket = BUCKET.get(req) or max(60, window // 100)
        if window // bucket > MAX_BUCKETS:
            raise query_error("bucket", f"at most {MAX_BUCKETS} buckets in the window")
        if await self._a.store.get_check(p.org_ids, check_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        rows = await self._a.store.source_results(p.org_ids, check_id, time.time() - window)
        grouped: dict[str, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            start = int(r["started_at"] // bucket * bucket)
            grouped[r["source"]][start].append(r)
        rank = {"UP": 0, "DEGRADED": 1, "DOWN": 2}
        series: dict[str, list[GeoPointJson]] = {}
        for source, buckets in sorted(grouped.items()):
            points: list[GeoPointJson] = []
            for start, runs in sorted(buckets.items()):
                ok = sorted(float(r["latency_ms"]) for r in runs if r["status"] != "DOWN")
                worst = max(runs, key=lambda r: rank.get(r["status"], 0))["status"]
                points.append(
                    {
                        "t": iso(start),
                        "runs": len(runs),
                        "uptime_pct": round(100.0 * len(ok) / len(runs), 4),
                        "latency_avg_ms": round(sum(ok) / len(ok), 3) if ok else None,
                        "latency_p95_ms": _pct(ok, 0.95),
                        "status": worst,
                    }
                )
            series[source] = points
        timeseries: GeoTimeseriesJson = {
            "check_id": check_id,
            "window_seconds": window,
            "bucket_seconds": bucket,
            "sources": series,
        }
        resp.media = timeseries


# -- the SysTeam clients' spellings ------------------------------------------------------

# The image in `install_docker`: the project publishes none, so the line takes the one an
# operator builds from `$TOCSIN_IMAGE` (the shell stops with this message when it is
# unset), documented in docs/agents.md.
DOCKER_IMAGE = '"${TOCSIN_IMAGE:?set TOCSIN_IMAGE to your tocsin image}"'
# The agent modes the older `POST /api/agents/registration-token` takes: a geo agent
# (a `location` is needed), or a private one (every other spelling).
GEO_MODES = ("geo", "public")
PRIVATE_MODES = ("private", "agent", "central", "remote")


class InstallTokenJson(NewRegistrationTokenJson):
    """A new token with ready command lines that start an agent with it: `install_curl`
    installs tocsin from its Python package and runs `tocsin agent`, `install_docker`
    runs it in a container (the image: `$TOCSIN_IMAGE`, the one you build)."""

    server_url: str
    install_curl: str
    install_docker: str


def server_url(req: falcon.asgi.Request, router: Router) -> str:
    """The server's public URL: `--public-url` or `$TOCSIN_PUBLIC_URL` when set, else the
    scheme and host the request came to."""
    if os.environ.get(PUBLIC_URL_ENV) or router.public_url != default_public_url():
        return router.public_url.rstrip("/")
    return req.prefix.rstrip("/")


def install_lines(url: str, token: str, location: str | None) -> tuple[str, str]:
    """(install_curl, install_docker) for an agent of `url` registering with `token`."""
    args = ["--server", url, "--token", token]
    if location:
        args += ["--location", location]
    agent = " ".join(shlex.quote(a) for a in args)
    curl = f"python3 -m pip install tocsin && tocsin agent {agent} --data-dir ./agent-data"
    docker = (
        "docker run -d --name tocsin-agent --restart unless-stopped --network host"
        f" -v tocsin-agent:/data {DOCKER_IMAGE} agent {agent} --data-dir /data"
    )
    return curl, docker


async def _install_token(
    agents: AgentFleet,
    router: Router,
    req: falcon.asgi.Request,
    org_id: int,
    body: AgentTokenCreate,
) -> InstallTokenJson:
    made = await create_token(agents, org_id, body)
    url = server_url(req, router)
    curl, docker = install_lines(url, made["token"], made["location"])
    return {**made, "server_url": url, "install_curl": curl, "install_docker": docker}


async def _optional_body(req: falcon.asgi.Request) -> dict[str, object]:
    """The body when one is sent (a JSON object), else `{}`."""
    data = await read_bytes(req, MAX_BODY)
    if not data.strip():
        return {}
    body = parse_json_body(data)
    if not isinstance(body, dict):
        raise ValidationFailed(
            [{"loc": ["body"], "msg": "Input should be a JSON object", "type": "dict_type"}]
        )
    return body


class OrgRegistrationTokenResource:
    """`POST /api/organizations/{id}/agents/registration-token`: no body needed."""

    response_models: ClassVar = {"post": InstallTokenJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, agents: AgentFleet, router: Router) -> None:
        self._a = agents
        self._router = router

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """A one-time registration token (as `POST …/agent-tokens`, its optional fields
        optional in the body too), with command lines that start an agent with it."""
        require_role(principal(req), org_id, "ADMIN")
        body: AgentTokenCreate = parse(AgentTokenCreate, await _optional_body(req))
        resp.status = falcon.HTTP_201
        resp.media = await _install_token(self._a, self._router, req, org_id, body)


class LegacyTokenCreate(AgentTokenCreate):
    organization_id: int | None = Field(
        default=None,
        ge=1,
        le=query.MAX_ID,
        description="the organisation (none: the caller's only organisation)",
    )
    mode: str | None = Field(
        default=None,
        max_length=64,
        description=f"{', '.join(GEO_MODES)}: a geo agent (`location` needed); "
        f"{', '.join(PRIVATE_MODES)} or none: a private agent",
    )

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        v = (v or "").strip().lower() or None
        if v is not None and v not in GEO_MODES + PRIVATE_MODES:
            raise ValueError(f"should be one of {', '.join(GEO_MODES + PRIVATE_MODES)}")
        return v


class LegacyRegistrationTokenResource:
    """`POST /api/agents/registration-token` `{name, mode, organization_id}`."""

    body_models: ClassVar = {"post": LegacyTokenCreate}
    response_models: ClassVar = {"post": InstallTokenJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, agents: AgentFleet, router: Router) -> None:
        self._a = agents
        self._router = router

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The older spelling of `POST /api/organizations/{id}/agents/registration-token`."""
        p = principal(req)
        body: LegacyTokenCreate = parse(LegacyTokenCreate, await read_json_object(req))
        org_id = body.organization_id
        if org_id is None:
            if len(p.org_ids) != 1:
                raise ValidationFailed(
                    [
                        {
                            "loc": ["body", "organization_id"],
                            "msg": "Field required (the caller has several organisations)",
                            "type": "missing",
                        }
                    ]
                )
            org_id = p.org_ids[0]
        require_role(p, org_id, "ADMIN")
        if body.mode in GEO_MODES and not body.location:
            raise ValidationFailed(
                [
                    {
                        "loc": ["body", "location"],
                        "msg": f"a {body.mode} agent needs a location",
                        "type": "missing",
                    }
                ]
            )
        if body.mode in PRIVATE_MODES and body.location:
            raise ValidationFailed(
                [
                    {
                        "loc": ["body", "location"],
                        "msg": f"a {body.mode} agent has no location",
                        "type": "value_error",
                    }
                ]
            )
        resp.status = falcon.HTTP_201
        resp.media = await _install_token(self._a, self._router, req, org_id, body)


class OrgAgentsResource:
    query_params: ClassVar = {"get": (AGENTS_LIMIT, query.OFFSET)}
    response_models: ClassVar = {"get": list[AgentJson]}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """The organisation's agents, as `GET /api/agents/?org_id=`."""
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        resp.media = await list_agents(self._a, p, [org_id], req)


class OrgAgentResource:
    response_models: ClassVar = {"get": AgentJson, "delete": None}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def _get(self, org_id: int, agent_id: int) -> Row:
        row = await self._a.store.get("agents", [org_id], agent_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Agent not found")
        return row

    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        agent_id: int,
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        row = await self._get(org_id, agent_id)
        counts = await _assigned_counts(self._a, p, [row])
        resp.media = agent_json(row, counts.get(agent_id, 0))

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        agent_id: int,
    ) -> None:
        """Revoke the agent, as `DELETE /api/agents/{id}`."""
        p = principal(req)
        require_role(p, org_id, "VIEWER")
        row = await self._get(org_id, agent_id)
        require_role(p, org_id, "ADMIN")
        await revoke_agent(self._a, row)
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    agents = ctx.agents
    app.add_route("/api/agents", AgentListResource(agents))
    app.add_route(f"/api/agents/{{agent_id:{ID}}}", AgentResource(agents))
    app.add_route("/api/agents/geo-locations", GeoLocationsResource(agents))
    app.add_route(f"/api/agents/checks/{{check_id:{ID}}}/geo-summary", GeoSummaryResource(agents))
    app.add_route(
        f"/api/agents/checks/{{check_id:{ID}}}/geo-timeseries", GeoTimeseriesResource(agents)
    )
    org = ORG
    app.add_route(f"{org}/agent-tokens", AgentTokensResource(agents))
    app.add_route(f"{org}/agent-tokens/{{token_id:{ID}}}", AgentTokenResource(agents))
    # The SysTeam clients' spellings, over the same logic.
    router = ctx.router
    legacy = LegacyRegistrationTokenResource(agents, router)
    app.add_route("/api/agents/registration-token", legacy)
    app.add_route(f"{org}/agents", OrgAgentsResource(agents))
    app.add_route(f"{org}/agents/registration-token", OrgRegistrationTokenResource(agents, router))
    app.add_route(f"{org}/agents/{{agent_id:{ID}}}", OrgAgentResource(agents))
