"""The outbox worker: claims due deliveries, sends them, records the answer.

A claimed row is `sending` with a lease (`next_attempt_at` = claim time + lease). The
answer is written back in one transaction per round: `delivered`; `pending` again with
exponential backoff (honouring `Retry-After`) after a network error, a 408/425/429 or a
5xx; `failed` after a refusal or the last attempt. A process that dies mid-round leaves
its rows `sending`: they are claimed again when the lease expires (so a message whose
answer was lost in the crash is sent again: at-least-once; webhooks carry the delivery's
id in `X-Tocsin-Delivery`, PagerDuty and Opsgenie dedupe by incident)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

from tocsin.notify.channels import Outcome, Sender
from tocsin.notify.router import Router
from tocsin.notify.subscribers import KINDS as SUBSCRIBER_KINDS
from tocsin.notify.subscribers import SubscriberMail
from tocsin.paging.contacts import PAGE
from tocsin.paging.pager import Pager, PageReads, Suppressed
from tocsin.store.base import Row, Store, StoreUnavailableError

log = logging.getLogger("tocsin.notify")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Settings:
    """Tunables, from the environment (`TOCSIN_NOTIFY_*`)."""

    def __init__(self) -> None:
        self.max_attempts = int(_env_float("TOCSIN_NOTIFY_MAX_ATTEMPTS", 8))
        self.backoff = _env_float("TOCSIN_NOTIFY_BACKOFF_S", 2.0)
        self.max_backoff = _env_float("TOCSIN_NOTIFY_MAX_BACKOFF_S", 600.0)
        self.max_retry_after = _env_float("TOCSIN_NOTIFY_MAX_RETRY_AFTER_S", 3600.0)
        self.lease = _env_float("TOCSIN_NOTIFY_LEASE_S", 60.0)
        self.poll = _env_float("TOCSIN_NOTIFY_POLL_S", 1.0)
        self.batch = int(_env_float("TOCSIN_NOTIFY_BATCH", 1000))
        # Rounds in flight at once: one claims or settles while the others send.
        self.rounds = max(1, int(_env_float("TOCSIN_NOTIFY_ROUNDS", 1)))
        self.concurrency = int(_env_float("TOCSIN_NOTIFY_CONCURRENCY", 200))
        self.timeout = _env_float("TOCSIN_NOTIFY_TIMEOUT_S", 10.0)
        self.reminder_tick = _env_float("TOCSIN_NOTIFY_REMINDER_TICK_S", 5.0)


class Outbox:
    def __init__(self, store: Store, router: Router, settings: Settings | None = None) -> None:
        self._store = store
        self._router = router
        self.settings = settings or Settings()
        self.sender = Sender(timeout=self.settings.timeout, limit=self.settings.concurrency)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reminded: set[str] = set()
        self._stopping = False
        self._gate: asyncio.Semaphore | None = None
        self._runs: list[asyncio.Task[None]] = []
        # Answers received but not yet written (the database was unavailable): written
        # before anything more is claimed, so a short outage sends nothing twice.
        self._unsettled: list[tuple[int, dict[str, Any]]] = []
        self._settle_lock = asyncio.Lock()
        self.sent = 0
        # Mails to status page subscribers (set by the composition root).
        self.subscribers: SubscriberMail | None = None
        # Pages to people's contact methods (set by the composition root).
        self.pager: Pager | None = None
        router.on_written.append(self.wake)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._gate = asyncio.Semaphore(self.settings.concurrency)
        self._runs = [
            loop.create_task(self._run(), name=f"tocsin-notify-outbox-{n}")
            for n in range(self.settings.rounds)
        ]
        self._tasks = [
            *self._runs,
            loop.create_task(self._reminders(), name="tocsin-notify-reminders"),
        ]

    async def close(self) -> None:
        """Stop after the round in flight (bounded by the send timeout), so a clean
        shutdown leaves no row `sending`; whatever is still due stays for the next run."""
        self._stopping = True
        self._wake.set()
        if self._runs:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(
                    asyncio.shield(asyncio.gather(*self._runs)), self.settings.timeout + 2
                )
        with contextlib.suppress(Exception):
            await self._settle([])  # what a database outage left unwritten, if it is back
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._runs = []
        with contextlib.suppress(ValueError):
            self._router.on_written.remove(self.wake)
        await self.sender.close()

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                handled = await self.round()
                backoff = 0.1
                if handled:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll)
            except asyncio.CancelledError:
                raise
            except StoreUnavailableError as exc:
                log.warning("notifications wait for the database: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("notification worker error; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def round(self) -> int:
        """Claim, send and settle one batch of due deliveries; how many were claimed."""
        s = self.settings
        if self._unsettled:
            await self._settle([])  # raises while the database is still unavailable
        rows = await self._store.claim_deliveries(time.time(), s.batch, s.lease)
        if not rows:
            return 0
        channels: dict[int, Row | None] = {}
        for r in rows:
            cid = r["channel_id"]
            if cid is not None and cid not in channels:
                channels[cid] = await self._router.channel(int(r["organization_id"]), cid)
        page_reads: PageReads | None = None
        if self.pager is not None and any(
            r["channel_id"] is None and (r["payload"] or {}).get("kind") == PAGE for r in rows
        ):
            try:
                page_reads = await self.pager.prefetch(rows)
            except Exception as exc:  # each page reads for itself (and retries) instead
                log.warning("reading this round's pages failed: %s", exc)
        if self._gate is None:
            self._gate = asyncio.Semaphore(s.concurrency)
        gate = self._gate

        async def one(r: Row) -> tuple[int, dict[str, Any]]:
            async with gate:
                return r["id"], await self._deliver(r, channels.get(r["channel_id"]), page_reads)

        updates = await asyncio.gather(*(one(r) for r in rows))
        self.sent += sum(1 for _, f in updates if f.get("status") == "delivered")
        await self._settle(updates)
        await self._page_outcomes(rows, dict(updates))
        return len(rows)

    async def _page_outcomes(self, rows: list[Row], updates: dict[int, dict[str, Any]]) -> None:
        """Pages that went out, failed for good or were suppressed, on their incident's
        timeline (who, how, when): one transaction for the round. Not written again if
        this fails (the delivery rows keep the outcome)."""
        ops = []
        now = time.time()
        for r in rows:
            payload = r["payload"] or {}
            status = updates.get(r["id"], {}).get("status")
            if (
                payload.get("kind") != PAGE
                or r.get("incident_id") is None
                or status not in ("delivered", "failed", "suppressed")
            ):
                continue
            detail = {
                "delivery_id": r["id"],
                "user_id": payload.get("user_id"),
                "contact_method_id": payload.get("contact_method_id"),
                "kind": payload.get("method_kind"),
                "to": payload.get("masked"),
            }
            error = updates[r["id"]].get("last_error")
            if error:
                detail["error"] = error
            ops.append(
                {
                    "org_id": int(r["organization_id"]),
                    "incident_id": int(r["incident_id"]),
                    "fields": {},
                    "event": {"kind": f"page_{status}", "at": now, "detail": detail},
                }
            )
        if not ops:
            return
        try:
            await self._store.write_incident_batch(ops)
        except Exception as exc:
            log.warning("the outcome of %d pages is not on their timelines: %s", len(ops), exc)

    async def _settle(self, updates: list[tuple[int, dict[str, Any]]]) -> None:
        """Write answers (and any left over from a database outage); on failure they are
        kept for the next try, and the error raised."""
        async with self._settle_lock:
            pending = self._unsettled + updates
            self._unsettled = []
            if not pending:
                return
            try:
                await self._store.settle_deliveries(pending)
            except BaseException:
                self._unsettled = pending + self._unsettled
                raise

    async def _deliver(
        self, row: Row, channel: Row | None, page_reads: PageReads | None = None
    ) -> dict[str, Any]:
        if row["channel_id"] is None and (row["payload"] or {}).get("kind") in SUBSCRIBER_KINDS:
            return await self._deliver_to_subscribers(row)
        if row["channel_id"] is None and (row["payload"] or {}).get("kind") == PAGE:
            return await self._deliver_page(row, page_reads)
        if channel is None:
            return _final("failed", "the channel was deleted")
        if not channel["is_active"]:
            return _final("suppressed", "the channel is disabled")
        # Never raises; the error it reports has the channel's secrets blanked out.
        out = await self.sender.send(
            channel["channel_type"],
            channel["config"],
            row["payload"],
            row["dedup_key"],
            response=False,
        )
        return self._answer(row, out)

    async def _deliver_to_subscribers(self, row: Row) -> dict[str, Any]:
        """The server's own mails to status page subscribers (notify/subscribers.py): a
        fan-out row becomes one row per subscriber, a mail row is sent."""
        if self.subscribers is None:
            return _final("failed", "status page subscriptions are not set up in this process")
        try:
            out = await self.subscribers.deliver(row)
        except Exception as exc:  # a database outage while fanning out: try again
            log.warning("subscriber delivery %s: %s", row["id"], exc)
            out = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500], retry=True)
        return self._answer(row, out)

    async def _deliver_page(self, row: Row, reads: PageReads | None = None) -> dict[str, Any]:
        """A page to a person's contact method (paging/pager.py); one whose incident was
        acknowledged or resolved before it came due ends `suppressed`, unsent."""
        if self.pager is None:
            return _final("failed", "paging is not set up in this process")
        try:
            out = await self.pager.deliver(row, reads)
        except Exception as exc:  # a database outage while reading: try again
            log.warning("page delivery %s: %s", row["id"], exc)
            out = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500], retry=True)
        if isinstance(out, Suppressed):
            return _final("suppressed", out.error or "suppressed")
        return self._answer(row, out)

    def _answer(self, row: Row, out: Outcome) -> dict[str, Any]:
        now = time.time()
        if out.ok:
            return {
                "status": "delivered",
                "delivered_at": time.time(),
                "response_code": out.status_code,
                "last_error": None,
            }
        attempts = int(row["attempts"])
        if not out.retry or attempts >= self.settings.max_attempts:
            return {
                "status": "failed",
                "response_code": out.status_code,
                "last_error": out.error,
            }
        s = self.settings
        delay = min(s.max_backoff, s.backoff * 2 ** (attempts - 1))
        delay *= random.uniform(0.8, 1.2)
        if out.retry_after is not None:
            delay = max(delay, min(out.retry_after, s.max_retry_after))
        return {
            "status": "pending",
            "next_attempt_at": now + delay,
            "response_code": out.status_code,
            "last_error": out.error,
        }

    # -- reminders while an incident stays open ------------------------------------------

    async def _reminders(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reminder_tick)
            try:
                await self.remind(time.time())
            except asyncio.CancelledError:
                raise
            except StoreUnavailableError as exc:
                log.warning("reminders wait for the database: %s", exc)
            except Exception:
                log.exception("reminders failed")

    async def remind(self, now: float) -> int:
        """Queue the reminders due for open, unacknowledged incidents; how many."""
        written = 0
        incidents = await self._store.open_check_incidents()
        still_open = {str(i["id"]) for i in incidents}
        self._reminded = {k for k in self._reminded if k.split(":", 1)[0] in still_open}
        for inc in incidents:
            if inc["status"] != "OPEN" or self._router.suppression(inc["check_id"]):
                continue
            org = int(inc["organization_id"])
            channels = [
                c
                for c in await self._router.channels_for(org, inc["check_id"])
                if int(c["config"].get("reminder_interval_s") or 0) > 0
            ]
            for ch in channels:
                every = int(ch["config"]["reminder_interval_s"])
                n = int((now - float(inc["started_at"])) // every)
                key = f"{inc['id']}:{ch['id']}:{n}"
                if n < 1 or key in self._reminded:
                    continue
                rows = await self._router.plan(
                    org, inc, "reminder", at=now, suffix=f"-{n}", channels=[ch]
                )
                # An empty update: only the outbox rows are written (dedup by key).
                await self._store.write_incident_change(
                    org, int(inc["id"]), {}, deliveries=rows, only_if_status=("OPEN",)
                )
                # Only once written: a reminder lost to a database outage is tried again.
                self._reminded.add(key)
                written += len(rows)
        if written:
            self._router.written()
        return written


def _final(status: str, why: str) -> dict[str, Any]:
    return {"status": status, "last_error": why}
