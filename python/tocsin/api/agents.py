"""Remote agents and geo locations.

Users (Bearer `pat_…`/sessions): registration tokens (`/api/organizations/{id}/agent-
tokens`, ADMIN, shown once), `GET /api/agents/`, revocation (`DELETE /api/agents/{id}`),
`GET /api/agents/geo-locations` and a check's per-source `geo-summary`/`geo-timeseries`.

Agents (Bearer `agt_…`, routes the user authentication skips and that accept nothing
else): `register` (with a one-time `reg_…` token), `heartbeat`, `checks` (their
assignments, with an ETag), `results` (signed batches with sequence numbers, stored
exactly once). An agent credential is not a user token and a user token is not an
agent credential, so neither reaches the other's routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
from collections import defaultdict
from typing import Any, ClassVar

import falcon
import falcon.asgi

from tocsin.agent import wire
from tocsin.api import query
from tocsin.api.body import read_bytes, read_json_object
from tocsin.api.checks import NOT_FOUND
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, field_error, query_error
from tocsin.api.identity import ID
from tocsin.api.limits import InputError, MalformedJson, check_tree
from tocsin.checks import engine_check
from tocsin.models import Status
from tocsin.security import hash_token, new_token
from tocsin.store.base import Principal, Row

log = logging.getLogger("tocsin.agents")

HEARTBEAT_ENV = "TOCSIN_AGENT_HEARTBEAT_INTERVAL"
MISSED_HEARTBEATS = 3
MAX_BATCH_BODY = 16 << 20
# How far a batch's sequence number may run ahead of the last one stored.
MAX_SEQ_GAP = 1_000_000
# Results older than this (an agent back after a long outage) or this far ahead of the
# server's clock are refused: they would fall outside the kept raw data.
MAX_RESULT_AGE = 14 * 86_400.0
MAX_CLOCK_AHEAD = 3_600.0
_CHALLENGE = ['Bearer realm="tocsin-agent"']


def heartbeat_interval() -> float:
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    try:
        value = float(raw) if raw else 5.0
    except ValueError:
        value = 5.0
    return min(max(value, 0.2), 300.0)


def source_of(agent: Row) -> str:
    """The source name of an agent's results: `geo:<location>` or `agent:<id>`."""
    if agent["kind"] == "geo" and agent["location"]:
        return f"geo:{agent['location']}"
    return f"agent:{agent['id']}"


def agent_json(row: Row, assigned: int | None = None) -> dict[str, Any]:
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


def check_spec(row: Row) -> dict[str, Any]:
    """What an agent needs to run a check (its engine's `Check`)."""
    c = engine_check(row)
    return {
        "id": c.id,
        "type": c.type,
        "name": c.name,
        "interval": c.interval,
        "timeout": c.timeout,
        "url": c.url,
        "host": c.host,
        "port": c.port,
        "options": c.options,
    }


