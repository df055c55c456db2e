"""`/api/reports/…`: reports of a period's figures over many checks, built in the
background (`tocsin.reports`). `POST /api/reports/generate` accepts one (202, `Location`
of the report), `GET /api/reports/` lists them, `GET /api/reports/{id}` says where one
stands (and, when done, carries a JSON report inline and the download's address),
`GET /api/reports/{id}/document` downloads the document, `DELETE` removes one.

Roles: any member (VIEWER too) reads the reports of their organisations; generating and
deleting need MEMBER. docs/reports.md describes the reports."""

from __future__ import annotations

import json
import re
import time
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID
from tocsin.api.schemas import MAX_ID, Id, json_number, not_boolean, parse, parse_time
from tocsin.reports import MAX_PERIOD_S
from tocsin.reports.render import EXTENSIONS
from tocsin.store.base import ROLES, Principal, Row, Store

KIND = "reports"
MAX_CHECKS = 10_000
# A period's end may be this far past the server's clock (clocks differ a little).
CLOCK_SLACK_S = 60.0
DEFAULT_PERIOD = "30d"
PERIOD_PATTERN = r"^[1-9][0-9]{0,4}[hd]$"
_PERIOD = re.compile(PERIOD_PATTERN)
# Unix seconds up to the year 3000.
Time = float | str | None


