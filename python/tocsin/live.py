"""Engine output as live events: every result becomes `log.append` and every verdict
transition `status.change`, published to the check's organisation on the event hub."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.incidents import CheckDirectory
from tocsin.models import Result, StatusChange
from tocsin.store.base import Store, StoreUnavailableError
from tocsin.timestamps import iso

log = logging.getLogger("tocsin.live")

MAX_BACKOFF = 5.0
# Engine batches waiting for the bridge; past this (the store unreachable while a new
# check's owner is looked up) the oldest go: live events are best effort.
MAX_PENDING_BATCHES = 10_000


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
            # Taken out before the lookup: batches queued meanwhile (or dropped as the
            # oldest) are not confused with these.
            batches = list(self._pending)
            self._pending.clear()
            ids = {r.check_id for rs, _ in batches for r in rs}
            ids.update(c.check_id for _, cs in batches for c in cs)
            try:
                await self._directory.learn(ids)
            except StoreUnavailableError as exc:
                log.warning("live events wait for the database: %s", exc)
                self._pending.extendleft(reversed(batches))
                while len(self._pending) > MAX_PENDING_BATCHES:
                    self._pending.popleft()
                    self.dropped += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception:
                log.exception("live events: owner lookup failed; publishing what is known")
            backoff = 0.1
            for results, changes in batches:
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
