"""Routing: which channels hear of an incident transition, and the outbox rows that
carry it. The rows are planned here (reads only) and written by the store in the same
transaction as the incident change (`Store.write_incident_change`).

- Channels: the check's linked channels plus the organisation's default channels
  (`is_default`), active ones only; an incident of a service also its service's channels
  (`ServiceBook`).
- Takeovers: a playbook that takes an incident's notifications over
  (`suppress_default_notifications`) makes its channel rows `suppressed`.
- Notices that are not transitions (SLO crossings, lifecycle notices, playbook steps):
  `queue_notice`, one row per channel under the caller's dedup key.
- Suppression: a check in a maintenance window or paused gets `suppressed` rows (kept,
  visible, never sent).
- One message per transition: the dedup key is `incident:{id}:{event}:{channel}`
  (reminders add their number), unique in the outbox.
- Users' notification preferences: an email channel's recipients that are members of the
  organisation are dropped when their preferences say so (email disabled, that kind of
  event not wanted, or quiet hours); a channel left with no recipient is `suppressed`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import zoneinfo
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from tocsin.engine import Engine
from tocsin.notify.channels import message
from tocsin.notify.subscribers import SubscriberMail
from tocsin.store.base import Row, Store
from tocsin.workflow.service_book import ServiceBook

log = logging.getLogger("tocsin.notify")

PUBLIC_URL_ENV = "TOCSIN_PUBLIC_URL"
# Which channels a check notifies is cached this long (seconds); a change made through
# this process's API clears the cache at once, one made by another server shows within it.
CHANNEL_CACHE_S = 5.0


def public_url() -> str:
    return os.environ.get(PUBLIC_URL_ENV, "http://localhost:8000").rstrip("/")


def check_links(check_id: Any, base: str | None = None) -> dict[str, str]:
    base = public_url() if base is None else base
    return {"check": f"{base}/checks/{check_id}", "check_api": f"{base}/api/checks/{check_id}"}


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def wants(prefs: Mapping[str, Any], event: str, severity: str, now: float) -> bool:
    """Whether a user's notification preferences let this event through by email."""
    if not prefs.get("email_enabled", True):
        return False
    key = {
        "opened": "notify_on_down" if severity == "critical" else "notify_on_degraded",
        "escalated": "notify_on_down",
        "reminder": "notify_on_down" if severity == "critical" else "notify_on_degraded",
        "resolved": "notify_on_recovery",
        "acknowledged": "notify_on_incident_ack",
    }.get(event)
    defaults = {"notify_on_incident_ack": False}
    if key is not None and not prefs.get(key, defaults.get(key, True)):
        return False
    start, end = prefs.get("quiet_hours_start"), prefs.get("quiet_hours_end")
    if start and end:
        try:
            tz = zoneinfo.ZoneInfo(prefs.get("timezone") or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            tz = zoneinfo.ZoneInfo("UTC")
        local = dt.datetime.fromtimestamp(now, tz)
        minute = local.hour * 60 + local.minute
        lo, hi = _minutes(start), _minutes(end)
        quiet = lo <= minute < hi if lo <= hi else (minute >= lo or minute < hi)
        if quiet:
            return False
    return True


class Router:
    def __init__(self, store: Store, engine: Engine) -> None:
        self._store = store
        self._engine = engine
        # Called after outbox rows were committed (wakes the worker).
        self.on_written: list[Any] = []
        self._cache: dict[tuple[int, int | None], tuple[float, list[Row]]] = {}

        self._rows: dict[int, tuple[float, Row | None]] = {}
        # Read once (the environment is the process's; os.environ is slow in a burst).
        self.public_url = public_url()
        # Mails to status page subscribers (set by the composition root).
        self.subscribers: SubscriberMail | None = None
        # Services' channels: an incident of a service is also told to them (set by the
        # composition root).
        self.services: ServiceBook | None = None
        # Whether something else takes over an incident's notifications (a playbook with
        # `suppress_default_notifications`): `fn(org_id, incident)` answers the reason, or
        # None. Its channel rows are then kept as `suppressed` with that reason.
        self.takeovers: list[Callable[[int, Mapping[str, Any]], str | None]] = []

    def invalidate(self) -> None:
        """Channels or their links changed."""
        self._cache.clear()
        self._rows.clear()

    async def channel(self, org_id: int, channel_id: int) -> Row | None:
        """One channel as the worker sends with it (cached like `channels_for`)."""
        hit = self._rows.get(channel_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            row = hit[1]
            return row if row is None or row["organization_id"] == org_id else None
        row = await self._store.get("notification_channels", [org_id], channel_id)
        if len(self._rows) > 100_000:
            self._rows.clear()
        self._rows[channel_id] = (now + CHANNEL_CACHE_S, row)
        return row

    def written(self) -> None:
        for fn in self.on_written:
            fn()

    async def channels_for(self, org_id: int, check_id: int | None) -> list[Row]:
        """The check's channels and the organisation's defaults (active ones)."""
        key = (org_id, check_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._channels_for(org_id, check_id)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (now + CHANNEL_CACHE_S, found)
        return found

    async def prefetch(self, pairs: Collection[tuple[int, int]]) -> None:
        """Fill the cache of `channels_for` for many `(org_id, check_id)` at once (two
        reads, not three per check): a burst of transitions is routed from memory."""
        now = time.monotonic()
        missing = set()
        for key in pairs:
            hit = self._cache.get(key)
            if hit is None or hit[0] <= now:
                missing.add(key)
        if not missing:
            return
        links, rows = await self._store.channel_routes(
            {org for org, _ in missing}, {check for _, check in missing}
        )
        by_id = {int(r["id"]): r for r in rows}
        linked: dict[int, list[int]] = {}
        for check_id, channel_id in links:
            linked.setdefault(check_id, []).append(channel_id)
        defaults = [r for r in rows if r["is_default"]]
        if len(self._cache) + len(missing) > 100_000:
            self._cache.clear()
        for org_id, check_id in missing:
            ids: set[int] = set()
            out: list[Row] = []
            for row in [by_id.get(cid) for cid in linked.get(check_id, ())] + defaults:
                if row is None or row["organization_id"] != org_id or row["id"] in ids:
                    continue
                ids.add(row["id"])
                out.append(row)
            self._cache[(org_id, check_id)] = (
                now + CHANNEL_CACHE_S,
                [r for r in out if r["is_active"]],
            )

    async def _channels_for(self, org_id: int, check_id: int | None) -> list[Row]:
        ids: set[int] = set()
        out: list[Row] = []
        if check_id is not None:
            for cid in await self._store.linked("check_channels", [org_id], check_id):
                row = await self._store.get("notification_channels", [org_id], cid)
                if row is not None and row["id"] not in ids:
                    ids.add(row["id"])
                    out.append(row)
        for row in await self._store.select(
            "notification_channels", [org_id], where={"is_default": True}, limit=500
        ):
            if row["id"] not in ids:
                ids.add(row["id"])
                out.append(row)
        return [r for r in out if r["is_active"]]

    def suppression(self, check_id: int | None) -> str | None:
        if check_id is None:
            return None
        if self._engine.in_maintenance(check_id):
            return "in maintenance"
        check = self._engine.get(check_id)
        if check is not None and not check.is_active:
            return "check paused"
        return None

    def check_info(self, check_id: int | None) -> dict[str, Any]:
        check = self._engine.get(check_id) if check_id is not None else None
        if check is None:
            return {}
        return {"name": check.name, "type": check.type, "url": check.url, "host": check.host}

    async def plan(
        self,
        org_id: int,
        incident: Mapping[str, Any],
        event: str,
        *,
        at: float,
        actor_id: int | None = None,
        suffix: str = "",
        channels: list[Row] | None = None,
    ) -> list[dict[str, Any]]:
        """Outbox rows for one transition of `incident` (its id may be unknown yet: the
        store fills `{incident}` in the dedup key and `incident_id` in the payload)."""
        check_id = incident.get("check_id")
        extra: list[dict[str, Any]] = []
        # Status page subscribers: one fan-out row, expanded by the worker (subscribers.py).
        if self.subscribers is not None and suffix == "" and channels is None:
            fanout = self.subscribers.plan_incident(
                org_id,
                incident,
                event,
                at=at,
                check=self.check_info(check_id),
                suppressed=self.suppression(check_id),
            )
            if fanout is not None:
                extra.append(fanout)
        if channels is None:
            channels = await self.channels_for(org_id, check_id)
            if incident.get("service_id") and self.services is not None:
                channels = await self._with_service_channels(
                    org_id, channels, incident["service_id"]
                )
        if not channels:
            return extra
        actor = None
        if actor_id is not None:
            user = await self._store.get_user(actor_id)
            actor = user["email"] if user else f"user {actor_id}"
        m = message(
            event=event,
            incident={**incident, "organization_id": org_id},
            check=self.check_info(check_id),
            links=check_links(check_id, self.public_url),
            at=at,
            actor=actor,
        )
        reason = self.suppression(check_id)
        if reason is None and suffix == "":
            for takeover in self.takeovers:
                reason = takeover(org_id, incident)
                if reason is not None:
                    break
        rows = []
        for ch in channels:
            payload = dict(m)
            status = "pending"
            if reason is not None:
                status, payload["suppressed"] = "suppressed", reason
            elif ch["channel_type"] == "email":
                recipients = await self._recipients(org_id, ch["config"], event, m["severity"], at)
                if not recipients:
                    status = "suppressed"
                    payload["suppressed"] = "every recipient opted out (notification preferences)"
                payload["recipients"] = recipients
            rows.append(
                {
                    "channel_id": ch["id"],
                    "check_id": check_id,
                    "event": event,
                    "dedup_key": f"incident:{{incident}}:{event}{suffix}:{ch['id']}",
                    "payload": payload,
                    "status": status,
                    "next_attempt_at": at,
                }
            )
        return rows + extra

    async def _with_service_channels(
        self, org_id: int, channels: list[Row], service_id: int
    ) -> list[Row]:
        assert self.services is not None
        out = list(channels)
        have = {int(ch["id"]) for ch in channels}
        for cid in await self.services.channel_ids(org_id, service_id):
            if cid in have:
                continue
            ch = await self.channel(org_id, cid)
            if ch is not None and ch["is_active"]:
                have.add(cid)
                out.append(ch)
        return out

    async def _recipients(
        self, org_id: int, config: Mapping[str, Any], event: str, severity: str, now: float
    ) -> list[str]:
        out = []
        for addr in config.get("to_addresses") or []:
            user = await self._store.user_by_email(addr)
            if user is not None and user.get("is_active", True):
                p = await self._store.principal_for_user(int(user["id"]))
                if p is not None and org_id in p.roles:
                    prefs = user.get("notification_preferences") or {}
                    if not wants(prefs, event, severity, now):
                        continue
            out.append(addr)
        return out

    async def queue_notice(
        self,
        org_id: int,
        channel_ids: Sequence[int],
        notice: Mapping[str, Any],
        dedup_key: str,
        *,
        at: float | None = None,
        check_id: int | None = None,
    ) -> int:
        """Outbox rows for a message that is not an incident's transition (an
        `tocsin.notify.channels.notice`), one per active channel of the organisation in
        `channel_ids`; the dedup key is `{dedup_key}:{channel}`, so a notice queued twice
        is sent once. Answers how many channels it went to."""
        at = time.time() if at is None else at
        rows = []
        for channel_id in dict.fromkeys(channel_ids):
            ch = await self.channel(org_id, int(channel_id))
            if ch is None or not ch["is_active"]:
                continue
            payload = dict(notice)
            rows.append(
                {
                    "channel_id": ch["id"],
                    "check_id": check_id,
                    "event": str(notice.get("event") or "notice"),
                    "dedup_key": f"{dedup_key}:{ch['id']}",
                    "payload": payload,
                    "status": "pending",
                    "next_attempt_at": at,
                }
            )
        if rows:
            await self._store.queue_deliveries(org_id, rows)
            self.written()
        return len(rows)
