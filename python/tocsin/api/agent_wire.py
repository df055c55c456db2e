"""The agents' own routes (Bearer `agt_…`; routes the user authentication skips and that
accept nothing else): `register` (with a one-time `reg_…` token), `heartbeat`, `checks`
(their assignments, with an ETag), `results` (signed batches with sequence numbers,
stored exactly once). An agent credential is not a user token and a user token is not
an agent credential, so neither reaches the other's routes."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import falcon
import falcon.asgi

from tocsin.agent import wire
from tocsin.agent.fleet import AgentFleet, source_of
from tocsin.agent.wire import AT
from tocsin.api.agents import _opt_str, agent_json
from tocsin.api.body import read_bytes, read_json_object
from tocsin.api.common import iso
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, field_error
from tocsin.api.limits import InputError, MalformedJson, check_tree
from tocsin.checks import engine_check
from tocsin.security import hash_token, new_token
from tocsin.store.base import Row

MAX_BATCH_BODY = 16 << 20
# How far a batch's sequence number may run ahead of the last one stored.
MAX_SEQ_GAP = 1_000_000
# Results older than this (an agent back after a long outage) or this far ahead of the
# server's clock are refused: they would fall outside the kept raw data.
MAX_RESULT_AGE = 14 * 86_400.0
MAX_CLOCK_AHEAD = 3_600.0
_CHALLENGE = ['Bearer realm="tocsin-agent"']


async def authenticate(fleet: AgentFleet, req: falcon.asgi.Request) -> Row:
    """The calling agent; 401 unless the request carries a live agent credential."""
    scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(wire.AGENT_TOKEN_PREFIX):
        raise falcon.HTTPUnauthorized(
            description="an agent credential is required", challenges=_CHALLENGE
        )
    agent = await fleet.store.agent_by_credential(hash_token(token))
    if agent is None:
        raise falcon.HTTPUnauthorized(description="unknown or revoked agent", challenges=_CHALLENGE)
    return agent


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


# -- agent routes ---------------------------------------------------------------------


class RegisterResource:
    auth_public = True

    def __init__(self, agents: AgentFleet) -> None:
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

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        agent = await authenticate(self._a, req)
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

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The agent's checks; `If-None-Match` with the last ETag answers 304 when
        nothing changed (one small query)."""
        agent = await authenticate(self._a, req)
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

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents
        self.accepted = 0

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """A signed batch: stored with its sequence number in one transaction, then
        folded into the verdicts. A batch already stored is acknowledged again and
        ignored."""
        agent = await authenticate(self._a, req)
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
        engine = self._a.engine
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
            if have is None or r[AT["started_at"]] >= have[AT["started_at"]]:
                newest[r[0]] = r
        publish = self._a.events.publish
        source = batch.source
        for r in newest.values():
            publish(
                org_id,
                "log.append",
                {
                    "check_id": r[AT["check_id"]],
                    "status": r[AT["status"]],
                    "latency_ms": round(r[AT["latency_ms"]], 3),
                    "started_at": iso(r[AT["started_at"]]),
                    "error_kind": r[AT["error_kind"]],
                    "status_code": r[AT["status_code"]],
                    "source": source,
                },
            )


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    fleet = ctx.agents
    app.add_route("/api/agents/register", RegisterResource(fleet))
    app.add_route("/api/agents/heartbeat", HeartbeatResource(fleet))
    app.add_route("/api/agents/checks", AssignedChecksResource(fleet))
    app.add_route("/api/agents/results", ResultsResource(fleet))
