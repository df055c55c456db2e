"""Batches engine output into the store: results and status changes collected from the
engine's listener, written one transaction per batch by a single background task."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence

from tocsin.models import Result, StatusChange
from tocsin.store.base import Store

log = logging.getLogger("tocsin.ingest")


class ResultWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 0.2,
        batch_size: int = 5_000,
        max_buffered: int = 1_000_000,
    ) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._results: collections.deque[Result] = collections.deque()
        self._changes: collections.deque[StatusChange] = collections.deque()
        self._max_buffered = max_buffered
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0

    def on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        """Engine listener: queue a drained batch for writing."""
        self._results.extend(results)
        self._changes.extend(changes)
        overflow = len(self._results) - self._max_buffered
        if overflow > 0:
            # Oldest raw results go first; status changes are never dropped.
            for _ in range(overflow):
                self._results.popleft()
            self.dropped += overflow
            log.warning("result buffer full: dropped %d oldest results", overflow)
        if len(self._results) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._results) + len(self._changes)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing results failed; will retry")
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Write everything queued so far, in order, a batch per transaction. A failed
        batch stays queued."""
        while self._results or self._changes:
            n = min(len(self._results), self._batch_size)
            results = [self._results[i] for i in range(n)]
            changes = list(self._changes)
            await self._store.write_batch(results, changes)
            for _ in range(n):
                self._results.popleft()
            for _ in range(len(changes)):
                self._changes.popleft()
            self.written += n

    async def close(self) -> None:
        """Stop the background task and write what is left."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
