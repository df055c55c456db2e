"""Who may send inbound events: integration keys (`ik_…`, kept as SHA-256 hashes like API
tokens), looked up by hash and cached briefly. The events each key may send per second
are a budget of the server's (`RateLimits.events`, tocsin/ratelimits.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tocsin.security import hash_token, new_token
from tocsin.store.base import Row, Store

KEY_PREFIX = "ik_"
# `ik_` and 32 URL-safe random characters (192 bits).
KEY_LENGTH = len(KEY_PREFIX) + 32
# How long a key's lookup (and a refusal) is believed; a change or a revocation made in
# this process drops it at once.
KEY_CACHE_TTL = 30.0
KEY_CACHE_SIZE = 10_000
GROUPING_TYPES = ("dedup_key", "none", "time_window", "payload_field")


def new_key() -> str:
    return new_token(KEY_PREFIX)[:KEY_LENGTH]


def key_prefix(key: str) -> str:
    """What reads show of a key: enough to tell keys apart, not to use one."""
    return key[: len(KEY_PREFIX) + 4]


@dataclass(frozen=True, slots=True)
class IntegrationKey:
    """What an event's processing needs of its key."""

    id: int
    org_id: int
    escalation_policy_id: int | None
    grouping_type: str
    grouping_window_seconds: int
    grouping_field: str | None
    # The service the key belongs to; without a policy of its own, the key's incidents
    # take the service's (resolved when the key is read).
    service_id: int | None = None

    @classmethod
    def from_row(cls, row: Row, service_policy_id: int | None = None) -> IntegrationKey:
        return cls(
            id=int(row["id"]),
            org_id=int(row["organization_id"]),
            escalation_policy_id=row["escalation_policy_id"] or service_policy_id,
            grouping_type=row["grouping_type"],
            grouping_window_seconds=int(row["grouping_window_seconds"] or 0),
            grouping_field=row["grouping_field"],
            service_id=row.get("service_id"),
        )


class KeyBook:
    """key → `IntegrationKey` for ingest, cached `KEY_CACHE_TTL` seconds; unknown and
    revoked keys too, so guessing costs no database read per attempt beyond the first."""

    def __init__(self, store: Store, *, ttl: float = KEY_CACHE_TTL) -> None:
        self._store = store
        self._ttl = ttl
        # hash -> (expires at, key or None)
        self._cache: dict[str, tuple[float, IntegrationKey | None]] = {}

    def cached(self, key: str) -> IntegrationKey | None:
        """The live key if this process knows it already (no read)."""
        if not key.startswith(KEY_PREFIX) or len(key) != KEY_LENGTH:
            return None
        hit = self._cache.get(hash_token(key))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def find(self, key: str) -> IntegrationKey | None:
        """The live key, or None for an unknown or revoked one (alike)."""
        if not key.startswith(KEY_PREFIX) or len(key) != KEY_LENGTH:
            return None
        key_hash = hash_token(key)
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._store.integration_key_by_hash(key_hash)
        found = None
        if row is not None and row["revoked_at"] is None:
            service_policy = None
            if row.get("service_id") and not row["escalation_policy_id"]:
                service = await self._store.get(
                    "services", [int(row["organization_id"])], int(row["service_id"])
                )
                service_policy = service["escalation_policy_id"] if service else None
            found = IntegrationKey.from_row(row, service_policy)
        if len(self._cache) >= KEY_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key_hash] = (now + self._ttl, found)
        return found

    def forget_policy(self, policy_id: int) -> None:
        """The escalation policy was deleted: keys that named it are read again."""
        for key_hash, (_, found) in list(self._cache.items()):
            if found is not None and found.escalation_policy_id == policy_id:
                del self._cache[key_hash]

    def forget_all(self) -> None:
        """Services changed (their policies): every key is read again."""
        self._cache.clear()

    def forget_organization(self, org_id: int) -> None:
        """The organisation was deleted: its keys are unknown from now on."""
        for key_hash, (_, found) in list(self._cache.items()):
            if found is not None and found.org_id == org_id:
                del self._cache[key_hash]

    def forget(self, key_id: int) -> None:
        """The key changed or was revoked: look it up again next time."""
        for key_hash, (_, found) in list(self._cache.items()):
            if found is not None and found.id == key_id:
                del self._cache[key_hash]
