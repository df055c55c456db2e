"""Lifecycle watches: notices when a tracked product nears its end of life or a new
release appears, from a feed in the endoflife.date JSON shape (docs/lifecycle.md)."""

from __future__ import annotations

from tocsin.notify.router import Router
from tocsin.store.base import Store


class LifecycleWatcher:
    def __init__(self, store: Store, router: Router) -> None:
        self._store = store
        self._router = router

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
