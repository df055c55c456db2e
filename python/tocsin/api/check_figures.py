"""What a check's history adds up to: `/stats`, `/sla`, `/slo` and `/incidents` under
`/api/checks/{id}/…`. Figures come from the rollup tiers (whole days, then whole hours,
then the minutes of the current hour), never from raw results. The CSV exports of a
check's history are api/check_exports.py."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast, overload

import falcon
import falcon.asgi
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, writable_org
from tocsin.api.context import AppContext
from tocsin.api.incidents import IncidentPageJson
from tocsin.api.paths import ID
from tocsin.api.query import OFFSET
from tocsin.api.schemas import SloBody, parse
from tocsin.figures import apdex_t_of, figures
from tocsin.history import History, slo_state
from tocsin.incidents import incident_json
from tocsin.store.base import Principal, Row, Store

WINDOWS = {"24h": 1, "7d": 7, "30d": 30, "90d": 90}


@overload
def _seconds(ms: float) -> float: ...
@overload
def _seconds(ms: None) -> None: ...
@overload
def _seconds(ms: float | None) -> float | None: ...
def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def _round(v: Any, digits: int = 4) -> Any:
    return round(v, digits) if isinstance(v, float) else v


APDEX_T = query.OptInt(
    "apdex_t_ms", 1, 3_600_000, "Apdex threshold T (default: the degraded threshold or 500)"
)
INCIDENTS_LIMIT = query.limit(50, 200)


class Figures:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def check(self, p: Principal, check_id: int) -> Row:
        row = await self.store.get_check(p.org_ids, check_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Check not found")
        return row

    async def history(self, p: Principal, row: Row, days: int) -> History:
        h = History(round(time.time() * 1000), round(row["created_at"] * 1000))
        await h.load(self.store, p.org_ids, row["id"], days)
        return h

    def apdex_t(self, req: falcon.asgi.Request, row: Row) -> float:
        chosen = APDEX_T.get(req)
        return float(chosen) if chosen else apdex_t_of(row["config"])

    async def windows(
        self, req: falcon.asgi.Request, check_id: int
    ) -> tuple[float, dict[str, dict[str, Any]]]:
        """Apdex T and the figures of each of WINDOWS, for `/stats` and `/sla`."""
        p = principal(req)
        row = await self.check(p, check_id)
        h = await self.history(p, row, max(WINDOWS.values()))
        apdex_t = self.apdex_t(req, row)
        return apdex_t, {
            name: figures(h.window(days), apdex_t_ms=apdex_t) for name, days in WINDOWS.items()
        }


class StatsWindowJson(TypedDict):
    """A window's figures; null when it holds no counted time (or no successful run)."""

    uptime_pct: float | None
    runs: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class SlaWindowJson(TypedDict):
    uptime_pct: float | None
    total_s: float
    downtime_s: float
    incidents: int
    mttr_s: float | None
    mtbf_s: float | None
    apdex: float | None
    runs: int


class _StatsFields(TypedDict):
    check_id: int
    windows: dict[str, StatsWindowJson]


class _SlaFields(TypedDict):
    check_id: int
    apdex_t_ms: float
    windows: dict[str, SlaWindowJson]


def _per_window(name: str, tp: Any) -> Any:
    """A TypedDict with a field of type `tp` for each window of WINDOWS."""
    # (mypy reads only the functional syntax with a literal dict of fields)
    return TypedDict(name, dict.fromkeys(WINDOWS, tp))  # type: ignore[operator]


if TYPE_CHECKING:
    # To mypy, the fixed keys; the `uptime_<window>` keys and the windows' names exist
    # at run time only (tests/test_api_answer_types.py checks them against the answers).
    StatsJson = _StatsFields
    SlaJson = _SlaFields
else:
    # The answers of `/stats` (each window's uptime at the top: `uptime_24h`, …) and
    # `/sla`, with a field per window of WINDOWS.
    StatsJson = TypedDict(
        "StatsJson",
        {
            "check_id": int,
            **{f"uptime_{name}": float | None for name in WINDOWS},
            "windows": _per_window("StatsWindows", StatsWindowJson),
        },
    )
    _SlaWindows = _per_window("SlaWindows", SlaWindowJson)

    class SlaJson(TypedDict):
        check_id: int
        apdex_t_ms: float
        windows: _SlaWindows