class ReportBody(BaseModel):
    """A report to build: which checks (`check_ids`, or every check of `project_id`, or
    every check of the organisation), over which period (`period` ending now, or
    `from`/`to`; the last 30 days when neither), in which format."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    name: str | None = Field(default=None, max_length=200)
    check_ids: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_CHECKS)
    project_id: Id | None = None
    period: str | None = Field(
        default=None,
        pattern=PERIOD_PATTERN,
        description="hours or days ending now: 24h, 7d, 30d, 90d… (at most 400 days)",
    )
    from_: Time = Field(
        default=None,
        alias="from",
        description="start: ISO 8601 (UTC unless it has an offset) or Unix seconds",
    )
    to: Time = Field(default=None, description="end (default: now): ISO 8601 or Unix seconds")
    format: Literal["json", "csv", "html", "pdf"] = "json"
    organization_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    org_id: int | None = Field(default=None, ge=1, le=MAX_ID)

    @field_validator("project_id", "organization_id", "org_id", "check_ids", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return not_boolean(v)


# `from` is a keyword: the functional syntax.
ReportJson = TypedDict(
    "ReportJson",
    {
        "id": int,
        "organization_id": int,
        "name": str,
        "format": Literal["json", "csv", "html", "pdf"],
        "status": Literal["pending", "running", "done", "failed"],
        "check_ids": list[int],
        "project_id": int | None,
        "period": str | None,
        "from": str,
        "to": str,
        "content_type": str | None,
        "size": int | None,
        "error": str | None,
        "created_by": int | None,
        "created_at": str,
        "started_at": str | None,
        "finished_at": str | None,
        "download_url": str | None,
    },
)


class ReportDetailJson(ReportJson):
    """A report; `document` is the JSON report itself when the format is json and it is
    done (null otherwise: download it from `download_url`)."""

    document: dict[str, Any] | None


class ReportPageJson(TypedDict):
    total: int
    offset: int
    limit: int
    reports: list[ReportJson]


def report_json(row: Row) -> dict[str, Any]:
    params = row["params"]
    done = row["status"] == "done"
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "format": row["format"],
        "status": row["status"],
        "check_ids": params.get("check_ids", []),
        "project_id": params.get("project_id"),
        "period": params.get("period"),
        "from": iso(float(params["from"])),
        "to": iso(float(params["to"])),
        "content_type": row["content_type"],
        "size": row["size"],
        "error": row["error"],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "download_url": f"/api/reports/{row['id']}/document" if done else None,
    }


def _role(p: Principal, org_id: int) -> str:
    role = p.roles.get(org_id)
    if role is None:
        raise field_error("org_id", "organisation not found", "not_found")
    return role


def _may_write(p: Principal, org_id: int) -> None:
    if ROLES.index(_role(p, org_id)) > ROLES.index("MEMBER"):
        raise falcon.HTTPForbidden(description="this needs the MEMBER role or higher")


def period_of(body: ReportBody, now: float) -> tuple[float, float, str | None]:
    """[from, to) in Unix seconds, and the named period (if one was given)."""
    if body.period is not None and (body.from_ is not None or body.to is not None):
        raise field_error("period", "send period or from/to, not both")
    if body.from_ is None and body.to is not None:
        raise field_error("from", "Field required with to", "missing")
    if body.from_ is None:
        name = body.period or DEFAULT_PERIOD
        m = _PERIOD.fullmatch(name)
        assert m is not None  # the model's pattern
        seconds = int(name[:-1]) * (3600 if name[-1] == "h" else 86_400)
        if seconds > MAX_PERIOD_S:
            raise field_error("period", f"a report covers at most {MAX_PERIOD_S // 86_400} days")
        return now - seconds, now, name
    start = parse_time("from", body.from_)
    end = now if body.to is None else parse_time("to", body.to)
    if end > now + CLOCK_SLACK_S:
        raise field_error("to", "is in the future")
    if end <= start:
        raise field_error("to", "must be after from")
    if end - start < 60:
        raise field_error("to", "a report covers at least a minute")
    if end - start > MAX_PERIOD_S:
        raise field_error("from", f"a report covers at most {MAX_PERIOD_S // 86_400} days")
    return start, min(end, now), None


async def _checks_of(store: Store, p: Principal, body: ReportBody) -> tuple[int, list[int]]:
    """The organisation and its checks the report covers (422 naming the field for a
    check or project that is not the caller's)."""
    asked_org = body.organization_id or body.org_id
    if asked_org is not None:
        _role(p, asked_org)
    if body.check_ids is not None and body.project_id is not None:
        raise field_error("project_id", "send check_ids or project_id, not both")
    if body.project_id is not None:
        orgs = [asked_org] if asked_org is not None else p.org_ids
        project = await store.get("projects", orgs, body.project_id) if orgs else None
        if project is None:
            raise field_error("project_id", "project not found", "not_found")
        org = int(project["organization_id"])
        _may_write(p, org)
        rows = await store.report_checks([org], project_id=body.project_id)
        return org, [r["id"] for r in rows]
    if body.check_ids is not None:
        wanted = list(dict.fromkeys(body.check_ids))
        if asked_org is None:
            first = await store.get_check(p.org_ids, wanted[0]) if p.org_ids else None
            if first is None:
                raise field_error(["check_ids", 0], f"check {wanted[0]} not found", "not_found")
            asked_org = int(first["organization_id"])
        org = asked_org
        own = {r["id"] for r in await store.report_checks([org])}
        for i, cid in enumerate(body.check_ids):
            if cid not in own:
                raise field_error(["check_ids", i], f"check {cid} not found", "not_found")
        _may_write(p, org)
        return org, wanted
    chosen = asked_org if asked_org is not None else p.default_org_id
    if chosen is None:
        raise falcon.HTTPForbidden(description="you belong to no organisation")
    _may_write(p, chosen)
    return chosen, [r["id"] for r in await store.report_checks([chosen])]


class GenerateResource:
    body_models: ClassVar = {"post": ReportBody}
    response_models: ClassVar = {"post": ReportJson}
    response_status: ClassVar = {"post": 202}

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Accept a report; it is built in the background (poll `GET /api/reports/{id}`)."""
        p = principal(req)
        body: ReportBody = parse(ReportBody, await read_json_object(req))
        start, end, named = period_of(body, time.time())
        store = self._ctx.store
        org, check_ids = await _checks_of(store, p, body)
        params = {
            "check_ids": check_ids,
            "project_id": body.project_id,
            "period": named,
            "from": start,
            "to": end,
        }
        row = await store.insert(
            KIND,
            org,
            {
                "name": body.name or "",
                "format": body.format,
                "status": "pending",
                "params": params,
                "created_by": p.user_id,
            },
        )
        self._ctx.reports.submit(row["id"], org)
        resp.status = falcon.HTTP_202
        resp.set_header("Location", f"/api/reports/{row['id']}")
        resp.media = report_json(row)


LIST_LIMIT = query.limit(50, 200)


class ReportsResource:
    query_params: ClassVar = {"get": (LIST_LIMIT, query.OFFSET, query.ORGANIZATION_ID)}
    response_models: ClassVar = {"get": ReportPageJson}

    def __init__(self, ctx: AppContext) -> None:
        self._store = ctx.store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The reports of your organisations, newest first (without their documents)."""
        p = principal(req)
        limit, offset = LIST_LIMIT.get(req), query.OFFSET.get(req)
        org_ids = p.org_ids
        org = query.ORGANIZATION_ID.get(req)
        if org is not None:
            org_ids = [o for o in org_ids if o == org]
        rows, total = (
            await self._store.list_reports(org_ids, limit=limit, offset=offset)
            if org_ids
            else ([], 0)
        )
        page: ReportPageJson = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "reports": [report_json(r) for r in rows],  # type: ignore[misc]
        }
        resp.media = page


