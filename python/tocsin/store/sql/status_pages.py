"""The store's part for status pages, their subscribers."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from tocsin.store.base import Row
from tocsin.store.sql.base import Conn, SqlBase
from tocsin.store.tables import TABLES


class StatusPageSql(SqlBase):
    # -- subscribers (notify/subscribers.py, api/status_subscriptions.py) ----------------

    async def status_page_by_slug(self, slug: str) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow("SELECT * FROM status_pages WHERE slug = ?", slug)
        return None if row is None else self._row(TABLES["status_pages"], row)

    async def subscribe(
        self,
        page: Mapping[str, Any],
        email: str,
        token_hash: str,
        now: float,
        *,
        resend_after: float,
        max_subscribers: int,
        delivery: Callable[[Row], Mapping[str, Any]],
    ) -> tuple[Row | None, str]:
        table = TABLES["status_page_subscribers"]
        page_id, org_id = int(page["id"]), int(page["organization_id"])
        async with self._write() as c:
            row = await c.fetchrow(
                "SELECT * FROM status_page_subscribers WHERE status_page_id = ? AND email = ?",
                page_id,
                email,
            )
            if row is None:
                n = await c.fetchval(
                    "SELECT COUNT(*) FROM status_page_subscribers WHERE status_page_id = ?",
                    page_id,
                )
                if int(n or 0) >= max_subscribers:
                    return None, "full"
                row = await c.fetchrow(
                    "INSERT INTO status_page_subscribers (organization_id, status_page_id,"
                    " email, confirmed, token_hash, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (status_page_id, email) DO NOTHING RETURNING *",
                    org_id,
                    page_id,
                    email,
                    False,
                    token_hash,
                    now,
                    now,
                )
                if row is None:
                    # The same address subscribed by a concurrent request (PostgreSQL):
                    # that request's mail is on its way.
                    return None, "recent"
                what = "new"
            else:
                row = self._row(table, row)
                if row["confirmed"]:
                    return row, "confirmed"
                if float(row["updated_at"]) > now - resend_after:
                    return row, "recent"
                row = await c.fetchrow(
                    "UPDATE status_page_subscribers SET token_hash = ?, updated_at = ?"
                    " WHERE id = ? RETURNING *",
                    token_hash,
                    now,
                    row["id"],
                )
                what = "renewed"
            assert row is not None
            row = self._row(table, row)
            await self._queue(c, org_id, [delivery(row)], now)
        return row, what

    async def subscribed_pages(self) -> list[Row]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT * FROM status_pages p WHERE p.is_public = ? AND EXISTS (SELECT 1"
                " FROM status_page_subscribers s WHERE s.status_page_id = p.id"
                " AND s.confirmed = ?) ORDER BY p.id",
                True,
                True,
            )
        return [self._row(TABLES["status_pages"], r) for r in rows]

    async def subscriber_by_id(self, subscriber_id: int) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                "SELECT * FROM status_page_subscribers WHERE id = ?", subscriber_id
            )
        return None if row is None else self._row(TABLES["status_page_subscribers"], row)

    async def subscriber(self, page_id: int, subscriber_id: int) -> Row | None:
        async with self._read() as c:
            row = await c.fetchrow(
                "SELECT * FROM status_page_subscribers WHERE id = ? AND status_page_id = ?",
                subscriber_id,
                page_id,
            )
        return None if row is None else self._row(TABLES["status_page_subscribers"], row)

    async def confirm_subscriber(
        self, page_id: int, subscriber_id: int, token_hash: str, issued_after: float, now: float
    ) -> Row | None:
        async with self._write() as c:
            row = await c.fetchrow(
                "UPDATE status_page_subscribers SET confirmed = ?,"
                " confirmed_at = COALESCE(confirmed_at, ?), updated_at = ?"
                " WHERE id = ? AND status_page_id = ? AND token_hash = ?"
                " AND (confirmed = ? OR updated_at >= ?) RETURNING *",
                True,
                now,
                now,
                subscriber_id,
                page_id,
                token_hash,
                True,
                issued_after,
            )
        return None if row is None else self._row(TABLES["status_page_subscribers"], row)

    async def delete_subscriber(self, page_id: int, subscriber_id: int) -> bool:
        async with self._write() as c:
            n = await c.execute(
                "DELETE FROM status_page_subscribers WHERE id = ? AND status_page_id = ?",
                subscriber_id,
                page_id,
            )
        return bool(n)

    async def confirmed_subscribers(
        self, page_ids: Collection[int], *, after_id: int = 0, limit: int = 1000
    ) -> list[Row]:
        if not page_ids:
            return []
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT * FROM status_page_subscribers"
                f" WHERE {self._in('status_page_id')} AND confirmed = ? AND id > ?"
                " ORDER BY id LIMIT ?",
                self._list(sorted(set(page_ids))),
                True,
                after_id,
                limit,
            )
        return [self._row(TABLES["status_page_subscribers"], r) for r in rows]

    async def purge_unconfirmed_subscribers(self, before: float) -> int:
        async with self._write() as c:
            return int(
                await c.execute(
                    "DELETE FROM status_page_subscribers WHERE confirmed = ? AND updated_at < ?",
                    False,
                    before,
                )
                or 0
            )

    async def queue_deliveries(self, org_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        async with self._write() as c:
            await self._queue(c, org_id, rows, time.time())

    async def _queue(
        self, c: Conn, org_id: int, rows: Sequence[Mapping[str, Any]], now: float
    ) -> None:
        """Outbox rows queued outside an incident change (mails to subscribers; notices
        to channels, with `channel_id`); a dedup_key already there is skipped."""
        table = TABLES["notification_deliveries"]
        values = []
        for d in rows:
            v = self._values(table, {"payload": d["payload"], "dedup_key": str(d["dedup_key"])})
            values.append(
                (
                    org_id,
                    d.get("channel_id"),
                    d.get("check_id"),
                    d["event"],
                    v["dedup_key"],
                    v["payload"],
                    d.get("status", "pending"),
                    d.get("next_attempt_at", now),
                    now,
                    now,
                )
            )
        await self._insert_many(
            c,
            "INSERT INTO notification_deliveries (organization_id, channel_id, check_id, event,"
            " dedup_key, payload, status, next_attempt_at, created_at, updated_at)",
            values,
            " ON CONFLICT (dedup_key) DO NOTHING",
        )
