"""`GET /api/events`: Server-Sent Events from the event hub, for the caller's
organisations, with `Last-Event-ID` resume and heartbeats; and the bridge that turns
engine output (results, verdict transitions) into `log.append` and `status.change`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

import falcon
import falcon.asgi
from falcon.asgi import SSEvent

from tocsin.api import query
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, query_error
from tocsin.engine import Engine
from tocsin.events import EVENT_TYPES, EventHub, Subscription
from tocsin.incidents import CheckDirectory
from tocsin.models import Result, StatusChange
from tocsin.store.base import Store, StoreUnavailableError

log = logging.getLogger("tocsin.live")

HEARTBEAT_S = 15
MAX_BACKOFF = 5.0
# Engine batches waiting for the bridge; past this (the store unreachable while a new
# check's owner is looked up) the oldest go: live events are best effort.
MAX_PENDING_BATCHES = 10_000
_MAX_ID = 2**63 - 1

# Open streams per hub, so `close_streams` can end them at shutdown.
_STREAMS: dict[int, tuple[EventHub, set[Subscription]]] = {}


def _streams(hub: EventHub) -> set[Subscription]:
    entry = _STREAMS.get(id(hub))
    if entry is None or entry[0] is not hub:
        entry = (hub, set())
        _STREAMS[id(hub)] = entry
    return entry[1]


def close_streams(ctx: AppContext) -> int:
    """End every open event stream (at shutdown: an open stream would otherwise keep
    the HTTP server waiting for it). Returns how many were open."""
    subs = _streams(ctx.events)
    n = len(subs)
    for sub in list(subs):
        sub.close()
    return n


class LiveBridge:
    """Publishes engine output to the event hub: `log.append` per result and
    `status.change` per transition, to the check's organisation. The engine listener
    only queues; one task publishes, in order."""

    def __init__(self, store: Store, engine: Engine, events: EventHub) -> None:
        self._engine = engine
        self._events = events
        self._directory = CheckDirectory(store, engine)
        self._pending: collections.deque[tuple[Sequence[Result], Sequence[StatusChange]]] = (
            collections.deque()
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._engine.add_listener(self.on_batch)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-live")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._engine.remove_listener(self.on_batch)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        if not results and not changes:
            return
        self._pending.append((results, changes))
        if len(self._pending) > MAX_PENDING_BATCHES:
            self._pending.popleft()
            self.dropped += 1
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batches = list(self._pending)
            ids = {r.check_id for rs, _ in batches for r in rs}
            ids.update(c.check_id for _, cs in batches for c in cs)
            try:
                await self._directory.learn(ids)
            except StoreUnavailableError as exc:
                log.warning("live events wait for the database: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception:
                log.exception("live events: owner lookup failed; publishing what is known")
            backoff = 0.1
            for _ in range(len(batches)):
                results, changes = self._pending.popleft()
                try:
                    self._publish(results, changes)
                except Exception:
                    log.exception("live events: publishing a batch failed")

    def _publish(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        owner = self._directory.owner
        publish = self._events.publish
        for r in results:
            org_id = owner(r.check_id)
            if org_id is not None:
                publish(
                    org_id,
                    "log.append",
                    {
                        "check_id": r.check_id,
                        "status": r.status.value,
                        "latency_ms": round(r.latency_ms, 3),
                        "started_at": iso(r.started_at),
                        "error_kind": r.error_kind,
                        "status_code": r.status_code,
                        "source": r.source,
                    },
                )
        for c in changes:
            org_id = owner(c.check_id)
            if org_id is not None:
                publish(
                    org_id,
                    "status.change",
                    {
                        "check_id": c.check_id,
                        "previous": c.previous.value,
                        "current": c.current.value,
                        "at": iso(c.at),
                        "reason": c.reason,
                        "in_maintenance": c.in_maintenance,
                    },
                )


# One bridge per running app.
_BRIDGES: dict[int, tuple[AppContext, LiveBridge]] = {}


LAST_EVENT_ID = query.OptInt(
    "last_event_id", 0, _MAX_ID, "resume after this event (as the Last-Event-ID header)"
)
TYPES = query.Text("types", "comma-separated event types (default: all)")
HEARTBEAT = query.Int("heartbeat", HEARTBEAT_S, 1, 60, "seconds between heartbeat comments")


def _last_event_id(req: falcon.asgi.Request) -> int | None:
    after = LAST_EVENT_ID.get(req)
    if after is not None:
        return after
    header = req.get_header("Last-Event-ID")
    if header is None or header.strip() == "":
        return None
    try:
        value = int(header.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_ID:
        raise ValidationFailed(
            [
                {
                    "loc": ["header", "Last-Event-ID"],
                    "msg": "must be an event id (a non-negative integer)",
                    "type": "int_parsing",
                }
            ]
        )
    return value


def _types(req: falcon.asgi.Request) -> frozenset[str] | None:
    raw = TYPES.get(req)
    if not raw:
        return None
    wanted = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise query_error("types", f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
    return wanted


class EventsResource:
    response_media_type = "text/event-stream"
    query_params: ClassVar = {"get": (TYPES, HEARTBEAT, query.ORGANIZATION_ID, LAST_EVENT_ID)}

    def __init__(self, events: EventHub) -> None:
        self._events = events

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        after = _last_event_id(req)
        heartbeat = HEARTBEAT.get(req)
        types = _types(req)
        org_ids = p.org_ids
        org_filter = query.ORGANIZATION_ID.get(req)
        if org_filter is not None:
            org_ids = [o for o in org_ids if o == org_filter]
        sub = self._events.subscribe(org_ids, after=after)
        streams = _streams(self._events)
        streams.add(sub)
        resp.set_header("Cache-Control", "no-cache")
        # Proxies (nginx) must pass events through as they come.
        resp.set_header("X-Accel-Buffering", "no")
        resp.sse = _stream(sub, streams, heartbeat, types)


async def _stream(
    sub: Subscription, streams: set[Subscription], heartbeat: int, types: frozenset[str] | None
) -> AsyncIterator[SSEvent]:
    try:
        # A first comment gets the headers and one chunk out at once, so a client knows
        # it is subscribed before any event happens.
        yield SSEvent(comment="connected")
        while True:
            if sub.overflowed and sub.queue.empty():
                return  # dropped as too slow: the client resumes with Last-Event-ID
            try:
                async with asyncio.timeout(heartbeat):
                    event = await sub.queue.get()
            except TimeoutError:
                # NOTE: also how a vanished client is noticed: Falcon checks for a
                # disconnect after each event sent.
                yield SSEvent(comment="ping")
                continue
            if event is None:
                return  # dropped or closed by the hub
            if types is not None and event.type not in types:
                continue
            yield SSEvent(event=event.type, event_id=str(event.id), text=event.data)
    finally:
        streams.discard(sub)
        sub.close()


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route("/api/events", EventsResource(ctx.events))


async def start(ctx: AppContext) -> None:
    """Start publishing engine output as live events."""
    bridge = LiveBridge(ctx.store, ctx.engine, ctx.events)
    _BRIDGES[id(ctx)] = (ctx, bridge)
    bridge.start()
