"""The agents' own routes (Bearer `agt_…`; routes the user authentication skips and that
accept nothing else): `register` (with a one-time `reg_…` token), `heartbeat`, `checks`
(their assignments, with an ETag), `results` (signed batches with sequence numbers,
stored exactly once). An agent credential is not a user token and a user token is not
an agent credential, so neither reaches the other's routes."""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import BaseModel, Field
from pydantic.config import JsonDict
from typing_extensions import TypedDict

from tocsin.agent import wire
from tocsin.agent.fleet import AgentFleet, source_of
from tocsin.agent.wire import AT
from tocsin.api.agents import LOCATION_CHARS, AgentBody, AgentJson, agent_json
from tocsin.api.body import read_bytes, read_json_object
from tocsin.api.common import iso
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, field_error
from tocsin.api.schemas import MAX_ID, parse
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


# -- what agents send -------------------------------------------------------------------


class RegisterBody(AgentBody):
    token: str = Field(
        description="the one-time registration token (`reg_…`); a missing or wrong one is a 401",
        json_schema_extra={"pattern": f"^{wire.REGISTRATION_TOKEN_PREFIX}"},
    )
    name: str | None = Field(default=None, max_length=200, description='none: "agent"')
    location: str | None = Field(
        default=None,
        max_length=64,
        description="the geo location it reports from, unless its token names one; none: a"
        f" private agent. Letters, digits and {LOCATION_CHARS!r}",
    )
    version: str | None = Field(default=None, max_length=64)


class HeartbeatBody(AgentBody):
    version: str | None = Field(default=None, max_length=64, description="none: unchanged")
    load: float | None = Field(default=None, allow_inf_nan=False, description="load average")
    # At most a PostgreSQL INTEGER (the column).
    queue_depth: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="batches waiting to be sent"
    )


# NOTE: the limits `wire._well_formed` checks, written again for the document.
_NUMBER: JsonDict = {"type": "number", "minimum": 0, "maximum": wire.MAX_NUM}


def _or_null(schema: JsonDict) -> JsonDict:
    return {"anyOf": [schema, {"type": "null"}]}


def _text(limit: int) -> JsonDict:
    return _or_null({"type": "string", "maxLength": limit})


# Each wire field's schema (what `wire.parse` accepts), in the order of `wire.ROW_FIELDS`.
_ROW_FIELD_SCHEMAS: dict[str, JsonDict] = {
    "check_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "status": {"enum": ["UP", "DOWN", "DEGRADED"]},
    "started_at": {
        **_NUMBER,
        "description": f"Unix seconds; at most {MAX_RESULT_AGE / 86_400:g} days old and"
        f" {MAX_CLOCK_AHEAD:g} seconds ahead of the server's clock",
    },
    "latency_ms": _NUMBER,
    "due_at": _or_null(_NUMBER),
    "error_kind": _text(100),
    "message": _text(2_000),
    "status_code": _or_null({"type": "integer", "minimum": 0, "maximum": wire.MAX_STATUS_CODE}),
    "dns_ms": _or_null(_NUMBER),
    "connect_ms": _or_null(_NUMBER),
    "tls_ms": _or_null(_NUMBER),
    "first_byte_ms": _or_null(_NUMBER),
    "details_json": _text(20_000),
}
if list(_ROW_FIELD_SCHEMAS) != list(wire.ROW_FIELDS):
    raise ImportError("_ROW_FIELD_SCHEMAS must describe wire.ROW_FIELDS, in their order")
_ROW_SCHEMA: JsonDict = {
    "type": "array",
    "description": "a result: " + ", ".join(wire.ROW_FIELDS),
    "prefixItems": list(_ROW_FIELD_SCHEMAS.values()),
    "minItems": len(wire.ROW_FIELDS),
    "maxItems": len(wire.ROW_FIELDS),
}


class ResultBatch(BaseModel):
    """A batch of results (`wire.parse` reads it; this model documents it): msgpack, or
    JSON, signed in the `X-Tocsin-Signature` header (HMAC-SHA256 keyed by the SHA-256
    of the agent's credential: `sha256=<hex>`)."""

    seq: int = Field(
        ge=1,
        le=MAX_ID,
        description="the batch's sequence number: a batch at or below the last one stored"
        " is a duplicate (acknowledged, not stored again)",
    )
    results: list[list[Any]] = Field(
        max_length=wire.MAX_ROWS, json_schema_extra={"items": _ROW_SCHEMA}
    )


