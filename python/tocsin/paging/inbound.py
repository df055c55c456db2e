"""Inbound events applied to incidents, in order and durably, by group commit: a request
queues its parsed events and waits until the transaction holding them has committed
(an answered event is never lost), while the events that arrive meanwhile share the next
transaction, so the database is not the ceiling of the event rate.

Each batch is planned in memory against the open incidents (`InboundIndex`: no read per
event), then written as one transaction (`Store.write_inbound_batch`: the events, the
incidents opened or changed, their timeline and their notifications); only then is the
index kept, the requests answered, live events published and `on_change` called. A
batch that fails changes nothing: the index is put back as it was. One process owns the
index: two servers taking inbound events for one database would each open their own
incidents for the same dedup key.

What an event does (the key's `grouping_type` decides what a trigger joins):
- trigger: the open incident its dedup key reaches gets one more event (`event_count`,
  `last_event_at`, severity and title raised with a stronger severity; a `retriggered`
  timeline event per batch); `none` always opens a new incident; `time_window` joins a
  new dedup key to the key's newest open incident if it opened within the window;
  `payload_field` to the newest open incident whose grouping field had the same value
  (within the window, if one is set); a join is a `grouped` timeline event. Otherwise a
  new incident opens (with the key's escalation policy, due at once).
- acknowledge: the newest open incident the dedup key reaches is acknowledged (its
  escalation stops); resolve: resolved. An unknown or closed dedup key changes nothing:
  the event is kept, without an incident."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from tocsin.events import EventHub
from tocsin.incidents import incident_json
from tocsin.paging.inbound_formats import SEVERITY_RANK, InboundEvent, field_value
from tocsin.paging.inbound_index import (
    ACKNOWLEDGED,
    OPEN,
    RESOLVED,
    InboundIndex,
    OpenIncident,
)
from tocsin.paging.inbound_keys import IntegrationKey, KeyBook
from tocsin.store.base import InboundEventRow, Row, Store, StoreUnavailableError

if TYPE_CHECKING:
    from tocsin.notify.router import Router

log = logging.getLogger("tocsin.paging.inbound")

# Events per transaction (a request's events are never split).
BATCH = 2_000
# Under load (a batch committed less than BUSY seconds ago), the writer waits LINGER
# seconds before taking the next batch; an event arriving at rest is written at once.
BUSY = 0.05
LINGER = 0.002
# `last_event_at` of a key is written at most this often (seconds).
TOUCH_EVERY = 1.0
# Events waiting past this many (a database far slower than the senders): refused with
# a 503 until the queue drains, so memory stays bounded.
MAX_PENDING = 100_000


class Accepted(NamedTuple):
    """What became of one event: its dedup key (made up for a trigger without one) and
    the incident it opened or changed (None: an acknowledgement or resolution that
    reached no open incident)."""

    dedup_key: str
    incident_id: int | None


class Backlogged(Exception):
    """Too many events are waiting to be written: try again shortly."""


@dataclass(eq=False, slots=True)
class _Request:
    key: IntegrationKey
    events: Sequence[InboundEvent]
    source_format: str
    received_at: float
    future: asyncio.Future[list[Accepted]]
    reached: list[OpenIncident | None] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """One batch in the making, and how to undo it in the index."""

    created: list[OpenIncident] = field(default_factory=list)
    # existing incidents changed: their state before the batch, and the columns changed
    saved: dict[OpenIncident, tuple[Any, ...]] = field(default_factory=dict)
    changed: dict[OpenIncident, set[str]] = field(default_factory=dict)
    aliased: list[tuple[OpenIncident, str]] = field(default_factory=list)
    resolved: list[OpenIncident] = field(default_factory=list)
    events: list[InboundEventRow] = field(default_factory=list)
    timeline: list[tuple[int, int, str, dict[str, Any], float]] = field(default_factory=list)
    # incident -> [events, first at, last event]: one `retriggered` row per batch
    retriggers: dict[OpenIncident, list[Any]] = field(default_factory=dict)
    # (incident, what happened, when, the incident then): notified and published
    notices: list[tuple[OpenIncident, str, float, Row]] = field(default_factory=list)
    deliveries: list[tuple[int, int, Any]] = field(default_factory=list)
    keys_seen: dict[int, float] = field(default_factory=dict)


_PUBLISHED = {
    "opened": "incident.new",
    "acknowledged": "incident.ack",
    "resolved": "incident.resolve",
}


class InboundProcessor:
    """Applies inbound events to incidents by group commit (see the module). Build one
    per process, `await start()` (loads the open incidents), `submit` events, `close`."""

    def __init__(
        self,
        store: Store,
        events: EventHub,
        router: Router | None = None,
        *,
        batch: int = BATCH,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._events = events
        self.router = router
        self.keys = KeyBook(store)
        # Events per second per key (None: no limit).
        self.index = InboundIndex()
        # Called after each commit with the rows of every incident the batch opened,
        # acknowledged or resolved (as they ended up); escalation arms and cancels its
        # timers from these.
        self.on_change: list[Callable[[list[Row]], None]] = []
        self._batch = batch
        self._max_pending = max_pending
        self._queue: list[_Request] = []
        self._queued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Acknowledgements and resolutions made elsewhere (people, through the incident
        # manager), applied to the index before the next batch is planned.
        self._external: list[tuple[str, dict[str, Any]]] = []
        self._publishing = False
        self._last_commit = -BUSY
        # key id -> when its `last_event_at` was last written
        self._touched: dict[int, float] = {}
        # Events committed since start.
        self.accepted = 0

    @property
    def pending(self) -> int:
        """Events waiting to be written."""
        return self._queued

    async def start(self) -> None:
        """Load the open inbound incidents, then take events."""
        self.index.load(await self._store.open_inbound_incidents())
        self._events.add_observer(self._observe, ("incident.ack", "incident.resolve"))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-inbound")
        log.info("inbound events: %d open incidents", len(self.index))

    async def close(self) -> None:
        """Stop; events still queued get the cancellation as their answer (none is
        reported stored that was not)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for req in self._queue:
            if not req.future.done():
                req.future.cancel()
        self._queue, self._queued = [], 0

    async def submit(
        self,
        key: IntegrationKey,
        events: Sequence[InboundEvent],
        source_format: str,
        *,
        received_at: float | None = None,
    ) -> list[Accepted]:
        """Apply `events` (in order) once they are stored; StoreUnavailableError when
        the database is down (nothing applied), Backlogged when too many wait."""
        if not events:
            return []
        if self._task is None or self._task.done():
            raise RuntimeError("the inbound processor is not running")
        if self._queued + len(events) > self._max_pending:
            raise Backlogged(f"{self._queued} inbound events are waiting to be written")
        loop = asyncio.get_running_loop()
        req = _Request(
            key,
            events,
            source_format,
            time.time() if received_at is None else received_at,
            loop.create_future(),
        )
        self._queue.append(req)
        self._queued += len(events)
        self._wake.set()
        return await req.future

    # -- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._queued < self._batch and time.monotonic() - self._last_commit < BUSY:
                # Busy: the senders answered by the last batch are sending their next
                # events; a moment's wait lets them share this transaction (fewer,
                # larger transactions: what bounds the event rate is their number).
                await asyncio.sleep(LINGER)
            n, take = 0, 0
            for req in self._queue:
                if take and n + len(req.events) > self._batch:
                    break
                n += len(req.events)
                take += 1
            batch, self._queue = self._queue[:take], self._queue[take:]
            self._queued -= n
            await self._process(batch)
            self._last_commit = time.monotonic()

    def forget_organization(self, org_id: int) -> None:
        """The organisation was deleted: its keys and open incidents are gone (a key of
        it is unknown at once, not after the key cache's time)."""
        self.keys.forget_organization(org_id)
        self.index.forget_organization(org_id)

    async def _process(self, batch: list[_Request]) -> None:
        try:
            await self._commit(batch)
        except asyncio.CancelledError:
            # Stopped while writing: whether it committed is unknown, so no caller is
            # told it did.
            for req in batch:
                req.future.cancel()
            raise
        except StoreUnavailableError as exc:
            log.warning("inbound events not stored: %s", exc)
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("inbound events not stored")
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One request's events broke the batch (e.g. its organisation was deleted
            # meanwhile): one request at a time, so the others are not refused with it.
            log.info("batch of %d inbound requests failed; one at a time", len(batch))
            for req in batch:
                await self._process([req])

    async def _commit(self, batch: list[_Request]) -> None:
        self._apply_external()
        plan = _Plan()
        try:
            for req in batch:
                req.reached = [
                    self._apply(plan, req.key, ev, req.source_format, req.received_at)
                    for ev in req.events
                ]
            self._close_retriggers(plan)
            await self._plan_deliveries(plan)
            ids = await self._store.write_inbound_batch(
                new_incidents=[inc.row() for inc in plan.created],
                updates=[
                    (inc.id, {col: getattr(inc, col) for col in cols})
                    for inc, cols in plan.changed.items()
                ],
                events=plan.events,
                timeline=plan.timeline,
                deliveries=plan.deliveries,
                keys_seen=plan.keys_seen,
            )
        except BaseException:
            self._undo(plan)
            raise
        # Committed: nothing from here on may raise (the caller would apply it again).
        try:
            self._settle(plan, ids)
            for req in batch:
                if not req.future.done():
                    req.future.set_result(
                        [
                            Accepted(ev.dedup_key, None if inc is None else inc.id)
                            for ev, inc in zip(req.events, req.reached, strict=True)
                        ]
                    )
                self.accepted += len(req.events)
            self._after(plan)
        except Exception as exc:
            log.exception("after a batch of inbound events was stored")
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)

    # -- planning: one event -----------------------------------------------------------------

    def _apply(
        self, plan: _Plan, key: IntegrationKey, ev: InboundEvent, fmt: str, at: float
    ) -> OpenIncident | None:
        index = self.index
        inc: OpenIncident | None
        if ev.action == "trigger":
            inc = None if key.grouping_type == "none" else index.reaching(key.id, ev.dedup_key)
            if inc is not None:
                self._retrigger(plan, inc, ev, at)
            else:
                inc = self._grouped(key, ev, at)
                if inc is not None:
                    self._join(plan, key, inc, ev, at)
                else:
                    inc = self._open(plan, key, ev, fmt, at)
        else:
            inc = index.reaching(key.id, ev.dedup_key)
            if inc is not None:
                if ev.action == "resolve":
                    self._resolve(plan, inc, ev, fmt, at)
                elif inc.status == OPEN:
                    self._acknowledge(plan, inc, ev, fmt, at)
        plan.events.append(
            InboundEventRow(
                key.org_id,
                key.id,
                None if inc is None else inc.id,
                ev.action,
                ev.dedup_key,
                fmt,
                ev.summary,
                ev.severity,
                ev.payload(),
                at,
            )
        )
        if at - self._touched.get(key.id, -TOUCH_EVERY) >= TOUCH_EVERY:
            plan.keys_seen[key.id] = at
        return inc

    def _grouped(self, key: IntegrationKey, ev: InboundEvent, at: float) -> OpenIncident | None:
        """The open incident a trigger with a new dedup key joins, if its key groups."""
        window = key.grouping_window_seconds
        found = None
        if key.grouping_type == "time_window" and window > 0:
            found = self.index.newest(key.id)
        elif key.grouping_type == "payload_field" and key.grouping_field:
            value = field_value(ev.fields(), key.grouping_field)
            if value is not None:
                found = self.index.in_group(key.id, key.grouping_field, value)
            window = window if window > 0 else -1
        if found is None or (window >= 0 and at - found.started_at > window):
            return None
        return found

    def _save(self, plan: _Plan, inc: OpenIncident) -> None:
        # New incidents are dropped if the batch fails; existing ones are put back.
        if inc.id > 0 and inc not in plan.saved:
            plan.saved[inc] = inc.state()

    def _changed(self, plan: _Plan, inc: OpenIncident, *cols: str) -> None:
        if inc.id > 0:  # a new one is inserted as it ends up
            plan.changed.setdefault(inc, set()).update(cols)

    def _open(
        self, plan: _Plan, key: IntegrationKey, ev: InboundEvent, fmt: str, at: float
    ) -> OpenIncident:
        policy = key.escalation_policy_id
        inc = OpenIncident(
            seq=self.index.next_seq(),
            id=-len(plan.created) - 1,
            org_id=key.org_id,
            key_id=key.id,
            dedup_key=ev.dedup_key,
            severity=ev.severity,
            title=ev.summary or ev.dedup_key,
            started_at=at,
            details=ev.details(),
            escalation_policy_id=policy,
            # The policy's first step is due at once; escalation pages from these.
            escalation_due_at=at if policy is not None else None,
            service_id=key.service_id,
        )
        self.index.add(inc)
        plan.created.append(inc)
        detail = {
            "source": ev.source,
            "summary": ev.summary,
            "severity": ev.severity,
            "dedup_key": ev.dedup_key,
            "integration_key_id": key.id,
            "format": fmt,
        }
        plan.timeline.append((key.org_id, inc.id, "opened", detail, at))
        plan.notices.append((inc, "opened", at, inc.row()))
        return inc

    def _count(self, plan: _Plan, inc: OpenIncident, ev: InboundEvent, at: float) -> None:
        self._save(plan, inc)
        inc.event_count += 1
        inc.last_event_at = at
        self._changed(plan, inc, "event_count", "last_event_at")
        if SEVERITY_RANK.get(ev.severity, 0) > SEVERITY_RANK.get(inc.severity, -1):
            inc.severity = ev.severity
            inc.title = ev.summary or inc.title
            self._changed(plan, inc, "severity", "title")

    def _retrigger(self, plan: _Plan, inc: OpenIncident, ev: InboundEvent, at: float) -> None:
        self._count(plan, inc, ev, at)
        seen = plan.retriggers.get(inc)
        if seen is None:
            plan.retriggers[inc] = [1, at, ev]
        else:
            seen[0] += 1
            seen[2] = ev

    def _join(
        self, plan: _Plan, key: IntegrationKey, inc: OpenIncident, ev: InboundEvent, at: float
    ) -> None:
        self._count(plan, inc, ev, at)
        self.index.alias(inc, ev.dedup_key)
        plan.aliased.append((inc, ev.dedup_key))
        detail = {
            "dedup_key": ev.dedup_key,
            "grouping": key.grouping_type,
            "summary": ev.summary,
            "severity": ev.severity,
            "source": ev.source,
        }
        plan.timeline.append((inc.org_id, inc.id, "grouped", detail, at))

    def _acknowledge(
        self, plan: _Plan, inc: OpenIncident, ev: InboundEvent, fmt: str, at: float
    ) -> None:
        self._save(plan, inc)
        inc.status = ACKNOWLEDGED
        inc.acknowledged_at = at
        inc.escalation_due_at = None
        self._changed(plan, inc, "status", "acknowledged_at", "escalation_due_at")
        detail = {"source": ev.source or fmt, "dedup_key": ev.dedup_key, "format": fmt}
        plan.timeline.append((inc.org_id, inc.id, "acknowledged", detail, at))
        plan.notices.append((inc, "acknowledged", at, inc.row()))

    def _resolve(
        self, plan: _Plan, inc: OpenIncident, ev: InboundEvent, fmt: str, at: float
    ) -> None:
        self._save(plan, inc)
        inc.status = RESOLVED
        inc.resolved_at = at
        inc.escalation_due_at = None
        self._changed(plan, inc, "status", "resolved_at", "escalation_due_at")
        plan.resolved.append(inc)
        detail = {
            "automatic": False,
            "reason": "resolved by the sender",
            "source": ev.source or fmt,
            "dedup_key": ev.dedup_key,
            "format": fmt,
        }
        plan.timeline.append((inc.org_id, inc.id, "resolved", detail, at))
        plan.notices.append((inc, "resolved", at, inc.row()))

    def _close_retriggers(self, plan: _Plan) -> None:
        for inc, (n, first, last) in plan.retriggers.items():
            detail = {
                "events": n,
                "summary": last.summary,
                "severity": last.severity,
                "dedup_key": last.dedup_key,
                "source": last.source,
            }
            plan.timeline.append((inc.org_id, inc.id, "retriggered", detail, first))

    async def _plan_deliveries(self, plan: _Plan) -> None:
        """The outbox rows of what opened, was acknowledged or resolved: the
        organisation's default channels (an inbound incident has no check)."""
        router = self.router
        if router is None:
            return
        for inc, what, at, row in plan.notices:
            try:
                rows = await router.plan(inc.org_id, row, what, at=at, actor_id=None)
            except StoreUnavailableError:
                raise
            except Exception:
                # Never blocks the incident change (a database outage does, above).
                log.exception("planning notifications for inbound incident %s failed", inc.id)
                continue
            plan.deliveries += [(inc.org_id, int(row["id"]), d) for d in rows]

    # -- after the transaction ---------------------------------------------------------------

    def _undo(self, plan: _Plan) -> None:
        for inc, alias in reversed(plan.aliased):
            if alias in inc.aliases:
                self.index.unalias(inc, alias)
        for inc, state in plan.saved.items():
            inc.restore(state)
        for inc in plan.created:
            self.index.discard(inc)

    def _settle(self, plan: _Plan, ids: list[int]) -> None:
        self._touched.update(plan.keys_seen)
        if len(self._touched) > 100_000:
            self._touched.clear()
        for inc, new_id in zip(plan.created, ids, strict=True):
            inc.id = new_id
            self.index.by_id[new_id] = inc
        for inc, _, _, row in plan.notices:
            row["id"] = inc.id
        for inc in plan.resolved:
            self.index.discard(inc)

    def _after(self, plan: _Plan) -> None:
        if plan.deliveries and self.router is not None:
            self.router.written()
        self._publishing = True
        try:
            for inc, what, _, row in plan.notices:
                self._events.publish(
                    inc.org_id, _PUBLISHED[what], cast("dict[str, Any]", incident_json(row))
                )
        finally:
            self._publishing = False
        if not self.on_change:
            return
        # Opened, acknowledged or resolved, as they ended up (a retrigger changes
        # nothing escalation cares about).
        rows = [inc.row() for inc in {inc: None for inc, _, _, _ in plan.notices}]
        for callback in self.on_change:
            try:
                callback(rows)
            except Exception:
                log.exception("an inbound incident listener failed")

    # -- changes made elsewhere ----------------------------------------------------------------

    def _observe(self, org_id: int, type_: str, data: dict[str, Any]) -> None:
        """Event hub observer: people acknowledge and resolve inbound incidents through
        the incident manager; the index hears of it before the next batch."""
        if self._publishing or data.get("kind") != "inbound":
            return
        self._external.append((type_, data))

    def _apply_external(self) -> None:
        changes, self._external = self._external, []
        for type_, data in changes:
            inc = self.index.by_id.get(int(data["id"]))
            if inc is None:
                continue
            if type_ == "incident.resolve":
                inc.status = RESOLVED
                self.index.discard(inc)
            elif inc.status == OPEN:
                inc.status = ACKNOWLEDGED
                inc.acknowledged_at = time.time()
                inc.acknowledged_by = data.get("acknowledged_by")
                inc.escalation_due_at = None
