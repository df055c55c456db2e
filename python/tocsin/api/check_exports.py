"""A check's history as CSV: `/api/checks/{id}/export/logs.csv` (its results) and
`…/export/incidents.csv` (its incidents), over an optional time range, streamed a page at
a time."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, ClassVar

import falcon
import falcon.asgi

from tocsin.api import query
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.errors import query_error
from tocsin.api.paths import ID
from tocsin.incidents import incident_json
from tocsin.store.base import Store

EXPORT_PAGE = 1000
EXPORT_FROM = query.Time("from", "from this time (default: the beginning); must not be after `to`")
EXPORT_TO = query.Time("to", "up to this time (default: now); must not be before `from`")


def _range(req: falcon.asgi.Request) -> tuple[float, float]:
    start, end = EXPORT_FROM.get(req), EXPORT_TO.get(req)
    start = 0.0 if start is None else start
    end = math.inf if end is None else end
    if start > end:
        raise query_error("from", "must not be after `to`")
    return start, end


def _csv_line(values: Iterable[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue().encode()


LOG_COLUMNS = (
    "id",
    "started_at",
    "status",
    "latency_ms",
    "status_code",
    "error_kind",
    "message",
    "source",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "first_byte_ms",
)
INCIDENT_COLUMNS = (
    "id",
    "status",
    "severity",
    "title",
    "cause",
    "started_at",
    "acknowledged_at",
    "resolved_at",
    "duration_s",
)


async def log_lines(
    store: Store, org_ids: list[int], check_id: int, start: float, end: float
) -> AsyncIterator[bytes]:
    """Results newest first, a page at a time (keyset on the result id)."""
    yield _csv_line(LOG_COLUMNS)
    before: int | None = None
    while True:
        rows = await store.list_results(org_ids, check_id, limit=EXPORT_PAGE, before=before)
        chunk = [
            _csv_line(iso(r[c]) if c == "started_at" else r[c] for c in LOG_COLUMNS)
            for r in rows
            if start <= r["started_at"] < end
        ]
        if chunk:
            yield b"".join(chunk)
        # Results arrive in time order, so a page wholly before the range ends it.
        if len(rows) < EXPORT_PAGE or all(r["started_at"] < start for r in rows):
            return
        before = rows[-1]["id"]


async def incident_lines(
    store: Store, org_ids: list[int], check_id: int, start: float, end: float
) -> AsyncIterator[bytes]:
    yield _csv_line(INCIDENT_COLUMNS)
    offset = 0
    while True:
        rows = await store.select(
            "incidents",
            org_ids,
            where={"check_id": check_id},
            limit=EXPORT_PAGE,
            offset=offset,
            newest_first=True,
        )
        chunk = []
        for r in rows:
            if start <= r["started_at"] < end:
                j: Mapping[str, object] = incident_json(r)
                chunk.append(_csv_line(j[c] for c in INCIDENT_COLUMNS))
        if chunk:
            yield b"".join(chunk)
        if len(rows) < EXPORT_PAGE:
            return
        offset += EXPORT_PAGE


class ExportResource:
    response_media_type = "text/csv"
    query_params: ClassVar = {"get": (EXPORT_FROM, EXPORT_TO)}

    def __init__(self, store: Store, what: str) -> None:
        self._store = store
        self._what = what

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        row = await self._store.get_check(p.org_ids, check_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Check not found")
        start, end = _range(req)
        org = [row["organization_id"]]
        lines = log_lines if self._what == "logs" else incident_lines
        resp.content_type = "text/csv; charset=utf-8"
        resp.set_header(
            "Content-Disposition", f'attachment; filename="check-{check_id}-{self._what}.csv"'
        )
        resp.stream = lines(self._store, org, check_id, start, end)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    base = f"/api/checks/{{check_id:{ID}}}"
    app.add_route(f"{base}/export/logs.csv", ExportResource(ctx.store, "logs"))
    app.add_route(f"{base}/export/incidents.csv", ExportResource(ctx.store, "incidents"))
