"""`ReportBuilder`: the worker that builds accepted reports in the background, one at a
time, in the order they were accepted. A report row goes `pending` → `running` →
`done` (the document stored with it) or `failed` (with a short reason). On start the
builder queues every `pending` or `running` row (a report a stopped server had accepted
or was building), so nothing accepted is lost; a report being built at stop is built
again from the start at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from tocsin.reports.compute import Period, compute
from tocsin.reports.render import CONTENT_TYPES, RENDERERS
from tocsin.store.base import Row, Store, StoreUnavailableError

# A report not built because the database was unavailable is tried again this much later.
RETRY_AFTER_S = 10.0

log = logging.getLogger("tocsin.reports")

# Log progress of a report with more checks than this.
PROGRESS_EVERY = 1000


class ReportBuilder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.built = 0
        self.failed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-reports")

    async def close(self) -> None:
        """Stop, leaving what is not built as it is in the store (picked up at the next
        start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, report_id: int, org_id: int) -> None:
        """Build a stored `pending` report."""
        self._queue.put_nowait((report_id, org_id))

    async def _run(self) -> None:
        await self._resume()
        while True:
            report_id, org_id = await self._queue.get()
            try:
                await self.build(report_id, org_id)
            except asyncio.CancelledError:
                raise
            except StoreUnavailableError as exc:
                # Left as it is (pending or running) and tried again once the database
                # may be back (and at the next start, if this process stops first).
                log.warning(
                    "report %d not built yet, database unavailable (again in %.0f s): %s",
                    report_id,
                    RETRY_AFTER_S,
                    exc,
                )
                asyncio.get_running_loop().call_later(RETRY_AFTER_S, self.submit, report_id, org_id)
            except Exception:
                log.exception("building report %d failed", report_id)

    async def _resume(self) -> None:
        while True:
            try:
                rows = await self._store.unfinished_reports()
                break
            except StoreUnavailableError as exc:
                log.warning("unfinished reports not read yet: %s", exc)
                await asyncio.sleep(5)
        if rows:
            log.info("resuming %d unfinished report(s)", len(rows))
        for row in rows:
            self.submit(row["id"], row["organization_id"])

    async def build(self, report_id: int, org_id: int) -> None:
        """Build one report now (a row already done, failed or deleted is left alone)."""
        org = [org_id]
        row = await self._store.report_meta(org, report_id)
        if row is None or row["status"] not in ("pending", "running"):
            return
        started = time.monotonic()
        await self._store.update(
            "reports", org, report_id, {"status": "running", "started_at": time.time()}
        )
        try:
            document = await self._document(row)
        except (asyncio.CancelledError, StoreUnavailableError):
            raise
        except Exception as exc:
            log.exception("report %d failed", report_id)
            self.failed += 1
            await self._store.update(
                "reports",
                org,
                report_id,
                {
                    "status": "failed",
                    "error": f"the report could not be built ({type(exc).__name__})",
                    "finished_at": time.time(),
                },
            )
            return
        fmt = row["format"]
        await self._store.update(
            "reports",
            org,
            report_id,
            {
                "status": "done",
                "document": document,
                "content_type": CONTENT_TYPES[fmt],
                "size": len(document),
                "error": None,
                "finished_at": time.time(),
            },
        )
        self.built += 1
        log.info(
            "report %d built: %s, %d bytes in %.1f s",
            report_id,
            fmt,
            len(document),
            time.monotonic() - started,
        )

    async def _document(self, row: Row) -> bytes:
        params: dict[str, Any] = row["params"]
        period = Period(float(params["from"]), float(params["to"]))
        check_ids: list[int] = params["check_ids"]
        report_id = row["id"]

        def progress(done: int, total: int) -> None:
            if total > PROGRESS_EVERY and (done == total or done % PROGRESS_EVERY < 200):
                log.info("report %d: %d of %d checks", report_id, done, total)

        content = await compute(
            self._store, row["organization_id"], check_ids, period, progress=progress
        )
        report = {
            "report": {
                "id": report_id,
                "name": row["name"],
                "organization_id": row["organization_id"],
                "format": row["format"],
            },
            **content,
        }
        render = RENDERERS[row["format"]]
        if row["format"] == "pdf":
            return await asyncio.to_thread(render, report)
        if len(check_ids) > 200:
            return await asyncio.to_thread(render, report)
        return render(report)
