"""Notifications: claiming and settling the outbox's deliveries, and which channels a
check's notifications go to."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tocsin.store.base import Row
from tocsin.store.sql.base import SqlBase
from tocsin.store.tables import TABLES


class NotificationSql(SqlBase):
    async def claim_deliveries(self, now: float, limit: int, lease: float) -> list[Row]:
        # The outer conditions repeat the inner ones: under PostgreSQL a row claimed by
        # another server meanwhile is re-checked against them and skipped.
        # SQLite would rather sort every unsent row than walk the index kept in this
        # order (notification_deliveries_unsent); PostgreSQL's planner finds it alone.
        hint = " INDEXED BY notification_deliveries_unsent" if self.backend == "sqlite" else ""
        async with self._write() as c:
            rows = await c.fetch(
                "UPDATE notification_deliveries SET status = 'sending',"
                " attempts = attempts + 1, next_attempt_at = ?, updated_at = ?"
                f" WHERE id IN (SELECT d.id FROM notification_deliveries d{hint}"
                " WHERE d.status IN ('pending', 'sending') AND d.next_attempt_at <= ?"
                # In order per incident and channel: not while an earlier one is unsent.
                " AND NOT EXISTS (SELECT 1 FROM notification_deliveries e"
                " WHERE e.incident_id = d.incident_id AND e.channel_id = d.channel_id"
                " AND e.id < d.id AND e.status IN ('pending', 'sending'))"
                " ORDER BY d.next_attempt_at, d.id LIMIT ?)"
                " AND status IN ('pending', 'sending') AND next_attempt_at <= ? RETURNING *",
                now + lease,
                now,
                now,
                limit,
                now,
            )
        table = TABLES["notification_deliveries"]
        return sorted((self._row(table, r) for r in rows), key=lambda r: int(r["id"]))

    async def settle_deliveries(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        allowed = ("status", "next_attempt_at", "last_error", "response_code", "delivered_at")
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        now = time.time()
        for delivery_id, fields in updates:
            unknown = set(fields) - set(allowed)
            if unknown:
                raise ValueError(f"cannot settle {sorted(unknown)}")
            cols = tuple(k for k in allowed if k in fields)
            groups.setdefault(cols, []).append((*(fields[k] for k in cols), now, delivery_id))
        # PERF: one statement per shape of answer, not one per row.
        async with self._write() as c:
            for cols, rows in groups.items():
                sets = "".join(f"{k} = ?, " for k in cols)
                await c.executemany(
                    f"UPDATE notification_deliveries SET {sets}updated_at = ?"
                    " WHERE id = ? AND status = 'sending'",
                    rows,
                )

    async def channel_checks(self, org_ids: Collection[int], channel_id: int) -> list[int]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT check_id FROM check_channels WHERE channel_id = ?"
                f" AND {self._in('organization_id')} ORDER BY check_id",
                channel_id,
                self._list(org_ids),
            )
        return [int(r["check_id"]) for r in rows]

    async def channel_routes(
        self, org_ids: Collection[int], check_ids: Collection[int]
    ) -> tuple[list[tuple[int, int]], list[Row]]:
        if not org_ids:
            return [], []
        async with self._read() as c:
            links = await c.fetch(
                "SELECT check_id, channel_id FROM check_channels"
                f" WHERE {self._in('check_id')} AND {self._in('organization_id')}"
                " ORDER BY check_id, channel_id",
                self._list(sorted(set(check_ids))),
                self._list(sorted(set(org_ids))),
            )
            wanted = sorted({int(r["channel_id"]) for r in links})
            rows = await c.fetch(
                f"SELECT * FROM notification_channels WHERE {self._in('organization_id')}"
                f" AND (is_default = ? OR {self._in('id')}) ORDER BY id",
                self._list(sorted(set(org_ids))),
                True,
                self._list(wanted),
            )
        table = TABLES["notification_channels"]
        pairs = [(int(r["check_id"]), int(r["channel_id"])) for r in links]
        return pairs, [self._row(table, r) for r in rows]
