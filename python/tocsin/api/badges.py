"""Badges, public by check uuid (the uuid is the secret, as for pings), as SVG
(tocsin/metrics/badges.py): `GET /api/badges/{uuid}` (the check's status) and
`GET /api/badges/{uuid}/uptime?window=24h|7d|30d|90d` (its uptime from the rollups, as
`/api/checks/{id}/stats` computes it), with `?label=` and `?style=flat|flat-square`.

Every badge comes from the badges' cache (`ctx.badge_cache`, apart from the status
pages' so label variants cannot push pages out), keyed by uuid and options
and tied to its check, so a status change of the check drops it and a hit reads nothing
from the database (the uuid's lookup happens only when a badge is built). Answers carry
an `ETag` and a short `Cache-Control`; a matching `If-None-Match` is a 304. An unknown
uuid is a 404 in the API's error model (JSON `{"detail"}`)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

import falcon
import falcon.asgi

from tocsin.api import query
from tocsin.api.cached import answer
from tocsin.api.check_figures import WINDOWS
from tocsin.api.context import AppContext
from tocsin.api.paths import BADGE_PREFIX
from tocsin.engine import Engine
from tocsin.figures import figures
from tocsin.history import History
from tocsin.metrics import badges
from tocsin.statuspages.cache import Built, Cached, PublicCache
from tocsin.store.base import Row, Store

# Browsers, proxies and README renderers may keep a badge this long.
MAX_AGE = 30
MAX_LABEL = 50
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
# Unknown uuids remembered briefly, so probing costs no query per request either.
_MISS_TTL = 10.0
_MISS_SIZE = 10_000

LABEL = query.Text(
    "label", f"the left-hand text (at most {MAX_LABEL} characters)", max_length=MAX_LABEL
)
STYLE = query.Text("style", "flat (default) or flat-square", badges.STYLES)
WINDOW = query.Text("window", "the uptime window (default 30d)", tuple(WINDOWS))


class _NotFound(Exception):
    pass


def _status(row: Row, engine: Engine) -> str:
    """The engine's verdict (the cache is dropped on its transitions, before the writer
    has stored them), else the stored status (a check the engine does not run)."""
    if not row["is_active"]:
        return "PAUSED"
    try:
        status = str(engine.status(int(row["id"])))
    except (KeyError, ValueError, IndexError):
        status = str(row["status"])
    return status if status in badges.STATUS_LOOK else "UNKNOWN"


class _Badge:
    response_media_type = badges.CONTENT_TYPE
    kind: ClassVar[str] = ""

    def __init__(self, ctx: AppContext) -> None:
        self._cache: PublicCache = ctx.badge_cache
        self._store: Store = ctx.store
        self._engine = ctx.engine
        self._misses: dict[str, float] = {}

    async def _check(self, uuid: str) -> Row:
        now = time.monotonic()
        missed = self._misses.get(uuid)
        if missed is not None and missed > now:
            raise _NotFound
        row = await self._store.check_by_uuid(uuid)
        if row is None:
            if len(self._misses) >= _MISS_SIZE:
                self._misses.pop(next(iter(self._misses)))
            self._misses[uuid] = now + _MISS_TTL
            raise _NotFound
        return row

    async def _serve(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        uuid: str,
        key: str,
        build: Callable[[Row], Awaitable[Built]],
    ) -> None:
        uuid = uuid.lower()
        if not _UUID.fullmatch(uuid):
            raise falcon.HTTPNotFound(description="Check not found")

        async def built() -> Built:
            return await build(await self._check(uuid))

        try:
            entry = await self._cache.get_or_build(f"badge:{uuid}:{key}", built)
        except _NotFound:
            raise falcon.HTTPNotFound(description="Check not found") from None
        self._answer(req, resp, entry)

    def _answer(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, e: Cached) -> None:
        answer(req, resp, e, max_age=MAX_AGE)


class StatusBadgeResource(_Badge):
    """The check's current status: up (green), degraded or late (yellow), down (red),
    paused or unknown (grey)."""

    query_params: ClassVar = {"get": (LABEL, STYLE)}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, uuid: str) -> None:
        label = LABEL.get(req)
        label = "status" if label is None else label
        style = STYLE.get(req) or "flat"

        async def build(row: Row) -> Built:
            value, colour = badges.STATUS_LOOK[_status(row, self._engine)]
            return Built(
                badges.render(label, value, colour, style), badges.CONTENT_TYPE, [int(row["id"])]
            )

        await self._serve(req, resp, uuid, f"status:{style}:{label}", build)


class UptimeBadgeResource(_Badge):
    """The check's uptime over the window (from the rollups): >= 99.9 % bright green,
    >= 99 % green, >= 95 % yellow, >= 90 % orange, else red; grey without data."""

    query_params: ClassVar = {"get": (WINDOW, LABEL, STYLE)}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, uuid: str) -> None:
        window = WINDOW.get(req) or "30d"
        label = LABEL.get(req)
        label = f"uptime {window}" if label is None else label
        style = STYLE.get(req) or "flat"
        days = WINDOWS[window]

        async def build(row: Row) -> Built:
            h = History(round(time.time() * 1000), round(row["created_at"] * 1000))
            await h.load(self._store, [int(row["organization_id"])], int(row["id"]), days)
            pct = figures(h.window(days))["uptime_pct"]
            pct = None if pct is None else float(pct)
            svg = badges.render(label, badges.uptime_text(pct), badges.uptime_colour(pct), style)
            return Built(svg, badges.CONTENT_TYPE, [int(row["id"])])

        await self._serve(req, resp, uuid, f"uptime:{window}:{style}:{label}", build)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route(BADGE_PREFIX + "{uuid}", StatusBadgeResource(ctx))
    app.add_route(BADGE_PREFIX + "{uuid}/uptime", UptimeBadgeResource(ctx))
