"""Live events for the caller's organisations (served as Server-Sent Events): a bounded
history for `Last-Event-ID` resume and one bounded queue per subscriber, so a slow
client loses its own events (and is dropped), never slows the engine."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from collections.abc import Callable, Collection
from typing import Any

EVENT_TYPES = (
    "status.change",
    "log.append",
    "incident.new",
    "incident.resolve",
    "incident.ack",
    "check.update",
    "agent.status",
    "slo.alert",
    "playbook.run",
    "war_room.opened",
    "war_room.updated",
    "war_room.closed",
)


class Event:
    """One event. Its JSON is encoded on first delivery, once for every subscriber:
    publishing (one `log.append` per result) stays cheap while nobody listens."""

    __slots__ = ("_data", "_payload", "id", "org_id", "type")

    def __init__(self, id: int, org_id: int, type: str, payload: dict[str, Any]) -> None:
        self.id = id
        self.org_id = org_id
        self.type = type
        self._payload: dict[str, Any] | None = payload
        self._data: str | None = None

    @property
    def data(self) -> str:
        if self._data is None:
            self._data = json.dumps(self._payload, default=str)
            self._payload = None
        return self._data


class Subscription:
    def __init__(self, hub: EventHub, org_ids: Collection[int], maxsize: int) -> None:
        self.org_ids = frozenset(org_ids)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.overflowed = False
        self._hub = hub

    def offer(self, event: Event) -> None:
        if self.overflowed or event.org_id not in self.org_ids:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The client cannot keep up: it is dropped (it may reconnect and resume).
            self.overflowed = True
            self._hub.unsubscribe(self)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    def __init__(self, *, history: int = 10_000, queue_size: int = 1_000) -> None:
        self._ids = itertools.count(1)
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        self._subs: set[Subscription] = set()
        self._queue_size = queue_size
        # In-process observers by event type (e.g. the public cache hears of incidents).
        self._observers: dict[str, list[Callable[[int, str, dict[str, Any]], None]]] = {}

    def add_observer(
        self, fn: Callable[[int, str, dict[str, Any]], None], types: Collection[str]
    ) -> None:
        """Call `fn(org_id, type, data)` on the loop for every event of these types
        published from now on (before subscribers get it). `fn` must not raise."""
        for t in types:
            if t not in EVENT_TYPES:
                raise ValueError(f"unknown event type {t!r}")
            self._observers.setdefault(t, []).append(fn)

    def publish(self, org_id: int, type: str, data: dict[str, Any]) -> Event:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        for observe in self._observers.get(type, ()):
            observe(org_id, type, data)
        event = Event(next(self._ids), org_id, type, data)
        self._history.append(event)
        for sub in list(self._subs):
            sub.offer(event)
        return event

    def subscribe(self, org_ids: Collection[int], *, after: int | None = None) -> Subscription:
        """A new subscription; with `after` (a Last-Event-ID), the retained events since
        then are queued first."""
        sub = Subscription(self, org_ids, self._queue_size)
        if after is not None:
            for event in self._history:
                if event.id > after:
                    sub.offer(event)
        if not sub.overflowed:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            # Wake the reader so it notices.
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    def close_all(self) -> int:
        """End every subscription (at shutdown: an open event stream would otherwise
        keep the HTTP server waiting for it). Returns how many there were."""
        subs = list(self._subs)
        for sub in subs:
            self.unsubscribe(sub)
        return len(subs)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