# -- what they are answered -------------------------------------------------------------


class RegisteredAgentJson(AgentJson):
    """The new agent and its credential, the only time the credential is shown."""

    agent_id: int
    credential: str
    heartbeat_interval: float


class HeartbeatAckJson(TypedDict):
    status: Literal["online"]
    heartbeat_interval: float
    last_batch_seq: int
    server_time: float


class CheckSpecJson(TypedDict):
    """What an agent needs to run a check (its engine's `Check`)."""

    id: int
    type: str
    name: str
    interval: float
    timeout: float
    url: str | None
    host: str | None
    port: int | None
    options: dict[str, Any]


class AssignmentsJson(TypedDict):
    """The agent's checks; `version` is the ETag (304 to a matching `If-None-Match`)."""

    version: str
    source: str
    checks: list[CheckSpecJson]


class BatchAckJson(TypedDict):
    seq: int
    accepted: int
    duplicate: bool


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


def check_spec(row: Row) -> CheckSpecJson:
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
    body_models: ClassVar = {"post": RegisterBody}
    response_models: ClassVar = {"post": RegisteredAgentJson}
    response_status: ClassVar = {"post": 201}

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
        form: RegisterBody = parse(RegisterBody, body)
        credential = new_token(wire.AGENT_TOKEN_PREFIX)
        agent = await self._a.store.register_agent(
            hash_token(token),
            {
                "name": form.name or "agent",
                "location": form.location,
                "version": form.version,
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
        answer: RegisteredAgentJson = {
            **agent_json(agent),
            "agent_id": agent["id"],
            "credential": credential,
            "heartbeat_interval": self._a.interval,
        }
        resp.media = answer


class HeartbeatResource:
    auth_public = True
    body_models: ClassVar = {"post": HeartbeatBody}
    response_models: ClassVar = {"post": HeartbeatAckJson}

    def __init__(self, agents: AgentFleet) -> None:
        self._a = agents

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        agent = await authenticate(self._a, req)
        body: HeartbeatBody = parse(HeartbeatBody, await read_json_object(req))
        now = time.time()
        row = await self._a.store.update(
            "agents",
            [agent["organization_id"]],
            agent["id"],
            {
                "status": "online",
                "last_heartbeat_at": now,
                "version": body.version or agent["version"],
                "load": body.load,
                "queue_depth": body.queue_depth,
            },
        )
        if row is not None and agent["status"] != "online":
            self._a.publish_status(row, "online")
        ack: HeartbeatAckJson = {
            "status": "online",
            "heartbeat_interval": self._a.interval,
            "last_batch_seq": agent["last_batch_seq"],
            "server_time": now,
        }
        resp.media = ack


class AssignedChecksResource:
    auth_public = True
    response_models: ClassVar = {"get": AssignmentsJson}

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
        assignments: AssignmentsJson = {
            "version": etag.strip('"'),
            "source": source_of(agent),
            "checks": [check_spec(r) for r in rows],
        }
        resp.media = assignments


class ResultsResource:
    auth_public = True
    body_models: ClassVar = {"post": ResultBatch}
    body_media_types = (wire.MSGPACK, "application/json")
    response_models: ClassVar = {"post": BatchAckJson}

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
            # Text: msgpack decodes strict UTF-8 and JSON is parsed by orjson (neither
            # lets an unpaired surrogate through); `parse` keeps U+0000 as U+FFFD.
            data = wire.decode(body, req.content_type)
            now = time.time()
            batch = wire.parse(
                data, source, oldest=now - MAX_RESULT_AGE, newest=now + MAX_CLOCK_AHEAD
            )
        except wire.BadBatchError as exc:
            if not exc.loc:
                raise falcon.HTTPBadRequest(description=str(exc)) from None
            raise field_error(exc.loc, str(exc)) from None
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
        ack: BatchAckJson = {
            "seq": batch.seq,
            "accepted": len(batch.rows) if stored else 0,
            "duplicate": not stored,
        }
        resp.media = ack

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
