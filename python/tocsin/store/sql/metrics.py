"""The store's part for metrics keys (a scraper's credential for one organisation's
metrics, kept as a SHA-256 hash like API tokens), and the few batched reads the metrics
export's operational side needs: the number of unsent notifications. (Many checks'
rollups in one read are `list_rollups_of`, store/sql/checks.py.)"""

from __future__ import annotations

from tocsin.store.base import Row
from tocsin.store.sql.base import SqlBase


class MetricsSql(SqlBase):
    async def metrics_key_by_hash(self, key_hash: str) -> Row | None:
        async with self._read_point() as c:
            return await c.fetchrow(
                "SELECT id, organization_id, name, prefix, last_used_at, revoked_at"
                " FROM metrics_keys WHERE key_hash = ?",
                key_hash,
            )

    async def touch_metrics_key(self, key_id: int, at: float) -> None:
        async with self._write() as c:
            await c.execute("UPDATE metrics_keys SET last_used_at = ? WHERE id = ?", at, key_id)

    async def pending_deliveries(self) -> int:
        async with self._read() as c:
            n = await c.fetchval(
                "SELECT COUNT(*) FROM notification_deliveries"
                " WHERE status IN ('pending', 'sending')"
            )
        return int(n or 0)