class StatsResource:
    query_params: ClassVar = {"get": (APDEX_T,)}
    response_models: ClassVar = {"get": StatsJson}

    def __init__(self, f: Figures) -> None:
        self._f = f

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        _, figures_of = await self._f.windows(req, check_id)
        windows: dict[str, StatsWindowJson] = {}
        for name, s in figures_of.items():
            windows[name] = {
                "uptime_pct": _round(s["uptime_pct"]),
                "runs": s["runs"],
                "p50_ms": _round(s["p50_ms"], 3),
                "p95_ms": _round(s["p95_ms"], 3),
                "p99_ms": _round(s["p99_ms"], 3),
            }
        resp.media = stats_json(check_id, windows)


def stats_json(check_id: int, windows: dict[str, StatsWindowJson]) -> StatsJson:
    answer: StatsJson = {"check_id": check_id, "windows": windows}
    # Each window's uptime at the top (StatsJson's `uptime_<window>` keys), in place.
    cast("dict[str, Any]", answer).update(
        {f"uptime_{name}": w["uptime_pct"] for name, w in windows.items()}
    )
    return answer


class SlaResource:
    query_params: ClassVar = {"get": (APDEX_T,)}
    response_models: ClassVar = {"get": SlaJson}

    def __init__(self, f: Figures) -> None:
        self._f = f

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        apdex_t, figures_of = await self._f.windows(req, check_id)
        windows: dict[str, SlaWindowJson] = {}
        for name, s in figures_of.items():
            windows[name] = {
                "uptime_pct": _round(s["uptime_pct"]),
                "total_s": _seconds(s["total_ms"]),
                "downtime_s": _seconds(s["downtime_ms"]),
                "incidents": s["incidents"],
                "mttr_s": _seconds(s["mttr_ms"]),
                "mtbf_s": _seconds(s["mtbf_ms"]),
                "apdex": _round(s["apdex"]),
                "runs": s["runs"],
            }
        answer: SlaJson = {"check_id": check_id, "apdex_t_ms": apdex_t, "windows": windows}
        resp.media = answer


class IncidentsResource:
    query_params: ClassVar = {"get": (INCIDENTS_LIMIT, OFFSET)}
    response_models: ClassVar = {"get": IncidentPageJson}

    def __init__(self, f: Figures) -> None:
        self._f = f

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        row = await self._f.check(p, check_id)
        limit, offset = INCIDENTS_LIMIT.get(req), OFFSET.get(req)
        org = [row["organization_id"]]
        where = {"check_id": check_id}
        rows = await self._f.store.select(
            "incidents", org, where=where, limit=limit, offset=offset, newest_first=True
        )
        total = await self._f.store.count("incidents", org, where=where)
        page: IncidentPageJson = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "incidents": [incident_json(r) for r in rows],
        }
        resp.media = page


# -- SLO ------------------------------------------------------------------------------


class SloJson(TypedDict):
    """An SLO: its settings (SloBody's fields) and its state now."""

    id: int
    check_id: int
    sli_type: Literal["availability", "latency"]
    target_percentage: float
    window_days: int
    latency_threshold_ms: float | None
    notify_on_budget_warn: bool
    budget_warn_pct: float
    notify_on_budget_exhausted: bool
    burn_rate_alert_enabled: bool
    burn_rate_threshold: float
    burn_rate_window_minutes: int
    current_sli_pct: float
    error_budget_remaining_pct: float
    # null when it is not finite
    burn_rate: float | None
    budget_warning: bool
    budget_exhausted: bool
    burn_rate_alert: bool
    window_start: str
    created_at: str
    updated_at: str


class SloAnswer(TypedDict):
    """A check's SLO (null when it has none)."""

    check_id: int
    slo: SloJson | None


async def slo_json(store: Store, org_ids: list[int], check: Row, s: Row) -> SloJson:
    now = await slo_state(store, org_ids, check, s)
    state = now.state
    return {
        "id": s["id"],
        "check_id": s["check_id"],
        "sli_type": s["sli_type"],
        "target_percentage": s["target_percentage"],
        "window_days": s["window_days"],
        "latency_threshold_ms": s["latency_threshold_ms"],
        "notify_on_budget_warn": s["notify_on_budget_warn"],
        "budget_warn_pct": s["budget_warn_pct"],
        "notify_on_budget_exhausted": s["notify_on_budget_exhausted"],
        "burn_rate_alert_enabled": s["burn_rate_alert_enabled"],
        "burn_rate_threshold": s["burn_rate_threshold"],
        "burn_rate_window_minutes": s["burn_rate_window_minutes"],
        "current_sli_pct": round(state.sli * 100, 4),
        "error_budget_remaining_pct": round(state.budget_remaining * 100, 4),
        "burn_rate": round(state.burn_rate, 4) if math.isfinite(state.burn_rate) else None,
        "budget_warning": state.budget_warning,
        "budget_exhausted": state.budget_exhausted,
        "burn_rate_alert": state.burn_rate_alert,
        "window_start": iso(now.window_start_ms / 1000),
        "created_at": iso(s["created_at"]),
        "updated_at": iso(s["updated_at"]),
    }


