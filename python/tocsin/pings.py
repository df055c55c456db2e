"""Heartbeat pings stored by group commit: every ping waits for its own transaction to
commit (an answered ping is never lost), but the pings that arrive while one
transaction is being written share the next one, so the database is not the ceiling
of the ping rate."""

from __future__ import annotations

import asyncio
import contextlib

from tocsin.store.base import Ping, Store


class PingRecorder:
    """Group commit: every ping waits for its own transaction to commit (an answered
    ping is never lost), but the pings that arrive while one transaction is being
    written share the next one, so the database is not the ceiling of the ping rate."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: list[tuple[Ping, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def record(self, ping: Ping) -> bool:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-pings")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((ping, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Stop the writer task (pings still queued get the cancellation as their
        answer, so none is reported stored that was not)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, future in self._queue:
            if not future.done():
                future.cancel()
        self._queue = []

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                kept = await self._store.record_pings([p for p, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                # Closed while writing: whether it committed is unknown, so no caller
                # is told it did (they see the cancellation, not an OK).
                for _, future in batch:
                    if not future.done():
                        future.cancel()
                raise
            for (_, future), ok in zip(batch, kept, strict=True):
                if not future.done():
                    future.set_result(ok)
