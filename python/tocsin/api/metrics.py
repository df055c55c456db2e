"""Metrics export (docs/metrics.md):

- `GET, POST /api/organizations/{org_id}/metrics-keys`, `DELETE …/{key_id}`: an
  organisation's metrics keys (ADMIN and up). A key is shown once, at creation; the
  store keeps its SHA-256 hash, as for API tokens.
- `GET /api/metrics/{key}`: the organisation's per-check metrics in the Prometheus text
  format (or `?format=otlp`: OTLP JSON), public (the key is the credential). An unknown
  and a revoked key are the same 404. Served from a short cache per organisation; the
  rollup figures (uptime, latency quantiles) from a longer one, rebuilt with a handful
  of queries for the whole organisation.
- `GET /metrics`: the server's operational metrics, only when the server was started
  with an operational metrics token (`--operational-metrics-token`), and only with that
  token as a bearer token; 404 otherwise."""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import Field
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.identity_common import Body
from tocsin.api.paths import ID, METRICS_PREFIX, ORG
from tocsin.api.schemas import parse
from tocsin.figures import ceil_ms, figures
from tocsin.history import DAY, History
from tocsin.metrics import exposition, operational, otlp
from tocsin.metrics.exposition import QUANTILES, CheckSample
from tocsin.models import Rollup
from tocsin.security import hash_token, new_token
from tocsin.store import StoreUnavailableError
from tocsin.store.base import Row, Store

log = logging.getLogger("tocsin.api.metrics")

KEY_PREFIX = "tmk_"
# `tmk_` and 32 URL-safe random characters (192 bits).
_KEY_LENGTH = len(KEY_PREFIX) + 32
# How long a key's lookup (and a refusal) is believed; a revocation in this process
# drops it at once.
KEY_CACHE_TTL = 30.0
KEY_CACHE_SIZE = 10_000
# `last_used_at` is written at most this often per key.
TOUCH_EVERY = 60.0
# How long a scrape's answer is served again; how long rollup figures are reused.
EXPORT_TTL = 5.0
FIGURES_TTL = float(os.environ.get("TOCSIN_METRICS_FIGURES_TTL_S", "60"))
# ... or 20 times as long as they took to compute (a big organisation's few seconds).
FIGURES_STRETCH = 20.0
MAX_CHECKS = 1_000_000
MAX_KEYS = 1_000
WINDOW_DAYS = {"24h": 1, "7d": 7, "30d": 30}
FORMAT = query.Text(
    "format", "prometheus (the text exposition format, default) or otlp", ("prometheus", "otlp")
)


def _version() -> str:
    try:
        return importlib.metadata.version("tocsin")
    except importlib.metadata.PackageNotFoundError:
        return ""


# -- the keys ---------------------------------------------------------------------------


class MetricsKeyCreate(Body):
    name: str = Field(min_length=1, max_length=100)


class MetricsKeyJson(TypedDict):
    id: int
    organization_id: int
    name: str
    prefix: str
    created_by: int | None
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class NewMetricsKeyJson(MetricsKeyJson):
    """The key itself, shown only in the answer that created it."""

    key: str


def key_json(row: Row) -> MetricsKeyJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        "last_used_at": iso(row["last_used_at"]),
        "revoked_at": iso(row["revoked_at"]),
    }


