"""Incidents from verdict transitions: DOWN opens a critical incident, DEGRADED or LATE a
warning one (raised to critical if the check then goes DOWN), recovery to UP resolves it.
Users acknowledge, resolve and annotate them; every change is a timeline row and a live
event. Transitions arrive from the engine on the event loop and are applied by one task,
in order, so the engine never waits for the database."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from typing_extensions import TypedDict

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.models import Check, Result, Status, StatusChange
from tocsin.store.base import ConflictError, NotFoundError, Row, Store, StoreUnavailableError
from tocsin.timestamps import iso

if TYPE_CHECKING:
    from tocsin.notify.router import Router
from tocsin.workflow.service_book import ServiceBook

log = logging.getLogger("tocsin.incidents")

IncidentStatus = Literal["OPEN", "ACKNOWLEDGED", "RESOLVED"]
OPEN: Final = "OPEN"
ACKNOWLEDGED: Final = "ACKNOWLEDGED"
RESOLVED: Final = "RESOLVED"
INCIDENT_STATUSES: tuple[IncidentStatus, ...] = (OPEN, ACKNOWLEDGED, RESOLVED)

CRITICAL = "critical"
WARNING = "warning"
_SEVERITY_RANK = {WARNING: 1, CRITICAL: 2}
# The verdicts that open (or worsen) an incident, and at which severity.
OPENING_SEVERITY = {Status.DOWN: CRITICAL, Status.DEGRADED: WARNING, Status.LATE: WARNING}

MAX_BACKOFF = 5.0


def escalation_start(policy_id: int | None, at: float) -> dict[str, Any]:
    """A new incident's escalation columns: with a policy, its first step is due at once
    (written with the incident, so a crash right after cannot lose it)."""
    if not policy_id:
        return {}
    return {
        "escalation_policy_id": int(policy_id),
        "escalation_step": 0,
        "escalation_round": 0,
        "escalation_due_at": at,
    }


# Transitions are rare next to results; past this many waiting (a long database outage)
# the oldest go, so memory stays bounded.
MAX_PENDING = 100_000
# Transitions applied per store transaction (see `apply_many`).
BATCH = 500


class IncidentJson(TypedDict):
    id: int
    organization_id: int
    # null for an incident that is not a check's (kind `inbound`)
    check_id: int | None
    kind: str
    status: IncidentStatus
    severity: str
    title: str
    cause: str | None
    # each source's status when the incident opened (`central`, `agent:5`, `geo:eu`…)
    sources: dict[str, Status]
    started_at: str
    acknowledged_at: str | None
    acknowledged_by: int | None
    resolved_at: str | None
    resolved_by: int | None
    duration_s: float | None
    # inbound incidents: the integration key, the sender's dedup key, how many events
    # reached it, when the last one came and the payload's source, component, group and
    # custom details (null and empty for a check's incident)
    integration_key_id: int | None
    dedup_key: str | None
    event_count: int
    last_event_at: str | None
    details: dict[str, Any]
    # the escalation policy paging this incident, the next step (from 1) and round, and
    # when it is due (null once acknowledged, resolved or at the end of the policy)
    escalation: EscalationJson | None


class EscalationJson(TypedDict):
    policy_id: int
    next_step: int
    round: int
    next_at: str | None


def escalation_json(row: Row) -> EscalationJson | None:
    if row.get("escalation_policy_id") is None:
        return None
    return {
        "policy_id": row["escalation_policy_id"],
        "next_step": int(row.get("escalation_step") or 0) + 1,
        "round": int(row.get("escalation_round") or 0),
        "next_at": iso(row.get("escalation_due_at")),
    }


def incident_json(row: Row) -> IncidentJson:
    started = row["started_at"]
    ended = row["resolved_at"]
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "check_id": row["check_id"],
        "kind": row["kind"],
        "status": row["status"],
        "severity": row["severity"],
        "title": row["title"],
        "cause": row["cause"],
        "sources": row["sources"],
        "started_at": iso(started),
        "acknowledged_at": iso(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"],
        "resolved_at": iso(ended),
        "resolved_by": row["resolved_by"],
        "duration_s": None if ended is None else round(ended - started, 3),
        "integration_key_id": row.get("integration_key_id"),
        "dedup_key": row.get("dedup_key"),
        "event_count": int(row.get("event_count") or 0),
        "last_event_at": iso(row.get("last_event_at")),
        "details": row.get("details") or {},
        "escalation": escalation_json(row),
    }


class NoteJson(TypedDict):
    id: int
    incident_id: int
    author_id: int | None
    body: str
    created_at: str


def note_json(row: Row) -> NoteJson:
    return {
        "id": row["id"],
        "incident_id": row["incident_id"],
        "author_id": row["author_id"],
        "body": row["body"],
        "created_at": iso(row["created_at"]),
    }


class TimelineEventJson(TypedDict):
    id: int
    # opened, severity_changed, acknowledged, note, resolved
    kind: str
    at: str
    # null for what the server did by itself
    actor_id: int | None
    detail: dict[str, Any]


def timeline_json(row: Row) -> TimelineEventJson:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "at": iso(row["at"]),
        "actor_id": row["actor_id"],
        "detail": row["detail"],
    }


class CheckDirectory:
    """Which organisation owns each check the engine runs. Engine output carries only
    check ids; this learns owners from the store on a miss. An entry is bound to the
    engine's `Check` object it was learnt for, so a check deleted and re-created under
    the same id (SQLite may reuse ids) is looked up again, never attributed to the old
    owner."""

    def __init__(self, store: Store, engine: Engine, *, full_refresh_every: float = 1.0) -> None:
        self._store = store
        self._engine = engine
        self._owners: dict[int, tuple[Check, int]] = {}
        self._orgs: set[int] = set()
        self._full_refresh_every = full_refresh_every
        self._last_full = -float("inf")

    def owner(self, check_id: int) -> int | None:
        """The check's organisation, if known and the check is still the engine's."""
        entry = self._owners.get(check_id)
        if entry is None:
            return None
        current = self._engine.get(check_id)
        if current is None or current is not entry[0]:
            return None
        return entry[1]

    def check(self, check_id: int) -> Check | None:
        return self._engine.get(check_id)

    async def learn(self, check_ids: Iterable[int]) -> None:
        """Look up the owners of the checks not known yet (the engine's checks only: a
        removed check's late output has no owner to tell)."""
        snapshot = {
            cid: check
            for cid in set(check_ids)
            if self.owner(cid) is None and (check := self._engine.get(cid)) is not None
        }
        if not snapshot:
            return
        missing = []
        for cid, check in snapshot.items():
            row = await self._store.get_check(self._orgs, cid) if self._orgs else None
            if row is None:
                missing.append(cid)
            else:
                self._bind(cid, check, int(row["organization_id"]))
        if missing:
            await self._full_refresh({cid: snapshot[cid] for cid in missing})

    async def _full_refresh(self, snapshot: dict[int, Check]) -> None:
        # NOTE: the store has no unscoped lookup of one check's organisation, so a check
        # of an organisation not seen yet costs a read of every check; rate-limited.
        wait = self._last_full + self._full_refresh_every - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_full = time.monotonic()
        rows = await self._store.all_checks()
        self._orgs = {int(r["organization_id"]) for r in rows}
        for row in rows:
            check = snapshot.get(row["id"])
            if check is not None:
                self._bind(row["id"], check, int(row["organization_id"]))

    def _bind(self, check_id: int, check: Check, org_id: int) -> None:
        # Bound to the object seen before the read: if the engine's check changed
        # meanwhile, the next lookup misses and asks again.
        self._owners[check_id] = (check, org_id)
        self._orgs.add(org_id)


class IncidentManager:
    """Opens, raises and resolves incidents from verdict transitions, and applies the
    users' acknowledgements, resolutions and notes. One lock orders every change to
    incidents made in this process."""

    def __init__(
        self, store: Store, engine: Engine, events: EventHub, router: Router | None = None
    ) -> None:
        self._store = store
        self._engine = engine
        self._events = events
        self.directory = CheckDirectory(store, engine)
        # Services of checks: their escalation policy and channels (set by the
        # composition root; None: services are not looked at).
        self.services: ServiceBook | None = None
        self._pending: collections.deque[StatusChange] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        # Plans the outbox rows of every change, written in the change's own
        # transaction (None: incidents without notifications, e.g. embedded).
        self.router = router
        # Called with each incident row this manager opened, acknowledged or resolved,
        # once written (the escalation arms or cancels its next step from it).
        self.on_change: list[Callable[[Row], None]] = []

    def start(self) -> None:
        self._engine.add_listener(self.on_batch)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-incidents")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._engine.remove_listener(self.on_batch)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        """Engine listener (on the loop): queue the transitions, never wait."""
        if not changes:
            return
        self._pending.extend(changes)
        overflow = len(self._pending) - MAX_PENDING
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
            log.error("incident queue full: dropped %d transitions so far", self.dropped)
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        reconciled = False
        while True:
            try:
                if not reconciled:
                    try:
                        await self._reconcile()
                    except StoreUnavailableError:
                        raise
                    except Exception:
                        log.exception("reconciling open incidents failed; skipped")
                    reconciled = True
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                n = len(self._pending)
                try:
                    await self.directory.learn(self._pending[i].check_id for i in range(n))
                except StoreUnavailableError:
                    raise
                except Exception:
                    # Never a crash loop: checks whose owner is unknown are skipped.
                    log.exception("looking up the checks' organisations failed")
                while n > 0 and self._pending:
                    chunk = [self._pending[i] for i in range(min(BATCH, n, len(self._pending)))]
                    try:
                        await self.apply_many(chunk)
                    except StoreUnavailableError:
                        raise
                    except Exception:
                        # E.g. an incident opened elsewhere meanwhile: one at a time, so
                        # the conflict is handled and one bad change blocks nothing else.
                        log.info("batch of %d transitions failed; one at a time", len(chunk))
                        for change in chunk:
                            try:
                                await self.apply(change)
                            except StoreUnavailableError:
                                raise
                            except Exception:
                                log.exception("incident update failed for %s", change)
                    for _ in chunk:
                        if self._pending:
                            self._pending.popleft()
                    n -= len(chunk)
                backoff = 0.1
            except StoreUnavailableError as exc:
                log.warning("incidents wait for the database: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("incident manager error; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _reconcile(self) -> None:
        """After a restart: an incident still open for a check whose stored verdict is UP
        missed its recovery (e.g. a crash in between); resolve it."""
        rows = await self._store.all_checks()
        up = {r["id"] for r in rows if r["status"] == Status.UP.value}
        if not up:
            return
        # One read of the unresolved incidents of those checks (not a walk through every
        # open incident: inbound ones can be many).
        stale = await self._store.open_check_incidents(up)
        for inc in stale:
            async with self._lock:
                await self._resolve(inc, actor=None, at=time.time(), why="recovered while stopped")

    async def open_incident(self, org_id: int, check_id: int) -> Row | None:
        for status in (OPEN, ACKNOWLEDGED):
            rows = await self._store.select(
                "incidents", [org_id], where={"check_id": check_id, "status": status}, limit=1
            )
            if rows:
                return rows[0]
        return None

    async def apply(self, change: StatusChange) -> None:
        """Apply one transition (the check's owner must be known to the directory)."""
        org_id = self.directory.owner(change.check_id)
        if org_id is None:
            return  # the check was removed meanwhile
        severity = OPENING_SEVERITY.get(change.current)
        if severity is None and change.current is not Status.UP:
            return
        async with self._lock:
            current = await self.open_incident(org_id, change.check_id)
            if change.current is Status.UP:
                if current is not None:
                    await self._resolve(current, actor=None, at=change.at, why=change.reason)
                return
            assert severity is not None
            if change.in_maintenance:
                return  # recorded by the engine, not alertable
            if current is None:
                await self._open(org_id, change, severity)
            elif _SEVERITY_RANK[severity] > _SEVERITY_RANK.get(current["severity"], 0):
                await self._raise(current, severity, change)

    async def apply_many(self, changes: Sequence[StatusChange]) -> None:
        """Apply transitions in order, all in ONE store transaction (with their outbox
        rows). Raises (nothing applied) on a conflict with a change made elsewhere; the
        caller then applies them one at a time with `apply`."""
        async with self._lock:
            ids = {c.check_id for c in changes}
            # check id -> the open incident: the stored row, or the op opening it here.
            open_: dict[int, dict[str, Any]] = {}
            for row in await self._store.open_check_incidents(ids):
                if row["check_id"] in ids:
                    open_[row["check_id"]] = {"row": row, "id": row["id"], "ref": None}
            if self.router is not None:
                pairs = set()
                for c in changes:
                    org = self.directory.owner(c.check_id)
                    if org is not None:
                        pairs.add((org, c.check_id))
                try:
                    await self.router.prefetch(pairs)
                except StoreUnavailableError:
                    raise
                except Exception:
                    log.exception("looking up the channels of %d checks failed", len(pairs))
            ops: list[dict[str, Any]] = []
            posts: list[str | None] = []
            for change in changes:
                org_id = self.directory.owner(change.check_id)
                if org_id is None:
                    continue
                severity = OPENING_SEVERITY.get(change.current)
                if severity is None and change.current is not Status.UP:
                    continue
                cur = open_.get(change.check_id)
                if cur is not None and cur["row"]["organization_id"] != org_id:
                    continue  # a stale row of a reused check id: leave it to `apply`
                if change.current is Status.UP:
                    if cur is None:
                        continue
                    fields = {
                        "status": RESOLVED,
                        "resolved_at": change.at,
                        "resolved_by": None,
                        "escalation_due_at": None,
                    }
                    detail = {"automatic": True, "reason": change.reason}
                    plan = {**cur["row"], **fields}
                    ops.append(
                        {
                            "org_id": org_id,
                            "incident_id": cur["id"],
                            "ref": cur["ref"],
                            "fields": fields,
                            "event": {"kind": "resolved", "at": change.at, "detail": detail},
                            "deliveries": await self._plan(
                                org_id, plan, "resolved", change.at, None
                            ),
                            "only_if_status": (OPEN, ACKNOWLEDGED),
                        }
                    )
                    posts.append("incident.resolve")
                    del open_[change.check_id]
                    continue
                assert severity is not None
                if change.in_maintenance:
                    continue
                if cur is None:
                    fields = await self._with_service(org_id, self._open_fields(change, severity))
                    detail = {
                        "status": change.current.value,
                        "severity": severity,
                        "reason": change.reason,
                    }
                    row = {**fields, "organization_id": org_id}
                    ops.append(
                        {
                            "org_id": org_id,
                            "incident_id": None,
                            "fields": fields,
                            "event": {"kind": "opened", "at": change.at, "detail": detail},
                            "deliveries": await self._plan(org_id, row, "opened", change.at, None),
                        }
                    )
                    posts.append("incident.new")
                    open_[change.check_id] = {"row": row, "id": None, "ref": len(ops) - 1}
                elif _SEVERITY_RANK[severity] > _SEVERITY_RANK.get(cur["row"]["severity"], 0):
                    detail = {
                        "from": cur["row"]["severity"],
                        "to": severity,
                        "status": change.current.value,
                        "reason": change.reason,
                    }
                    cur["row"] = {**cur["row"], "severity": severity}
                    plan = {**cur["row"], "cause": change.reason or cur["row"].get("cause")}
                    ops.append(
                        {
                            "org_id": org_id,
                            "incident_id": cur["id"],
                            "ref": cur["ref"],
                            "fields": {"severity": severity},
                            "event": {
                                "kind": "severity_changed",
                                "at": change.at,
                                "detail": detail,
                            },
                            "deliveries": await self._plan(
                                org_id, plan, "escalated", change.at, None
                            ),
                            "only_if_status": (OPEN, ACKNOWLEDGED),
                        }
                    )
                    posts.append(None)
            if not ops:
                return
            results = await self._store.write_incident_batch(ops)
            for written, post in zip(results, posts, strict=True):
                if written is not None and post is not None:
                    self._publish(post, written)
            self._notified()

    def _open_fields(self, change: StatusChange, severity: str) -> dict[str, Any]:
        check = self.directory.check(change.check_id)
        name = check.name if check is not None and check.name else f"check {change.check_id}"
        return {
            "check_id": change.check_id,
            "kind": "check",
            "status": OPEN,
            "severity": severity,
            "title": f"{name} is {change.current.value}",
            "cause": change.reason,
            "sources": {k: v.value for k, v in change.sources.items()},
            "started_at": change.at,
            **escalation_start(
                check.options.get("escalation_policy_id") if check is not None else None, change.at
            ),
        }

    async def _with_service(self, org_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """A new incident of a check that belongs to a service belongs to it too, and
        takes the service's escalation policy when the check has none."""
        check = self.directory.check(fields["check_id"])
        service_id = check.options.get("service_id") if check is not None else None
        if not service_id or self.services is None:
            return fields
        fields["service_id"] = service_id
        if fields.get("escalation_policy_id") is None:
            try:
                policy = await self.services.policy(org_id, service_id)
            except StoreUnavailableError:
                raise
            except Exception:
                log.exception("reading service %s failed", service_id)
                policy = None
            fields.update(escalation_start(policy, fields["started_at"]))
        return fields

    async def _open(self, org_id: int, change: StatusChange, severity: str) -> None:
        fields = await self._with_service(org_id, self._open_fields(change, severity))
        detail = {"status": change.current.value, "severity": severity, "reason": change.reason}
        try:
            row = await self._store.write_incident_change(
                org_id,
                None,
                fields,
                event={"kind": "opened", "actor_id": None, "at": change.at, "detail": detail},
                deliveries=await self._plan(org_id, fields, "opened", change.at, None),
            )
        except ConflictError:
            # One is open already (made elsewhere since we looked): worsen it if needed.
            existing = await self.open_incident(org_id, change.check_id)
            if existing is not None and _SEVERITY_RANK[severity] > _SEVERITY_RANK.get(
                existing["severity"], 0
            ):
                await self._raise(existing, severity, change)
            return
        assert row is not None
        self._notified()
        self._publish("incident.new", row)

    async def _raise(self, row: Row, severity: str, change: StatusChange) -> None:
        org_id = int(row["organization_id"])
        detail = {
            "from": row["severity"],
            "to": severity,
            "status": change.current.value,
            "reason": change.reason,
        }
        merged = {**row, "severity": severity, "cause": change.reason or row["cause"]}
        updated = await self._store.write_incident_change(
            org_id,
            row["id"],
            {"severity": severity},
            event={"kind": "severity_changed", "actor_id": None, "at": change.at, "detail": detail},
            deliveries=await self._plan(org_id, merged, "escalated", change.at, None),
            only_if_status=(OPEN, ACKNOWLEDGED),
        )
        if updated is not None:
            self._notified()

    async def _resolve(self, row: Row, *, actor: int | None, at: float, why: str | None) -> Row:
        org_id = int(row["organization_id"])
        fields = {
            "status": RESOLVED,
            "resolved_at": at,
            "resolved_by": actor,
            "escalation_due_at": None,
        }
        updated = await self._store.write_incident_change(
            org_id,
            row["id"],
            fields,
            event={
                "kind": "resolved",
                "actor_id": actor,
                "at": at,
                "detail": {"automatic": actor is None, "reason": why},
            },
            deliveries=await self._plan(org_id, {**row, **fields}, "resolved", at, actor),
            only_if_status=(OPEN, ACKNOWLEDGED),
        )
        if updated is None:
            return row
        self._notified()
        self._publish("incident.resolve", updated)
        return updated

    async def _plan(
        self,
        org_id: int,
        incident: dict[str, Any],
        event: str,
        at: float,
        actor: int | None,
    ) -> list[dict[str, Any]]:
        """The outbox rows of one transition (none without a router). A failure to plan
        them never blocks the incident change (but a database outage does: the change
        is retried as a whole)."""
        if self.router is None:
            return []
        try:
            return await self.router.plan(org_id, incident, event, at=at, actor_id=actor)
        except StoreUnavailableError:
            raise
        except Exception:
            log.exception("planning notifications for incident %s failed", incident.get("id"))
            return []

    def _notified(self) -> None:
        if self.router is not None:
            self.router.written()

    async def _event(
        self, incident: Row, kind: str, actor: int | None, at: float, detail: dict[str, Any]
    ) -> None:
        await self._store.insert(
            "incident_events",
            incident["organization_id"],
            {
                "incident_id": incident["id"],
                "kind": kind,
                "actor_id": actor,
                "detail": detail,
                "at": at,
            },
        )

    def _publish(self, type_: str, row: Row) -> None:
        self._events.publish(
            row["organization_id"], type_, cast("dict[str, Any]", incident_json(row))
        )
        for listener in self.on_change:
            try:
                listener(row)
            except Exception:
                log.exception("incident change listener failed")

    # -- what users do ------------------------------------------------------------------

    async def acknowledge(self, incident: Row, user_id: int) -> Row:
        """Acknowledge an open incident (again: no change). ConflictError if resolved."""
        async with self._lock:
            row = await self._fresh(incident)
            if row["status"] == RESOLVED:
                raise ConflictError("the incident is already resolved")
            if row["status"] == ACKNOWLEDGED:
                return row
            now = time.time()
            org_id = int(row["organization_id"])
            fields = {
                "status": ACKNOWLEDGED,
                "acknowledged_at": now,
                "acknowledged_by": user_id,
                "escalation_due_at": None,
            }
            updated = await self._store.write_incident_change(
                org_id,
                row["id"],
                fields,
                event={"kind": "acknowledged", "actor_id": user_id, "at": now, "detail": {}},
                deliveries=await self._plan(
                    org_id, {**row, **fields}, "acknowledged", now, user_id
                ),
                only_if_status=(OPEN,),
            )
            if updated is None:
                # Changed elsewhere since it was read (an inbound event resolved or
                # acknowledged it): answer for its state now.
                now_row = await self._fresh(row)
                if now_row["status"] == RESOLVED:
                    raise ConflictError("the incident is already resolved")
                return now_row
            self._notified()
            self._publish("incident.ack", updated)
            return updated

    async def resolve(self, incident: Row, user_id: int) -> Row:
        """Resolve an incident by hand. ConflictError if it is resolved already."""
        async with self._lock:
            row = await self._fresh(incident)
            if row["status"] == RESOLVED:
                raise ConflictError("the incident is already resolved")
            return await self._resolve(row, actor=user_id, at=time.time(), why="resolved by hand")

    async def add_note(self, incident: Row, user_id: int, body: str) -> Row:
        async with self._lock:
            note = await self._store.insert(
                "incident_notes",
                incident["organization_id"],
                {"incident_id": incident["id"], "author_id": user_id, "body": body},
            )
            await self._event(
                incident, "note", user_id, note["created_at"], {"note_id": note["id"], "body": body}
            )
            return note

    async def _fresh(self, incident: Row) -> Row:
        row = await self._store.get("incidents", [incident["organization_id"]], incident["id"])
        if row is None:
            raise NotFoundError("Incident not found")
        return row