async def _meta(store: Store, req: falcon.asgi.Request, report_id: int) -> Row:
    row = await store.report_meta(principal(req).org_ids, report_id)
    if row is None:
        raise falcon.HTTPNotFound(description="Report not found")
    return row


class ReportResource:
    response_models: ClassVar = {"get": ReportDetailJson, "delete": None}

    def __init__(self, ctx: AppContext) -> None:
        self._store = ctx.store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, report_id: int
    ) -> None:
        """A report's status; a done JSON report carries the report itself."""
        row = await _meta(self._store, req, report_id)
        answer = report_json(row)
        answer["document"] = None
        if row["status"] == "done" and row["format"] == "json":
            full = await self._store.get(KIND, [row["organization_id"]], report_id)
            if full is not None and full["document"] is not None:
                answer["document"] = json.loads(bytes(full["document"]))
        resp.media = answer

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, report_id: int
    ) -> None:
        p = principal(req)
        row = await _meta(self._store, req, report_id)
        _may_write(p, row["organization_id"])
        if not await self._store.delete(KIND, [row["organization_id"]], report_id):
            raise falcon.HTTPNotFound(description="Report not found")
        resp.status = falcon.HTTP_204


class DocumentResource:
    # json, csv, html or pdf: the report's own content type (see its `content_type`).
    response_media_type = "*/*"

    def __init__(self, ctx: AppContext) -> None:
        self._store = ctx.store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, report_id: int
    ) -> None:
        """Download a done report's document (409 while it is being built)."""
        row = await _meta(self._store, req, report_id)
        if row["status"] != "done":
            raise falcon.HTTPConflict(
                description=f"the report is {row['status']}; it has no document"
                + (" yet" if row["status"] in ("pending", "running") else "")
            )
        full = await self._store.get(KIND, [row["organization_id"]], report_id)
        if full is None or full["document"] is None:
            raise falcon.HTTPNotFound(description="Report not found")
        resp.content_type = row["content_type"]
        name = f"report-{report_id}.{EXTENSIONS[row['format']]}"
        disposition = "inline" if row["format"] in ("json", "html") else "attachment"
        resp.set_header("Content-Disposition", f'{disposition}; filename="{name}"')
        resp.data = bytes(full["document"])


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route("/api/reports/generate", GenerateResource(ctx))
    app.add_route("/api/reports", ReportsResource(ctx))
    app.add_route(f"/api/reports/{{report_id:{ID}}}", ReportResource(ctx))
    app.add_route(f"/api/reports/{{report_id:{ID}}}/document", DocumentResource(ctx))