class KeyBook:
    """key hash -> (key id, organisation) for scrapes, cached briefly; refusals too, so
    guessing costs no database query per attempt beyond the first."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # hash -> (expires at, (key id, org id) or None)
        self._cache: dict[str, tuple[float, tuple[int, int] | None]] = {}
        self._touched: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def org_of(self, key: str) -> int | None:
        if not key.startswith(KEY_PREFIX) or len(key) != _KEY_LENGTH:
            return None
        key_hash = hash_token(key)
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            found = hit[1]
        else:
            row = await self._store.metrics_key_by_hash(key_hash)
            found = None
            if row is not None and row["revoked_at"] is None:
                found = (int(row["id"]), int(row["organization_id"]))
            if len(self._cache) >= KEY_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key_hash] = (now + KEY_CACHE_TTL, found)
        if found is None:
            return None
        self._touch(found[0])
        return found[1]

    def _touch(self, key_id: int) -> None:
        now = time.time()
        if now - self._touched.get(key_id, 0.0) < TOUCH_EVERY:
            return
        self._touched[key_id] = now
        task = asyncio.get_running_loop().create_task(self._store.touch_metrics_key(key_id, now))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a failed write of `last_used_at` is not worth a log line

    def revoked(self, key_id: int) -> None:
        for key_hash, (_, found) in list(self._cache.items()):
            if found is not None and found[0] == key_id:
                del self._cache[key_hash]


class MetricsKeysResource:
    body_models: ClassVar = {"post": MetricsKeyCreate}
    response_models: ClassVar = {"get": list[MetricsKeyJson], "post": NewMetricsKeyJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        rows = await self._store.select("metrics_keys", [org_id], limit=MAX_KEYS)
        resp.media = [key_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: MetricsKeyCreate = parse(MetricsKeyCreate, await read_json_object(req))
        key = new_token(KEY_PREFIX)[:_KEY_LENGTH]
        row = await self._store.insert(
            "metrics_keys",
            org_id,
            {
                "name": body.name,
                "key_hash": hash_token(key),
                "prefix": key[: len(KEY_PREFIX) + 4],
                "created_by": p.user_id,
            },
        )
        resp.status = falcon.HTTP_201
        resp.set_header("Cache-Control", "no-store")
        # The only time the key is shown: only its hash is stored.
        answer: NewMetricsKeyJson = {**key_json(row), "key": key}
        resp.media = answer


class MetricsKeyResource:
    response_models: ClassVar = {"delete": None}

    def __init__(self, store: Store, keys: KeyBook, exports: Exports) -> None:
        self._store = store
        self._keys = keys
        self._exports = exports

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, key_id: int
    ) -> None:
        require_role(principal(req), org_id, "ADMIN")
        row = await self._store.get("metrics_keys", [org_id], key_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Metrics key not found")
        if row["revoked_at"] is None:
            await self._store.update("metrics_keys", [org_id], key_id, {"revoked_at": time.time()})
        self._keys.revoked(key_id)
        resp.status = falcon.HTTP_204


# -- the export -------------------------------------------------------------------------


class _Figures:
    """Per check: uptime ratio by window and latency quantiles (seconds) over 24 h."""

    __slots__ = ("latency", "uptime")

    def __init__(self, uptime: dict[str, float | None], latency: dict[float, float | None]):
        self.uptime = uptime
        self.latency = latency


def _by_check(rollups: list[Rollup]) -> dict[int, list[Rollup]]:
    out: dict[int, list[Rollup]] = {}
    for r in rollups:
        out.setdefault(r.check_id, []).append(r)
    return out


async def org_figures(
    store: Store, org_id: int, rows: list[Row], now: float
) -> dict[int, _Figures]:
    """The rollup figures of every check in `rows`, with five queries for all of them:
    the tiers are pieced together as for `/api/checks/{id}/stats` (`History`)."""
    now_ms = round(now * 1000)
    ids = [int(r["id"]) for r in rows]
    frame = History(now_ms, 0)
    longest = max(WINDOW_DAYS.values())
    start = frame.start(longest)
    days = await store.list_rollups_of(
        [org_id], ids, "day", since_ms=ceil_ms(start, DAY), until_ms=frame.day_now
    )
    # Hours: the last day whole, and the part-days at the start of the longer windows.
    hour_ranges = {(frame.start(1), frame.hour_now)}
    for d in WINDOW_DAYS.values():
        s = frame.start(d)
        hour_ranges.add((s, min(ceil_ms(s, DAY), frame.hour_now)))
    hours: list[Rollup] = []
    for since, until in sorted(hour_ranges):
        hours += await store.list_rollups_of([org_id], ids, "hour", since_ms=since, until_ms=until)
    minutes = await store.list_rollups_of(
        [org_id], ids, "minute", since_ms=frame.hour_now, until_ms=now_ms
    )
    # PERF: tens of rollups per check; in a worker thread, so a big organisation does
    # not stall the loop.
    return await asyncio.to_thread(_compute, rows, now_ms, days, hours, minutes)


def _compute(
    rows: list[Row], now_ms: int, days: list[Rollup], hours: list[Rollup], minutes: list[Rollup]
) -> dict[int, _Figures]:
    days_of, hours_of, minutes_of = _by_check(days), _by_check(hours), _by_check(minutes)
    out: dict[int, _Figures] = {}
    for r in rows:
        cid = int(r["id"])
        h = History(now_ms, round(r["created_at"] * 1000))
        h.days = days_of.get(cid, [])
        h.hours = sorted(
            {x.start_ms: x for x in hours_of.get(cid, [])}.values(), key=lambda x: x.start_ms
        )
        h.minutes = minutes_of.get(cid, [])
        uptime: dict[str, float | None] = {}
        latency: dict[float, float | None] = {}
        for name, n in WINDOW_DAYS.items():
            f = figures(h.window(n))
            pct = f["uptime_pct"]
            uptime[name] = None if pct is None else round(float(pct) / 100.0, 6)
            if name == exposition.LATENCY_WINDOW:
                for q, key in zip(QUANTILES, ("p50_ms", "p95_ms", "p99_ms"), strict=True):
                    v = f[key]
                    latency[q] = None if v is None else float(v) / 1000.0
        out[cid] = _Figures(uptime, latency)
    return out


def _status(row: Row) -> str:
    if not row["is_active"]:
        return "PAUSED"
    status = row["status"]
    return status if status in exposition.STATUSES else "UNKNOWN"


def sample(row: Row, project: str, f: _Figures | None) -> CheckSample:
    last = row.get("last_result") or {}
    latency = last.get("latency_ms")
    return CheckSample(
        check_id=int(row["id"]),
        name=row["name"],
        type=row["type"],
        project=project,
        tags=tuple(row["tags"] or ()),
        status=_status(row),
        last_check_at=row.get("last_checked_at"),
        response_time_s=None if latency is None else float(latency) / 1000.0,
        latency_s=f.latency if f else {},
        uptime=f.uptime if f else {},
    )


class _Entry:
    __slots__ = ("expires", "value")

    def __init__(self, expires: float, value: Any) -> None:
        self.expires = expires
        self.value = value


class TtlCache:
    """A small cache whose entries expire after `ttl` seconds (or `stretch` times as
    long as they took to build, when that is longer: an expensive entry is rebuilt
    less often), with one build at a time per key (concurrent misses wait for it)."""

    def __init__(self, ttl: float, *, stretch: float = 0.0, size: int = 1_000) -> None:
        self.ttl = ttl
        self.stretch = stretch
        self.size = size
        self._entries: dict[Any, _Entry] = {}
        self._locks: dict[Any, asyncio.Lock] = {}

    def _fresh(self, key: Any) -> _Entry | None:
        entry = self._entries.get(key)
        return entry if entry is not None and time.monotonic() < entry.expires else None

    async def get(self, key: Any, build: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._fresh(key)
        if entry is not None:
            return entry.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._fresh(key)
            if entry is not None:
                return entry.value
            began = time.monotonic()
            value = await build()
            done = time.monotonic()
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            ttl = max(self.ttl, self.stretch * (done - began))
            self._entries[key] = _Entry(done + ttl, value)
        if not lock.locked():
            self._locks.pop(key, None)
        return value

    def clear(self) -> None:
        self._entries.clear()


class Exports:
    """Builds (and caches) an organisation's exports."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.bodies = TtlCache(EXPORT_TTL)
        self.figures = TtlCache(FIGURES_TTL, stretch=FIGURES_STRETCH)
        self._version = _version()

    async def samples(self, org_id: int) -> list[CheckSample]:
        store = self._store
        rows = await store.list_checks([org_id], limit=MAX_CHECKS, offset=0)
        projects = {
            int(p["id"]): p["name"]
            for p in await store.select("projects", [org_id], limit=MAX_CHECKS)
        }

        async def build_figures() -> dict[int, _Figures]:
            return await org_figures(store, org_id, rows, time.time())

        figs: dict[int, _Figures] = await self.figures.get(org_id, build_figures)
        return [
            sample(r, projects.get(int(r["project_id"] or 0), ""), figs.get(int(r["id"])))
            for r in rows
        ]

    async def body(self, org_id: int, fmt: str) -> bytes:
        async def build() -> bytes:
            samples = await self.samples(org_id)
            if fmt == "otlp":
                return otlp.render(samples, now=time.time(), org_id=org_id, version=self._version)
            # PERF: ~0.1 ms per check; in a thread, so a big organisation's first scrape
            # does not stall the loop.
            return await asyncio.to_thread(exposition.render, samples)

        body: bytes = await self.bodies.get((org_id, fmt), build)
        return body


