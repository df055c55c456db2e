"""What drops the public cache's entries: a check's status change (an engine listener:
the checks of the batch's transitions, not of every result), an incident opened,
acknowledged or resolved and a check changed (live events, by their check id), and a
maintenance window put or dropped (the window book). A window opening or closing on its
schedule is seen when the entries expire (`PublicCache.max_age`). Page edits drop the
page's own entries (`invalidate_page`, called by the API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.models import Result, StatusChange
from tocsin.statuspages.cache import PublicCache
from tocsin.windows import WindowBook

INCIDENT_EVENTS = ("incident.new", "incident.resolve", "incident.ack")


def page_prefix(slug: str) -> str:
    """Every cache key of one page starts with this (`page:{slug}:html`, …)."""
    return f"page:{slug}:"


def invalidate_page(cache: PublicCache, *slugs: str) -> None:
    for slug in slugs:
        cache.invalidate_prefix(page_prefix(slug))


class Invalidation:
    """Listens to the engine, the event hub and the window book for one cache."""

    def __init__(self, cache: PublicCache) -> None:
        self.cache = cache

    def attach(self, engine: Engine, events: EventHub, windows: WindowBook) -> None:
        engine.add_listener(self.on_batch)
        events.add_observer(self.on_event, (*INCIDENT_EVENTS, "check.update"))
        windows.add_listener(self.on_windows)

    def on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        if changes:
            self.cache.invalidate_checks({c.check_id for c in changes})

    def on_event(self, org_id: int, type_: str, data: dict[str, Any]) -> None:
        cid = data.get("id") if type_ == "check.update" else data.get("check_id")
        if isinstance(cid, int):
            self.cache.invalidate_checks((cid,))

    def on_windows(self, check_ids: frozenset[int]) -> None:
        if check_ids:
            self.cache.invalidate_checks(check_ids)
