"""Services as incidents need them: a service's escalation policy and channels, read
once and kept a few seconds (a change made through this process's API clears them at
once). Checks and integration keys name a service; their incidents take its policy
(unless they have their own) and its channels (docs/services.md)."""

from __future__ import annotations

import time

from tocsin.store.base import Row, Store

# How long a service is kept (seconds): a change made by another server shows within it.
SERVICE_CACHE_S = 5.0


class ServiceBook:
    def __init__(self, store: Store, *, ttl: float = SERVICE_CACHE_S) -> None:
        self._store = store
        self._ttl = ttl
        self._rows: dict[tuple[int, int], tuple[float, Row | None]] = {}

    def invalidate(self) -> None:
        self._rows.clear()

    async def get(self, org_id: int, service_id: int | None) -> Row | None:
        """The organisation's service `service_id` (None when there is none)."""
        if not service_id:
            return None
        key = (org_id, int(service_id))
        now = time.monotonic()
        hit = self._rows.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._store.get("services", [org_id], int(service_id))
        if len(self._rows) > 100_000:
            self._rows.clear()
        self._rows[key] = (now + self._ttl, row)
        return row

    async def policy(self, org_id: int, service_id: int | None) -> int | None:
        row = await self.get(org_id, service_id)
        return int(row["escalation_policy_id"]) if row and row["escalation_policy_id"] else None

    async def channel_ids(self, org_id: int, service_id: int | None) -> list[int]:
        row = await self.get(org_id, service_id)
        return [int(c) for c in (row or {}).get("notification_channel_ids") or []]