class ScrapeResource:
    response_media_type = exposition.CONTENT_TYPE
    query_params: ClassVar = {"get": (FORMAT,)}

    def __init__(self, keys: KeyBook, exports: Exports) -> None:
        self._keys = keys
        self._exports = exports

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key: str) -> None:
        fmt = FORMAT.get(req) or "prometheus"
        org_id = await self._keys.org_of(key)
        if org_id is None:
            # Unknown and revoked keys alike.
            raise falcon.HTTPNotFound(description="not found")
        body = await self._exports.body(org_id, fmt)
        resp.content_type = otlp.CONTENT_TYPE if fmt == "otlp" else exposition.CONTENT_TYPE
        resp.set_header("Cache-Control", "no-store")
        resp.data = body


# -- the server's operational metrics ----------------------------------------------------


class OperationalResource:
    auth_public = True  # its own bearer token, below
    response_media_type = operational.CONTENT_TYPE

    def __init__(self, ctx: AppContext, token: str | None) -> None:
        self._ctx = ctx
        self._token = token.encode() if token else None
        self._lateness = operational.Lateness()
        if token:
            ctx.engine.add_listener(self._lateness.on_batch)

    def _authorised(self, req: falcon.asgi.Request) -> bool:
        assert self._token is not None
        scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if self._token is None:
            raise falcon.HTTPNotFound()
        if not self._authorised(req):
            raise falcon.HTTPUnauthorized(
                description="Not authenticated", challenges=['Bearer realm="metrics"']
            )
        values = await self.values()
        resp.content_type = operational.CONTENT_TYPE
        resp.set_header("Cache-Control", "no-store")
        resp.data = operational.render(values)

    async def values(self) -> list[operational.Value]:
        ctx = self._ctx
        V = operational.Value
        out: list[operational.Value] = []
        e = ctx.engine.stats()
        out += [
            V("tocsin_engine_checks", e["checks"]),
            V("tocsin_engine_probes_dispatched", e["dispatched"]),
            V("tocsin_engine_probes_skipped", e["skipped"]),
            V("tocsin_engine_probes_in_flight", e["in_flight"]),
            V("tocsin_engine_backlog", e["backlog"]),
            V("tocsin_engine_results", self._lateness.results),
        ]
        late = self._lateness.stats()
        if late is not None:
            out += [
                V("tocsin_engine_lateness_seconds", late[0], {"stat": "max"}),
                V("tocsin_engine_lateness_seconds", late[1], {"stat": "mean"}),
            ]
        w = ctx.writer.stats()
        out += [
            V("tocsin_writer_buffered", float(w["buffered_results"] or 0), {"kind": "results"}),
            V("tocsin_writer_buffered", float(w["buffered_changes"] or 0), {"kind": "changes"}),
            V("tocsin_writer_buffered", float(w["buffered_rollups"] or 0), {"kind": "rollups"}),
            V("tocsin_writer_results_written", ctx.writer.written),
            V("tocsin_writer_results_dropped", ctx.writer.dropped),
            V("tocsin_writer_outage_seconds", float(w["outage_seconds"] or 0.0)),
            V("tocsin_outbox_sent", ctx.outbox.sent),
            V("tocsin_live_subscribers", ctx.events.subscribers),
        ]
        try:
            out.append(V("tocsin_outbox_pending", await ctx.store.pending_deliveries()))
        except StoreUnavailableError:
            log.warning("operational metrics: the database is unavailable")
        for name, cache in (("pages", ctx.public_cache), ("badges", ctx.badge_cache)):
            which = {"cache": name}
            out += [
                V("tocsin_public_cache_hits", cache.hits, which),
                V("tocsin_public_cache_misses", cache.misses, which),
                V("tocsin_public_cache_builds", cache.builds, which),
                V("tocsin_public_cache_entries", len(cache), which),
            ]
        out += [
            # Last: they count this scrape's own read of the outbox.
            V("tocsin_store_reads", ctx.store.reads),
            V("tocsin_store_writes", ctx.store.writes),
        ]
        return out


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    keys = KeyBook(ctx.store)
    exports = Exports(ctx.store)
    app.add_route(f"{ORG}/metrics-keys", MetricsKeysResource(ctx.store))
    app.add_route(
        f"{ORG}/metrics-keys/{{key_id:{ID}}}", MetricsKeyResource(ctx.store, keys, exports)
    )
    app.add_route(METRICS_PREFIX + "{key}", ScrapeResource(keys, exports))
    token = ctx.operational_metrics_token
    app.add_route("/metrics", OperationalResource(ctx, token))
