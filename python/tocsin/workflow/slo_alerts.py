"""SLO alerts: a check's SLO crossing its budget warning, exhausting its budget or
burning too fast is told once per crossing (docs/slo-alerts.md)."""

from __future__ import annotations

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.notify.router import Router
from tocsin.store.base import Store


class SloAlerter:
    def __init__(self, store: Store, engine: Engine, events: EventHub, router: Router) -> None:
        self._store = store
        self._engine = engine
        self._events = events
        self._router = router

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
