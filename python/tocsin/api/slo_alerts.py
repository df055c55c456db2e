"""`GET /api/checks/{check_id}/slo/events`: the SLO's timeline — each alert state turning
on (`budget_warning`, `budget_exhausted`, `burn_rate`) or off (`…_recovered`), with the
figures then (tocsin/workflow/slo_alerts.py). See docs/slo-alerts.md."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon
import falcon.asgi
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.paths import ID
from tocsin.store.base import Store


class SloEventJson(TypedDict):
    id: int
    slo_id: int
    check_id: int
    # budget_warning, budget_exhausted, burn_rate, or one of them + "_recovered"
    kind: str
    # the SLO's figures and settings when it happened
    detail: dict[str, Any]
    at: str


class SloEventsResource:
    response_models: ClassVar = {"get": list[SloEventJson]}
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Newest first (`X-Total-Count`)."""
        p = principal(req)
        check = await self._store.get_check(p.org_ids, check_id)
        if check is None:
            raise falcon.HTTPNotFound(description="Check not found")
        org = [int(check["organization_id"])]
        where = {"check_id": check_id}
        rows = await self._store.select(
            "slo_events",
            org,
            where=where,
            limit=query.limit(100, 500).get(req),
            offset=query.OFFSET.get(req),
            newest_first=True,
        )
        resp.set_header(
            "X-Total-Count", str(await self._store.count("slo_events", org, where=where))
        )
        answer: list[SloEventJson] = []
        for r in rows:
            detail = dict(r["detail"] or {})
            if isinstance(detail.get("since"), float | int):
                detail["since"] = iso(detail["since"])
            answer.append(
                {
                    "id": r["id"],
                    "slo_id": r["slo_id"],
                    "check_id": r["check_id"],
                    "kind": r["kind"],
                    "detail": detail,
                    "at": iso(r["at"]),
                }
            )
        resp.media = answer


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route(f"/api/checks/{{check_id:{ID}}}/slo/events", SloEventsResource(ctx.store))
