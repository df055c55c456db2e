"""Playbooks: what runs by itself when an incident matches (docs/playbooks.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.notify.router import Router
from tocsin.store.base import Row, Store


class PlaybookRunner:
    """Runs the playbooks that match an incident (checks' incidents through
    `IncidentManager.on_change`, inbound ones through `InboundProcessor.on_change`)."""

    def __init__(self, store: Store, engine: Engine, events: EventHub, router: Router) -> None:
        self._store = store
        self._engine = engine
        self._events = events
        self._router = router

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def watch(self, row: Row) -> None:
        """IncidentManager listener: an incident was opened, acknowledged or resolved."""

    def watch_many(self, rows: Sequence[Row]) -> None:
        """InboundProcessor listener."""
        for row in rows:
            self.watch(row)

    def suppresses(self, org_id: int, incident: Mapping[str, Any]) -> bool:
        """Whether a matching playbook takes over the incident's default notifications."""
        return False