class SloResource:
    """One SLO per check: `/slo` and `/slo/{slo_id}` address the same one."""

    body_models: ClassVar = {"post": SloBody, "put": SloBody, "put_item": SloBody}
    response_models: ClassVar = {
        "get": SloAnswer,
        "post": SloAnswer,
        "put": SloAnswer,
        "delete": None,
        "get_item": SloAnswer,
        "put_item": SloAnswer,
        "delete_item": None,
    }
    # The SLO's id is inside the answer.
    created_ids: ClassVar = {"post": "/slo/id"}

    def __init__(self, f: Figures) -> None:
        self._f = f

    async def _current(self, p: Principal, row: Row, slo_id: int | None) -> Row | None:
        found = await self._f.store.select(
            "slos", [row["organization_id"]], where={"check_id": row["id"]}, limit=1
        )
        s = found[0] if found else None
        if slo_id is not None and (s is None or s["id"] != slo_id):
            raise falcon.HTTPNotFound(description="SLO not found")
        return s

    async def _answer(
        self, resp: falcon.asgi.Response, p: Principal, row: Row, s: Row | None
    ) -> None:
        answer: SloAnswer = {
            "check_id": row["id"],
            "slo": None if s is None else await slo_json(self._f.store, p.org_ids, row, s),
        }
        resp.media = answer

    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        check_id: int,
        slo_id: int | None = None,
    ) -> None:
        p = principal(req)
        row = await self._f.check(p, check_id)
        await self._answer(resp, p, row, await self._current(p, row, slo_id))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        row = await self._f.check(p, check_id)
        writable_org(p, row["organization_id"])
        body: SloBody = parse(SloBody, await read_json_object(req))
        if await self._current(p, row, None) is not None:
            raise falcon.HTTPConflict(
                description="this check already has an SLO; change it with PUT"
            )
        s = await self._f.store.insert(
            "slos", row["organization_id"], {"check_id": check_id, **body.model_dump()}
        )
        await self._answer(resp, p, row, s)

    async def on_put(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        check_id: int,
        slo_id: int | None = None,
    ) -> None:
        """Replace the SLO (on `/slo`, create it when there is none)."""
        p = principal(req)
        row = await self._f.check(p, check_id)
        writable_org(p, row["organization_id"])
        current = await self._current(p, row, slo_id)
        body: SloBody = parse(SloBody, await read_json_object(req))
        org = row["organization_id"]
        if current is None:
            s = await self._f.store.insert("slos", org, {"check_id": check_id, **body.model_dump()})
        else:
            updated = await self._f.store.update("slos", [org], current["id"], body.model_dump())
            if updated is None:
                raise falcon.HTTPNotFound(description="SLO not found")
            s = updated
        await self._answer(resp, p, row, s)

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        check_id: int,
        slo_id: int | None = None,
    ) -> None:
        p = principal(req)
        row = await self._f.check(p, check_id)
        writable_org(p, row["organization_id"])
        current = await self._current(p, row, slo_id)
        if current is None or not await self._f.store.delete(
            "slos", [row["organization_id"]], current["id"]
        ):
            raise falcon.HTTPNotFound(description="SLO not found")
        resp.status = falcon.HTTP_204

    async def on_get_item(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int, slo_id: int
    ) -> None:
        await self.on_get(req, resp, check_id, slo_id)

    async def on_put_item(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int, slo_id: int
    ) -> None:
        await self.on_put(req, resp, check_id, slo_id)

    async def on_delete_item(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int, slo_id: int
    ) -> None:
        await self.on_delete(req, resp, check_id, slo_id)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    f = Figures(ctx.store)
    base = f"/api/checks/{{check_id:{ID}}}"
    app.add_route(f"{base}/stats", StatsResource(f))
    app.add_route(f"{base}/sla", SlaResource(f))
    app.add_route(f"{base}/incidents", IncidentsResource(f))
    slo_resource = SloResource(f)
    app.add_route(f"{base}/slo", slo_resource)
    app.add_route(f"{base}/slo/{{slo_id:{ID}}}", slo_resource, suffix="item")