class Agents:
    """State the routes share: the offline sweep and the published agent statuses."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.interval = heartbeat_interval()
        self._sweeper: asyncio.Task[None] | None = None

    async def authenticate(self, req: falcon.asgi.Request) -> Row:
        """The calling agent; 401 unless the request carries a live agent credential."""
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(wire.AGENT_TOKEN_PREFIX):
            raise falcon.HTTPUnauthorized(
                description="an agent credential is required", challenges=_CHALLENGE
            )
        agent = await self.store.agent_by_credential(hash_token(token))
        if agent is None:
            raise falcon.HTTPUnauthorized(
                description="unknown or revoked agent", challenges=_CHALLENGE
            )
        return agent

    async def sources_gone(self, agent: Row) -> None:
        """An agent offline or revoked: its source is UNKNOWN in every check at once
        (not DOWN), unless another agent of the same geo location still reports."""
        source = source_of(agent)
        if agent["kind"] == "geo":
            peers = await self.store.select(
                "agents",
                [agent["organization_id"]],
                where={"kind": "geo", "location": agent["location"], "status": "online"},
                limit=10,
            )
            if any(p["id"] != agent["id"] and not p["revoked_at"] for p in peers):
                return
        self.ctx.engine.expire_source(source)

    def publish_status(self, agent: Row, status: str) -> None:
        self.ctx.events.publish(
            agent["organization_id"],
            "agent.status",
            {
                "agent_id": agent["id"],
                "name": agent["name"],
                "source": source_of(agent),
                "status": status,
                "last_heartbeat_at": iso(agent["last_heartbeat_at"]),
            },
        )

    async def sweep(self) -> None:
        """Agents silent for three heartbeat intervals go offline and their sources
        stale in the verdicts at once: UNKNOWN, never DOWN."""
        while True:
            await asyncio.sleep(self.interval / 2)
            try:
                gone = await self.store.mark_agents_offline(
                    time.time() - MISSED_HEARTBEATS * self.interval
                )
            except Exception as exc:
                log.warning("agent offline sweep failed: %s", exc)
                continue
            for agent in gone:
                log.warning("agent %s (%s) is offline", agent["id"], agent["name"])
                self.publish_status(agent, "offline")
                try:
                    await self.sources_gone(agent)
                except Exception as exc:
                    log.warning("agent %s: sources not expired: %s", agent["id"], exc)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self.sweep(), name="agent-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


# -- user routes ----------------------------------------------------------------------


def _token_json(row: Row) -> dict[str, Any]:
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


def _opt_str(body: dict[str, Any], field: str, limit: int, pattern: str = "") -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise field_error(field, f"must be a string of at most {limit} characters")
    if pattern and not all(ch.isalnum() or ch in pattern for ch in value):
        raise field_error(field, f"may contain letters, digits and {pattern!r} only")
    return value


class AgentTokensResource:
    def __init__(self, agents: Agents) -> None:
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
        body = await read_json_object(req)
        name = _opt_str(body, "name", 200) or ""
        location = _opt_str(body, "location", 64, "-_.")
        ttl = body.get("expires_in", 24 * 3600)
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not 60 <= ttl <= 366 * 86400
        ):
            raise field_error("expires_in", "must be 60 seconds to a year")
        token = new_token(wire.REGISTRATION_TOKEN_PREFIX)
        row = await self._a.store.insert(
            "agent_registration_tokens",
            org_id,
            {
                "name": name,
                "token_hash": hash_token(token),
                "prefix": token[:8],
                "location": location,
                "expires_at": time.time() + ttl,
            },
        )
        resp.status = falcon.HTTP_201
        resp.media = {**_token_json(row), "token": token}


class AgentTokenResource:
    def __init__(self, agents: Agents) -> None:
        self._a = agents

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, token_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        if not await self._a.store.delete("agent_registration_tokens", [org_id], token_id):
            raise falcon.HTTPNotFound(description="Registration token not found")
        resp.status = falcon.HTTP_204


async def _assigned_counts(agents: Agents, p: Principal, rows: list[Row]) -> dict[int, int]:
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

    def __init__(self, agents: Agents) -> None:
        self._a = agents

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        org_ids = p.org_ids
        org_filter = AGENTS_ORG.get(req)
        if org_filter is not None:
            org_ids = [o for o in org_ids if o == org_filter]
        limit, offset = AGENTS_LIMIT.get(req), query.OFFSET.get(req)
        rows = await self._a.store.select("agents", org_ids, limit=limit, offset=offset)
        counts = await _assigned_counts(self._a, p, rows)
        resp.media = [agent_json(r, counts.get(r["id"], 0)) for r in rows]


class AgentResource:
    def __init__(self, agents: Agents) -> None:
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
        if row["revoked_at"] is None:
            row = (
                await self._a.store.update(
                    "agents",
                    [row["organization_id"]],
                    agent_id,
                    {"revoked_at": time.time(), "status": "offline"},
                )
                or row
            )
            self._a.publish_status(row, "revoked")
            await self._a.sources_gone(row)
        resp.status = falcon.HTTP_204


class GeoLocationsResource:
    def __init__(self, agents: Agents) -> None:
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
        out = []
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
BUCKET = query.OptInt("bucket", 1, 86_400, "seconds per bucket (default: window / 100, ≥ 60)")


def _window(req: falcon.asgi.Request) -> int:
    return WINDOW.get(req)


class GeoSummaryResource:
    query_params: ClassVar = {"get": (WINDOW,)}

    def __init__(self, agents: Agents) -> None:
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
        engine = self._a.ctx.engine
        current = engine.sources(check_id) if engine.get(check_id) is not None else {}
        sources = {}
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
        resp.media = {"check_id": check_id, "window_seconds": window, "sources": sources}


class GeoTimeseriesResource:
    query_params: ClassVar = {"get": (WINDOW, BUCKET)}

    def __init__(self, agents: Agents) -> None:
        self._a = agents

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Per source, per `bucket` seconds over `window`: runs, uptime, latency
        (average, p95) and the worst status seen."""
        p = principal(req)
        window = _window(req)
        bucket = BUCKET.get(req) or max(60, window // 100)
        if window // bucket > 10_000:
            raise query_error("bucket", "at most 10000 buckets in the window")
        if await self._a.store.get_check(p.org_ids, check_id) is None:
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        rows = await self._a.store.source_results(p.org_ids, check_id, time.time() - window)
        grouped: dict[str, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            start = int(r["started_at"] // bucket * bucket)
            grouped[r["source"]][start].append(r)
        rank = {"UP": 0, "DEGRADED": 1, "DOWN": 2}
        series: dict[str, list[dict[str, Any]]] = {}
        for source, buckets in sorted(grouped.items()):
            points = []
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
        resp.media = {
            "check_id": check_id,
            "window_seconds": window,
            "bucket_seconds": bucket,
            "sources": series,
        }


# -- agent routes ---------------------------------------------------------------------


class RegisterResource:
    auth_public = True

    def __init__(self, agents: Agents) -> None:
        self._a = agents

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Trade a one-time registration token for the agent's own credential."""
        body = await read_json_object(req)
        token = body.get("token")
        if not isinstance(token, str) or not token.startswith(wire.REGISTRATION_TOKEN_PREFIX):
            raise falcon.HTTPUnauthorized(
                description="a registration token (reg_…) is required", challenges=_CHALLENGE
            )
        name = _opt_str(body, "name", 200) or "agent"
        location = _opt_str(body, "location", 64, "-_.")
        version = _opt_str(body, "version", 64)
        credential = new_token(wire.AGENT_TOKEN_PREFIX)
        agent = await self._a.store.register_agent(
            hash_token(token),
            {
                "name": name,
                "location": location,
                "version": version,
                "credential_hash": hash_token(credential),
            },
            time.time(),
        )
        if agent is None:
            raise falcon.HTTPUnauthorized(
                description="unknown, used or expired registration token",
                challenges=_CHALLENGE,
            )
        self._a.publish_status(agent, "online")
        resp.status = falcon.HTTP_201
        resp.media = {
            **agent_json(agent),
            "agent_id": agent["id"],
            "credential": credential,
            "heartbeat_interval": self._a.interval,
        }


class HeartbeatResource:
    auth_public = True

    def __init__(self, agents: Agents) -> None:
        self._a = agents

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        agent = await self._a.authenticate(req)
        body = await read_json_object(req)
        version = _opt_str(body, "version", 64)
        load, depth = body.get("load"), body.get("queue_depth")
        if load is not None and (
            isinstance(load, bool) or not isinstance(load, int | float) or not math.isfinite(load)
        ):
            raise field_error("load", "must be a number")
        if depth is not None and (
            isinstance(depth, bool) or not isinstance(depth, int) or depth < 0
        ):
            raise field_error("queue_depth", "must be a non-negative integer")
        now = time.time()
        row = await self._a.store.update(
            "agents",
            [agent["organization_id"]],
            agent["id"],
            {
                "status": "online",
                "last_heartbeat_at": now,
                "version": version or agent["version"],
                "load": load,
                "queue_depth": depth,
            },
        )
        if row is not None and agent["status"] != "online":
            self._a.publish_status(row, "online")
        resp.media = {
            "status": "online",
            "heartbeat_interval": self._a.interval,
            "last_batch_seq": agent["last_batch_seq"],
            "server_time": now,
        }


class AssignedChecksResource:
    auth_public = True

    def __init__(self, agents: Agents) -> None:
        self._a = agents

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The agent's checks; `If-None-Match` with the last ETag answers 304 when
        nothing changed (one small query)."""
        agent = await self._a.authenticate(req)
        org_id = agent["organization_id"]
        version = await self._a.store.assignment_version(org_id)
        digest = hashlib.sha256(f"{agent['id']}|{agent['kind']}|{version}".encode()).hexdigest()
        etag = f'"{digest[:32]}"'
        resp.set_header("ETag", etag)
        if req.get_header("If-None-Match") == etag:
            resp.status = falcon.HTTP_304
            return
        rows = await self._a.store.agent_checks(org_id, agent["id"], agent["kind"] == "geo")
        resp.media = {
            "version": etag.strip('"'),
            "source": source_of(agent),
            "checks": [check_spec(r) for r in rows],
        }


class ResultsResource:
    auth_public = True

    def __init__(self, agents: Agents) -> None:
        self._a = agents
        self.accepted = 0

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """A signed batch: stored with its sequence number in one transaction, then
        folded into the verdicts. A batch already stored is acknowledged again and
        ignored."""
        agent = await self._a.authenticate(req)
        body = await read_bytes(req, MAX_BATCH_BODY)
        key = wire.signing_key(agent["credential_hash"])
        if not wire.signature_ok(key, body, req.get_header(wire.SIGNATURE_HEADER)):
            raise ValidationFailed(
                [
                    {
                        "loc": ["header", wire.SIGNATURE_HEADER],
                        "msg": "the batch signature does not match its body",
                        "type": "signature_mismatch",
                    }
                ]
            )
        source = source_of(agent)
        try:
            data = wire.decode(body, req.content_type)
            check_tree(data, ["body"])
            now = time.time()
            batch = wire.parse(
                data, source, oldest=now - MAX_RESULT_AGE, newest=now + MAX_CLOCK_AHEAD
            )
        except wire.BadBatchError as exc:
            if not exc.loc:
                raise falcon.HTTPBadRequest(description=str(exc)) from None
            raise field_error(exc.loc, str(exc)) from None
        except MalformedJson as exc:
            raise falcon.HTTPBadRequest(description=str(exc)) from None
        except InputError as exc:
            raise ValidationFailed([{"loc": exc.loc, "msg": exc.msg, "type": exc.kind}]) from None
        if batch.seq > agent["last_batch_seq"] + MAX_SEQ_GAP:
            # An agent's numbers only skip the batches it set aside; a jump this far
            # would make every batch it still holds look like an old duplicate.
            raise field_error("seq", f"more than {MAX_SEQ_GAP} above the last batch")
        org_id = agent["organization_id"]
        stored = await self._a.store.accept_agent_batch(
            org_id, agent["id"], batch.seq, batch.store_rows(org_id)
        )
        if stored:
            self._fold(org_id, batch)
        resp.media = {
            "seq": batch.seq,
            "accepted": len(batch.rows) if stored else 0,
            "duplicate": not stored,
        }

    def _fold(self, org_id: int, batch: wire.Batch) -> None:
        engine = self._a.ctx.engine
        rows = batch.verdict_rows()
        known = {cid for cid in {r[0] for r in rows} if engine.get(cid) is not None}
        if known:
            engine.ingest_verdicts(batch.source, [r for r in rows if r[0] in known])
        self.accepted += len(rows)
        # Live clients get each check's newest result of the batch: a batch normally
        # holds one result per check, and one sent after an outage (minutes of results)
        # must not flood every event stream with history.
        newest: dict[int, list[Any]] = {}
        for r in batch.rows:
            have = newest.get(r[0])
            if have is None or r[2] >= have[2]:
                newest[r[0]] = r
        publish = self._a.ctx.events.publish
        source = batch.source
        for r in newest.values():
            publish(
                org_id,
                "log.append",
                {
                    "check_id": r[0],
                    "status": r[1],
                    "latency_ms": round(r[3], 3),
                    "started_at": iso(r[2]),
                    "error_kind": r[5],
                    "status_code": r[7],
                    "source": source,
                },
            )


_STATE: dict[int, Agents] = {}


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    agents = _STATE[id(ctx)] = Agents(ctx)
    app.add_route("/api/agents", AgentListResource(agents))
    app.add_route(f"/api/agents/{{agent_id:{ID}}}", AgentResource(agents))
    app.add_route("/api/agents/geo-locations", GeoLocationsResource(agents))
    app.add_route(f"/api/agents/checks/{{check_id:{ID}}}/geo-summary", GeoSummaryResource(agents))
    app.add_route(
        f"/api/agents/checks/{{check_id:{ID}}}/geo-timeseries", GeoTimeseriesResource(agents)
    )
    app.add_route("/api/agents/register", RegisterResource(agents))
    app.add_route("/api/agents/heartbeat", HeartbeatResource(agents))
    app.add_route("/api/agents/checks", AssignedChecksResource(agents))
    app.add_route("/api/agents/results", ResultsResource(agents))
    org = f"/api/organizations/{{org_id:{ID}}}"
    app.add_route(f"{org}/agent-tokens", AgentTokensResource(agents))
    app.add_route(f"{org}/agent-tokens/{{token_id:{ID}}}", AgentTokenResource(agents))


async def start(ctx: AppContext) -> None:
    agents = _STATE.get(id(ctx))
    if agents is not None:
        agents.start()


async def stop(ctx: AppContext) -> None:
    agents = _STATE.pop(id(ctx), None)
    if agents is not None:
        await agents.stop()
