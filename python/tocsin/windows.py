"""The maintenance windows the engine has: every active window of every organisation,
loaded at start and changed with each write, so a change pushes the whole set without
reading the store. A stored window that can no longer be loaded is kept out with its
reason (`refused`), and the others load."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tocsin import schedules
from tocsin.engine import Engine
from tocsin.maintenance import MIN_PERIOD_S, MaintenanceWindow
from tocsin.store.base import Row, Store

log = logging.getLogger("tocsin.maintenance")

KIND = "maintenance_windows"
RULE_SECONDS = 5.0


async def check_rule(row: Row) -> None:
    """A window's recurrence as `tocsin.schedules.recurrence` checks it (at most
    `RULE_SECONDS` of evaluation, in a thread: a rule that matches rarely takes a
    moment to search); `InvalidCheckError` naming `cron`, `rrule` or `timezone`."""
    if not (row.get("rrule") or row.get("cron")):
        return
    try:
        await asyncio.wait_for(
            asyncio.to_thread(
                schedules.recurrence,
                rrule=row.get("rrule") or None,
                cron_expr=row.get("cron") or None,
                first=float(row["starts_at"]),
                tz=row.get("timezone") or "UTC",
                min_period_s=MIN_PERIOD_S,
            ),
            RULE_SECONDS,
        )
    except TimeoutError:
        raise schedules.invalid(
            "cron" if row.get("cron") else "rrule", "takes too long to evaluate"
        ) from None


def engine_window(row: Row) -> MaintenanceWindow:
    return MaintenanceWindow(
        frozenset(row["check_ids"]),
        start=float(row["starts_at"]),
        duration=float(row["duration_s"]),
        rrule=row["rrule"] or None,
        cron=row["cron"] or None,
        tz=row["timezone"],
    )


class WindowBook:
    """The active windows of every organisation, as the engine has them (id -> row,
    window), so every change pushes the whole set without reading the store."""

    def __init__(self, store: Store, engine: Engine) -> None:
        self._store = store
        self._engine = engine
        self._windows: dict[int, tuple[Row, MaintenanceWindow]] = {}
        # window id -> why it could not be loaded at start (until it is changed)
        self.refused: dict[int, str] = {}
        # Told the checks of every window put or dropped (e.g. the public cache).
        self._listeners: list[Callable[[frozenset[int]], None]] = []

    def add_listener(self, fn: Callable[[frozenset[int]], None]) -> None:
        """Call `fn(check_ids)` with the checks a window covered or covers, whenever
        one is put or dropped."""
        self._listeners.append(fn)

    def _changed(self, *rows: Row | None) -> None:
        ids = frozenset(int(c) for r in rows if r is not None for c in r["check_ids"])
        for fn in self._listeners:
            fn(ids)

    def put(self, row: Row) -> None:
        self.refused.pop(row["id"], None)
        old = self._windows.pop(row["id"], None)
        if row["is_active"]:
            self._windows[row["id"]] = (row, engine_window(row))
        self._push()
        self._changed(row, old[0] if old else None)

    def drop(self, window_id: int) -> None:
        self.refused.pop(window_id, None)
        old = self._windows.pop(window_id, None)
        if old is not None:
            self._push()
            self._changed(old[0])

    def of_check(self, org_id: int, check_id: int) -> list[tuple[Row, MaintenanceWindow]]:
        return [
            (row, w)
            for row, w in self._windows.values()
            if row["organization_id"] == org_id and check_id in w.check_ids
        ]

    def snapshot(self) -> list[tuple[Row, MaintenanceWindow]]:
        """Every active window (row, window), e.g. for announcing occurrences."""
        return list(self._windows.values())

    def _push(self) -> None:
        self._engine.set_windows(w for _, w in self._windows.values())

    async def load(self) -> None:
        store = self._store
        # NOTE: there is no unscoped "every window" query; windows only matter for
        # organisations that have checks, so those are the ones read.
        org_ids = sorted({int(r["organization_id"]) for r in await store.all_checks()})
        offset, page = 0, 500
        while org_ids:
            rows = await store.select(
                KIND, org_ids, where={"is_active": True}, limit=page, offset=offset
            )
            for row in rows:
                try:
                    # The API's own check of the rule (it matches, at most hourly), so a
                    # row stored by other means cannot stall the engine's evaluation.
                    await check_rule(row)
                    self._windows[row["id"]] = (row, engine_window(row))
                except Exception as exc:  # one bad row must not stop the others
                    self.refused[row["id"]] = text = schedules.refusal_text(exc)
                    log.error("maintenance window %s not loaded: %s", row["id"], text)
            if len(rows) < page:
                break
            offset += page
        self._push()
        log.info("loaded %d maintenance windows", len(self._windows))
