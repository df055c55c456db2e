"""`/api/checks/…`: create, list, read and delete checks, and read their results."""

from __future__ import annotations

import json
from typing import Any

import falcon
import falcon.asgi

from tocsin.api.body import read_json_object
from tocsin.api.common import int_param, iso, opt_int_param, principal, writable_org
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.schemas import CheckCreate, parse
from tocsin.engine import Engine
from tocsin.models import Check, Status
from tocsin.store.base import Row, Store


def engine_check(row: Row) -> Check:
    config = row["config"]
    return Check(
        id=row["id"],
        type=row["type"],
        interval=row["interval"],
        timeout=row["timeout"],
        name=row["name"],
        url=row["url"],
        is_active=row["is_active"],
        options=config,
    )


def check_json(row: Row) -> dict[str, Any]:
    last = row["last_result"]
    if last is not None:
        last = {**last, "started_at": iso(last["started_at"])}
    status = row["status"] if row["is_active"] else Status.PAUSED.value
    return {
        "id": row["id"],
        "uuid": row["uuid"],
        "name": row["name"],
        "type": row["type"],
        "description": row["description"],
        "url": row["url"],
        "interval": row["interval"],
        "timeout": row["timeout"],
        "is_active": row["is_active"],
        "expected_status_codes": row["config"].get("expected_status_codes", []),
        "organization_id": row["organization_id"],
        "project_id": row["project_id"],
        "status": status,
        "status_changed_at": iso(row["status_changed_at"]),
        "last_checked_at": iso(row["last_checked_at"]),
        "last_result": last,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def result_json(row: Row) -> dict[str, Any]:
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


class ChecksResource:
    def __init__(self, store: Store, engine: Engine) -> None:
        self._store = store
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        limit = int_param(req, "limit", 100, 1, 500)
        offset = int_param(req, "offset", 0, 0, 10**9)
        org_ids = p.org_ids
        org_filter = opt_int_param(req, "org_id", 1, 2**63 - 1)
        if org_filter is not None:
            org_ids = [o for o in org_ids if o == org_filter]
        rows = await self._store.list_checks(org_ids, limit=limit, offset=offset)
        resp.media = [check_json(r) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: CheckCreate = parse(CheckCreate, await read_json_object(req))
        org_id = writable_org(p, body.org_id)
        if body.project_id is not None:
            raise field_error("project_id", "projects other than the default are not available yet")
        fields = body.model_dump(exclude={"org_id", "expected_status_codes"})
        fields["config"] = {"expected_status_codes": body.expected_status_codes}
        row = await self._store.create_check(org_id, fields)
        try:
            self._engine.upsert([engine_check(row)])
        except ValueError as exc:
            # The schema and the core agree on limits; if they ever drift, undo the write.
            await self._store.delete_check([org_id], row["id"])
            raise field_error("interval", str(exc)) from None
        resp.media = check_json(row)


class CheckResource:
    def __init__(self, store: Store, engine: Engine) -> None:
        self._store = store
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        row = await self._store.get_check(principal(req).org_ids, check_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Check not found")
        resp.media = check_json(row)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        row = await self._store.get_check(p.org_ids, check_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Check not found")
        writable_org(p, row["organization_id"])
        self._engine.remove([check_id])
        await self._store.delete_check([row["organization_id"]], check_id)
        resp.status = falcon.HTTP_204


class CheckLogsResource:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        if await self._store.get_check(p.org_ids, check_id) is None:
            raise falcon.HTTPNotFound(description="Check not found")
        limit = int_param(req, "limit", 50, 1, 500)
        before = opt_int_param(req, "before", 1, 2**63 - 1)
        rows = await self._store.list_results(p.org_ids, check_id, limit=limit, before=before)
        resp.media = [result_json(r) for r in rows]
        if len(rows) == limit:
            resp.set_header("X-Next-Before", str(rows[-1]["id"]))


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route("/api/checks", ChecksResource(ctx.store, ctx.engine))
    app.add_route("/api/checks/{check_id:int}", CheckResource(ctx.store, ctx.engine))
    app.add_route("/api/checks/{check_id:int}/logs", CheckLogsResource(ctx.store))


async def start(ctx: AppContext) -> None:
    """Nothing to do at start: the server loads the checks into the engine."""
