"""Batches engine output into the store: results, status changes and closed rollup buckets
collected from the engine's listeners, written in order, one transaction per batch, by a
single background task. While the database is unreachable everything waits in memory;
past the bound the oldest raw results are dropped (counted and logged), never
transitions or rollups."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence

from tocsin.models import Result, Rollup, StatusChange
from tocsin.store.base import Store, StoreUnavailableError

log = logging.getLogger("tocsin.ingest")

MAX_BACKOFF = 5.0


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
        self._rollups: collections.deque[Rollup] = collections.deque()
        self._max_buffered = max_buffered
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._outage_since: float | None = None
        self._last_drop_log = 0.0
        self._inflight = 0

    def on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        """Engine listener: queue a drained batch for writing."""
        self._results.extend(results)
        self._changes.extend(changes)
        overflow = len(self._results) - self._max_buffered
        if overflow > 0:
            # The oldest results not in the batch being written right now go first.
            for _ in range(overflow):
                del self._results[self._inflight]
            self.dropped += overflow
            now = time.monotonic()
            if now - self._last_drop_log >= 10.0:
                self._last_drop_log = now
                log.error(
                    "result buffer full (%d): dropped the oldest raw results, %d so far"
                    " (transitions and rollups are kept)",
                    self._max_buffered,
                    self.dropped,
                )
        if len(self._results) >= self._batch_size:
            self._wake.set()

    def on_rollups(self, rollups: Sequence[Rollup]) -> None:
        """Engine rollup listener: closed buckets are queued, never dropped."""
        self._rollups.extend(rollups)

    @property
    def pending(self) -> int:
        return len(self._results) + len(self._changes) + len(self._rollups)

    def stats(self) -> dict[str, int | float | None]:
        return {
            "buffered_results": len(self._results),
            "buffered_changes": len(self._changes),
            "buffered_rollups": len(self._rollups),
            "written": self.written,
            "dropped": self.dropped,
            "outage_seconds": (
                round(time.monotonic() - self._outage_since, 1) if self._outage_since else None
            ),
        }

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-writer")

    async def _run(self) -> None:
        backoff = 0.5
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except StoreUnavailableError as exc:
                self.failures += 1
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("database unavailable, buffering results: %s", exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception:
                self.failures += 1
                log.exception("writing results failed; will retry")
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.5
            if self._outage_since is not None:
                log.warning(
                    "database back after %.1f s; buffered results written",
                    time.monotonic() - self._outage_since,
                )
                self._outage_since = None

    async def _sleep(self, seconds: float) -> None:
        # A close() during the back-off wakes the loop at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def flush(self) -> None:
        """Write everything queued so far, in order, a batch per transaction. A failed
        batch stays queued."""
        while self._results or self._changes or self._rollups:
            n = min(len(self._results), self._batch_size)
            results = [self._results[i] for i in range(n)]
            m = min(len(self._changes), self._batch_size)
            changes = [self._changes[i] for i in range(m)]
            k = min(len(self._rollups), self._batch_size)
            rollups = [self._rollups[i] for i in range(k)]
            self._inflight = n
            try:
                await self._store.write_batch(results, changes, rollups)
            finally:
                self._inflight = 0
            for _ in range(n):
                self._results.popleft()
            for _ in range(m):
                self._changes.popleft()
            for _ in range(k):
                self._rollups.popleft()
            self.written += n

    async def close(self, *, give_up_after: float | None = None) -> None:
        """Stop the background task and write what is left (retrying while the database
        is unreachable, up to `give_up_after` seconds; None waits as long as it takes)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        while True:
            try:
                await self.flush()
                return
            except StoreUnavailableError:
                if deadline is not None and time.monotonic() >= deadline:
                    log.error("database unavailable at shutdown: %d rows not written", self.pending)
                    raise
                await asyncio.sleep(1.0)
