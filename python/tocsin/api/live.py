"""`GET /api/events`: Server-Sent Events from the event hub, for the caller's
organisations, with `Last-Event-ID` resume and heartbeats (the hub is fed by
tocsin/live.py's bridge from the engine, and by the API areas)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import ClassVar

import falcon
import falcon.asgi
from falcon.asgi import SSEvent

from tocsin.api import query
from tocsin.api.common import principal
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, query_error
from tocsin.events import EVENT_TYPES, EventHub, Subscription

log = logging.getLogger("tocsin.live")

HEARTBEAT_S = 15
_MAX_ID = 2**63 - 1

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
        resp.set_header("Cache-Control", "no-cache")
        # Proxies (nginx) must pass events through as they come.
        resp.set_header("X-Accel-Buffering", "no")
        resp.sse = _stream(sub, heartbeat, types)


async def _stream(
    sub: Subscription, heartbeat: int, types: frozenset[str] | None
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
        sub.close()


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route("/api/events", EventsResource(ctx.events))
