"""Playbooks: what runs by itself when an incident opens and matches (docs/playbooks.md).

`PlaybookRunner` hears of every incident the incident manager (checks) and the inbound
processor (integration keys) open, through their `on_change` listeners; it never blocks
them: `watch` only queues. A worker task matches each newly opened incident against the
organisation's active playbooks (an in-memory index per organisation, loaded at start,
kept for `CACHE_TTL_S` and reloaded at once when the API changes a playbook), claims each
run by inserting its `playbook_runs` row (unique per playbook and incident, so a run
happens once even when the incident is heard of twice, or by two processes), and runs
its steps in order in a background task (at most `MAX_RUNS` at a time). A failing step
is recorded `failed` and the next one still runs. The run ends with its outcome on the
run row, a `playbook_run` event on the incident's timeline and a `playbook.run` live
event.

The writes a run makes to the incident (its timeline event, a `set_severity`, the
outbox rows of `notify_channel` and `notify_user`) are group-committed: the runs of a
burst share `write_incident_batch` transactions.

`takeover` is the router's hook: the default notifications of an incident that an
active playbook with `suppress_default_notifications` matches are kept `suppressed`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from tocsin.checks import engine_check, probed_remotely, runnable
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.incidents import incident_json
from tocsin.notify.channels import notice
from tocsin.notify.router import Router
from tocsin.paging.contacts import plan_pages
from tocsin.store.base import (
    ConflictError,
    NotFoundError,
    Row,
    Store,
    StoreUnavailableError,
)
from tocsin.timestamps import iso
from tocsin.workflow.war_rooms import WarRoomOpen, WarRooms

log = logging.getLogger("tocsin.playbooks")

# -- what a playbook is ------------------------------------------------------------------

TRIGGER_TYPES: tuple[str, ...] = (
    "incident_opened",
    "severity",
    "service",
    "check_tag",
    "inbound_source",
)
# What clients also send for them (normalised: lower case, "-", "." and " " as "_").
TRIGGER_ALIASES: dict[str, str] = {
    "incident_created": "incident_opened",
    "incident_open": "incident_opened",
    "incident_new": "incident_opened",
    "incident": "incident_opened",
    "opened": "incident_opened",
    "any": "incident_opened",
    "severity_match": "severity",
    "incident_severity": "severity",
    "service_id": "service",
    "tag": "check_tag",
    "tags": "check_tag",
    "check_tags": "check_tag",
    "inbound": "inbound_source",
    "source": "inbound_source",
    "integration": "inbound_source",
    "integration_key": "inbound_source",
}
STEP_TYPES: tuple[str, ...] = (
    "add_note",
    "add_checklist",
    "notify_channel",
    "notify_user",
    "call_webhook",
    "open_war_room",
    "set_severity",
    "run_check",
)
STEP_ALIASES: dict[str, str] = {
    "note": "add_note",
    "checklist": "add_checklist",
    "notify": "notify_channel",
    "channel": "notify_channel",
    "notify_channels": "notify_channel",
    "notification": "notify_channel",
    "notify_person": "notify_user",
    "page_user": "notify_user",
    "page": "notify_user",
    "user": "notify_user",
    "webhook": "call_webhook",
    "http": "call_webhook",
    "war_room": "open_war_room",
    "create_war_room": "open_war_room",
    "severity": "set_severity",
    "change_severity": "set_severity",
    "check": "run_check",
    "run_check_now": "run_check",
}
# Incident severities: checks' incidents are critical or warning, inbound ones also
# error or info.
SEVERITIES: tuple[str, ...] = ("critical", "error", "warning", "info")
INCIDENT_KINDS: tuple[str, ...] = ("check", "inbound")
MAX_STEPS = 20

# How long an organisation's playbooks are kept in memory before they are read again
# (the API's own changes reload them at once).
CACHE_TTL_S = 10.0
# Check tags (for `check_tag`), kept as long.
TAGS_TTL_S = 10.0
# Runs at the same time; a burst waits its turn (never the incident flow).
MAX_RUNS = 64
# Newly opened incidents waiting to be matched; past this many the oldest go (logged).
MAX_QUEUED = 100_000
# Incidents matched per round.
ROUND = 500
# A step's longest run (a webhook's own timeout is shorter).
STEP_TIMEOUT_S = 60.0
WEBHOOK_TIMEOUT_S = 10.0
# Operations per group commit.
COMMIT_BATCH = 500
# Writes waiting for the group commit; past this the writers wait.
MAX_PENDING_WRITES = 10_000


def canonical(value: str, names: Sequence[str], aliases: Mapping[str, str]) -> str | None:
    """The canonical name of a trigger or step type a client sent, or None."""
    key = value.strip().lower().replace("-", "_").replace(".", "_").replace(" ", "_")
    if key in names:
        return key
    return aliases.get(key)


def matches(
    playbook: Mapping[str, Any], incident: Mapping[str, Any], tags: Collection[str] = ()
) -> bool:
    """Whether an active playbook's trigger matches an incident that just opened (`tags`:
    the tags of the incident's check)."""
    if not playbook.get("is_active", True):
        return False
    service_id = playbook.get("service_id")
    if service_id and incident.get("service_id") != service_id:
        return False
    cond: Mapping[str, Any] = playbook.get("trigger_conditions") or {}
    kinds = cond.get("kinds")
    if kinds and incident.get("kind") not in kinds:
        return False
    trigger = playbook["trigger_type"]
    if trigger == "incident_opened":
        return True
    if trigger == "severity":
        return incident.get("severity") in (cond.get("severity") or ())
    if trigger == "service":
        wanted = cond.get("service_id") or service_id
        return bool(wanted) and incident.get("service_id") == wanted
    if trigger == "check_tag":
        if incident.get("kind") != "check":
            return False
        want = {str(t).lower() for t in cond.get("tags") or ()}
        have = {str(t).lower() for t in tags}
        if cond.get("match") == "all":
            return bool(want) and want <= have
        return bool(want & have)
    if trigger == "inbound_source":
        if incident.get("kind") != "inbound":
            return False
        keys = cond.get("integration_key_ids") or ()
        if keys and incident.get("integration_key_id") not in keys:
            return False
        sources = {str(s).lower() for s in cond.get("sources") or ()}
        if sources:
            details = incident.get("details") or {}
            if str(details.get("source") or "").lower() not in sources:
                return False
        return bool(keys or sources)
    return False


class _Index:
    """An organisation's active playbooks arranged so that an incident is matched against
    the few that can match it, not all of them: `check_tag` playbooks by their tags (a
    check's incident looks up its own tags), the others in a list. `matches` still
    decides."""

    __slots__ = ("by_tag", "general", "rows", "suppress")

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        # Whether any of them takes the default notifications over.
        self.suppress = any(pb.get("suppress_default_notifications") for pb in rows)
        self.general: list[Row] = []
        self.by_tag: dict[str, list[Row]] = {}
        for pb in rows:
            cond = pb.get("trigger_conditions") or {}
            if pb["trigger_type"] == "check_tag" and cond.get("tags"):
                for tag in {str(t).lower() for t in cond["tags"]}:
                    self.by_tag.setdefault(tag, []).append(pb)
            else:
                self.general.append(pb)

    def candidates(self, incident: Mapping[str, Any], tags: Collection[str]) -> list[Row]:
        if not self.by_tag or incident.get("kind") != "check" or not tags:
            return self.general
        found: dict[int, Row] = {int(pb["id"]): pb for pb in self.general}
        for tag in tags:
            for pb in self.by_tag.get(str(tag).lower(), ()):
                found.setdefault(int(pb["id"]), pb)
        return [found[k] for k in sorted(found)]


def _takes_over_by_tag(playbook: Mapping[str, Any]) -> bool:
    return bool(playbook.get("suppress_default_notifications")) and (
        playbook.get("trigger_type") == "check_tag"
    )


# -- runs ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    org_id: int
    playbook: Row
    incident: dict[str, Any]
    run_id: int
    started_at: float
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class _Group:
    """Group commit of incident writes (`write_incident_batch` ops): whoever submits
    waits for the transaction their op went in."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ops: list[tuple[dict[str, Any], asyncio.Future[Row | None]]] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Semaphore(MAX_PENDING_WRITES)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="tocsin-playbook-writes"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, fut in self._ops:
            if not fut.done():
                fut.set_exception(StoreUnavailableError("stopping"))
        self._ops.clear()

    async def submit(self, op: dict[str, Any]) -> Row | None:
        if self._task is None:  # not started (embedded use): write it alone
            return (await self._store.write_incident_batch([op]))[0]
        async with self._room:
            fut: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
            self._ops.append((op, fut))
            self._wake.set()
            return await fut

    async def _run(self) -> None:
        while True:
            if not self._ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Let the runs of this turn of the loop add theirs.
            await asyncio.sleep(0)
            chunk, self._ops = self._ops[:COMMIT_BATCH], self._ops[COMMIT_BATCH:]
            try:
                results = await self._store.write_incident_batch([op for op, _ in chunk])
            except asyncio.CancelledError:
                for _, fut in chunk:
                    if not fut.done():
                        fut.set_exception(StoreUnavailableError("stopping"))
                raise
            except Exception:
                # One bad op (e.g. its incident deleted) must not fail the others.
                for op, fut in chunk:
                    try:
                        [one] = await self._store.write_incident_batch([op])
                    except Exception as exc:
                        if not fut.done():
                            fut.set_exception(exc)
                    else:
                        if not fut.done():
                            fut.set_result(one)
                continue
            for (_, fut), row in zip(chunk, results, strict=True):
                if not fut.done():
                    fut.set_result(row)


class StepFailed(Exception):
    """A step that did not do what it says (its message is the outcome's)."""


class StepSkipped(Exception):
    """A step with nothing to do for this incident."""


class PlaybookRunner:
    """Runs the playbooks that match an incident (checks' incidents through
    `IncidentManager.on_change`, inbound ones through `InboundProcessor.on_change`)."""

    def __init__(self, store: Store, engine: Engine, events: EventHub, router: Router) -> None:
        self._store = store
        self._engine = engine
        self._events = events
        self._router = router
        self.war_rooms = WarRooms(store, events)
        # org id -> (when it expires, its active playbooks)
        self._playbooks: dict[int, tuple[float, list[Row]]] = {}
        self._indexes: dict[int, _Index] = {}
        self._loading: dict[int, asyncio.Task[list[Row]]] = {}
        # check id -> (when it expires, its tags)
        self._tags: dict[int, tuple[float, list[str]]] = {}
        # org id -> when its checks' tags are read again (for the router's hook)
        self._tag_orgs: dict[int, float] = {}
        self._queue: collections.deque[Row] = collections.deque()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_RUNS)
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._group = _Group(store)
        self._http: aiohttp.ClientSession | None = None
        self._started = False
        # Counters (the bench and the operational metrics read them).
        self.dropped = 0
        self.runs_started = 0
        self.runs_finished = 0
        self.steps_failed = 0
        # Called with each finished run's row (tests, embedding programs).
        self.on_run: list[Callable[[Row], None]] = []

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=MAX_RUNS),
        )
        try:
            await self._load_all()
        except StoreUnavailableError as exc:
            log.warning("playbooks not loaded yet (database unavailable: %s)", exc)
        self._group.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-playbooks")
        self._started = True

    async def close(self, *, grace: float = 5.0) -> None:
        """Stop matching; runs under way get `grace` seconds, then are cancelled (their
        row says `interrupted`)."""
        self._started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._runs:
            _, pending = await asyncio.wait(set(self._runs), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for t in list(self._background):
            t.cancel()
        await self._group.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def pending(self) -> int:
        """Incidents waiting to be matched plus runs under way."""
        return len(self._queue) + len(self._runs)

    # -- the index of playbooks ----------------------------------------------------------------

    async def _load_all(self) -> None:
        by_org: dict[int, list[Row]] = {}
        after = 0
        for _ in range(100_000):  # bounded: 50 million playbooks
            page = await self._store.scan("playbooks", after_id=after, limit=500)
            for row in page:
                if row["is_active"]:
                    by_org.setdefault(int(row["organization_id"]), []).append(row)
            if len(page) < 500:
                break
            after = int(page[-1]["id"])
        expires = time.monotonic() + CACHE_TTL_S
        self._playbooks = {org: (expires, rows) for org, rows in by_org.items()}
        for org, rows in by_org.items():
            if any(_takes_over_by_tag(pb) for pb in rows):
                await self._load_tags(org)

    async def reload(self, org_id: int) -> list[Row]:
        """Read an organisation's active playbooks again (the API calls it after each
        change)."""
        rows: list[Row] = []
        for _ in range(1_000):
            page = await self._store.select(
                "playbooks", [org_id], where={"is_active": True}, limit=500, offset=len(rows)
            )
            rows += page
            if len(page) < 500:
                break
        self._playbooks[org_id] = (time.monotonic() + CACHE_TTL_S, rows)
        if any(_takes_over_by_tag(pb) for pb in rows):
            await self._load_tags(org_id)
        return rows

    async def _load_tags(self, org_id: int) -> None:
        """The tags of every check of an organisation whose playbooks take over
        notifications by check tag (the router's hook reads them without waiting)."""
        self._tag_orgs[org_id] = time.monotonic() + TAGS_TTL_S
        now = time.monotonic()
        seen = 0
        for _ in range(1_000):  # bounded: 500,000 checks
            page = await self._store.list_checks([org_id], limit=500, offset=seen)
            for row in page:
                self._tags[int(row["id"])] = (
                    now + TAGS_TTL_S,
                    [str(t) for t in row.get("tags") or []],
                )
            seen += len(page)
            if len(page) < 500:
                break

    def forget(self, org_id: int) -> None:
        self._playbooks.pop(org_id, None)

    async def playbooks_of(self, org_id: int) -> list[Row]:
        hit = self._playbooks.get(org_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._loading.get(org_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self.reload(org_id))
            self._loading[org_id] = task
            task.add_done_callback(lambda _t: self._loading.pop(org_id, None))
        return await asyncio.shield(task)

    def _cached(self, org_id: int) -> list[Row]:
        """What is in memory now (for the router's synchronous hook); an expired entry
        is used and read again in the background."""
        hit = self._playbooks.get(org_id)
        if hit is None or hit[0] <= time.monotonic():
            self._refresh_later(org_id)
        return hit[1] if hit is not None else []

    def _later(self, work: Any, what: str) -> None:
        if not self._started:
            work.close()
            return
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:
            work.close()
            return
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s failed: %s", what, t.exception())

        task.add_done_callback(done)

    def _refresh_later(self, org_id: int) -> None:
        if org_id in self._loading or not self._started:
            return
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self.reload(org_id))
            self._loading[org_id] = task
            self._background.add(task)

            def done(t: asyncio.Task[list[Row]]) -> None:
                self._loading.pop(org_id, None)
                self._background.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    log.warning("reloading playbooks of org %s failed: %s", org_id, t.exception())

            task.add_done_callback(done)

    async def _tags_of(self, org_id: int, check_ids: Collection[int]) -> dict[int, list[str]]:
        now = time.monotonic()
        out: dict[int, list[str]] = {}
        missing = []
        for cid in check_ids:
            hit = self._tags.get(cid)
            if hit is not None and hit[0] > now:
                out[cid] = hit[1]
            else:
                missing.append(cid)
        if missing:
            if len(self._tags) > 100_000:
                self._tags.clear()
            for row in await self._store.get_checks([org_id], missing):
                tags = [str(t) for t in row.get("tags") or []]
                self._tags[int(row["id"])] = (now + TAGS_TTL_S, tags)
                out[int(row["id"])] = tags
        return out

    # -- the router's hook -----------------------------------------------------------------

    def _index_of(self, org_id: int, rows: list[Row]) -> _Index:
        """The index of these rows (built once per reload of the organisation's list)."""
        index = self._indexes.get(org_id)
        if index is None or index.rows is not rows:
            index = self._indexes[org_id] = _Index(rows)
        return index

    def takeover(self, org_id: int, incident: Mapping[str, Any]) -> str | None:
        """`Router.takeovers` hook: the reason an incident's default notifications are
        suppressed (an active playbook with `suppress_default_notifications` matches
        it), or None."""
        index = self._index_of(org_id, self._cached(org_id))
        if not index.suppress:
            return None
        tags: list[str] = []
        if incident.get("check_id") is not None and index.by_tag:
            # What is known now (read again in the background when old): the hook never
            # waits for the database.
            if self._tag_orgs.get(org_id, 0.0) <= time.monotonic():
                self._tag_orgs[org_id] = time.monotonic() + TAGS_TTL_S
                self._later(self._load_tags(org_id), f"reading check tags of org {org_id}")
            hit = self._tags.get(int(incident["check_id"]))
            tags = hit[1] if hit is not None else []
        for pb in index.candidates(incident, tags):
            if not pb.get("suppress_default_notifications"):
                continue
            if pb["trigger_type"] == "check_tag" and not tags:
                continue
            if matches(pb, incident, tags):
                return f"taken over by playbook {pb['id']} ({pb['name']})"
        return None

    # -- hearing of incidents ------------------------------------------------------------------

    def watch(self, row: Row) -> None:
        """IncidentManager listener: an incident was opened, acknowledged or resolved.
        Only newly opened ones (status OPEN) are queued; never waits."""
        if row.get("status") != "OPEN" or not row.get("id") or int(row["id"]) <= 0:
            return
        hit = self._playbooks.get(int(row["organization_id"]))
        if hit is not None and not hit[1] and hit[0] > time.monotonic():
            return  # the organisation has no active playbook
        self._queue.append(dict(row))
        overflow = len(self._queue) - MAX_QUEUED
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.dropped += overflow
            log.error("playbook queue full: %d incidents skipped so far", self.dropped)
        self._wake.set()

    def watch_many(self, rows: Sequence[Row]) -> None:
        """InboundProcessor listener."""
        for row in rows:
            self.watch(row)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            chunk = [self._queue.popleft() for _ in range(min(ROUND, len(self._queue)))]
            try:
                await self._match(chunk)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except StoreUnavailableError as exc:
                log.warning("playbooks wait for the database: %s", exc)
                self._queue.extendleft(reversed(chunk))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("matching %d incidents against playbooks failed", len(chunk))

    async def _match(self, incidents: list[Row]) -> None:
        by_org: dict[int, list[Row]] = {}
        for inc in incidents:
            by_org.setdefault(int(inc["organization_id"]), []).append(inc)
        for org_id, rows in by_org.items():
            playbooks = await self.playbooks_of(org_id)
            if not playbooks:
                continue
            tags: dict[int, list[str]] = {}
            if any(pb["trigger_type"] == "check_tag" for pb in playbooks):
                tags = await self._tags_of(
                    org_id, {int(r["check_id"]) for r in rows if r.get("check_id") is not None}
                )
            index = self._index_of(org_id, playbooks)
            for inc in rows:
                inc_tags = tags.get(int(inc["check_id"]), []) if inc.get("check_id") else []
                for pb in index.candidates(inc, inc_tags):
                    if matches(pb, inc, inc_tags):
                        await self._slots.acquire()
                        task = asyncio.get_running_loop().create_task(
                            self._claim_and_run(org_id, pb, inc)
                        )
                        self._runs.add(task)
                        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        self._slots.release()

    # -- one run -----------------------------------------------------------------------------

    async def _claim_and_run(self, org_id: int, playbook: Row, incident: dict[str, Any]) -> None:
        now = time.time()
        try:
            claim = await self._store.insert(
                "playbook_runs",
                org_id,
                {
                    "playbook_id": playbook["id"],
                    "incident_id": incident["id"],
                    "status": "running",
                    "steps": [],
                    "started_at": now,
                },
            )
        except ConflictError:
            return  # run already (heard of twice, or by another process)
        except NotFoundError:
            return  # the playbook or the incident was deleted meanwhile
        except StoreUnavailableError:
            # Tried again with the incident's next round (a few times).
            tries = int(incident.get("_playbook_tries", 0)) + 1
            if tries <= 5:
                await asyncio.sleep(min(0.5 * 2**tries, 10.0))
                self._queue.append({**incident, "_playbook_tries": tries})
                self._wake.set()
            else:
                log.error(
                    "playbook %s skipped for incident %s: database unavailable",
                    playbook["id"],
                    incident["id"],
                )
            return
        except Exception:
            log.exception(
                "claiming playbook %s for incident %s failed", playbook["id"], incident["id"]
            )
            return
        self.runs_started += 1
        run = _Run(org_id, playbook, incident, int(claim["id"]), now)
        status = "interrupted"
        try:
            await self._steps(run)
            failed = sum(1 for o in run.outcomes if o["status"] == "failed")
            if failed == 0:
                status = "completed"
            elif failed == len(run.outcomes):
                status = "failed"
            else:
                status = "partial"
        finally:
            await asyncio.shield(self._finish(run, status))

    async def _steps(self, run: _Run) -> None:
        steps = run.playbook.get("steps") or []
        for i, step in enumerate(steps[:MAX_STEPS]):
            kind = str(step.get("type"))
            outcome: dict[str, Any] = {"step": i + 1, "type": kind}
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    message, extra = await self._step(run, i, kind, step)
                outcome.update(status="ok", message=message, detail=extra)
            except StepSkipped as exc:
                outcome.update(status="skipped", message=str(exc), detail={})
            except (StepFailed, NotFoundError, ConflictError) as exc:
                outcome.update(status="failed", message=str(exc) or type(exc).__name__, detail={})
            except TimeoutError:
                outcome.update(
                    status="failed", message=f"timed out after {STEP_TIMEOUT_S:g} s", detail={}
                )
            except asyncio.CancelledError:
                outcome.update(status="failed", message="interrupted (server stopping)", detail={})
                outcome["at"] = iso(time.time())
                run.outcomes.append(outcome)
                raise
            except Exception as exc:
                log.exception("playbook %s step %d failed", run.playbook["id"], i + 1)
                outcome.update(status="failed", message=f"{type(exc).__name__}: {exc}", detail={})
            outcome["at"] = iso(time.time())
            if outcome["status"] == "failed":
                self.steps_failed += 1
            run.outcomes.append(outcome)

    async def _finish(self, run: _Run, status: str) -> None:
        now = time.time()
        detail = {
            "run_id": run.run_id,
            "playbook_id": run.playbook["id"],
            "playbook_name": run.playbook["name"],
            "status": status,
            "steps": run.outcomes,
        }
        try:
            row = await self._store.update(
                "playbook_runs",
                [run.org_id],
                run.run_id,
                {"status": status, "steps": run.outcomes, "finished_at": now},
            )
            await self._group.submit(
                {
                    "org_id": run.org_id,
                    "incident_id": run.incident["id"],
                    "fields": {},
                    "event": {
                        "kind": "playbook_run",
                        "actor_id": None,
                        "at": now,
                        "detail": detail,
                    },
                }
            )
        except Exception:
            log.exception("recording playbook run %s failed", run.run_id)
            return
        self.runs_finished += 1
        if row is not None:
            self._events.publish(run.org_id, "playbook.run", run_json(row, run.playbook))
            for fn in self.on_run:
                try:
                    fn(row)
                except Exception:
                    log.exception("a playbook run listener failed")

    async def _step(
        self, run: _Run, i: int, kind: str, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Run one step: (its message, what it adds to the outcome); raises StepFailed
        or StepSkipped."""
        handler = _STEPS.get(kind)
        if handler is None:
            raise StepFailed(f"unknown step type {kind!r}")
        result: tuple[str, dict[str, Any]] = await handler(self, run, i, step)
        return result

    # -- steps -------------------------------------------------------------------------------

    async def _add_note(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        note = await self._note(run, str(step.get("body") or ""))
        return "note added", {"note_id": note["id"]}

    async def _add_checklist(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        items = [str(x) for x in step.get("items") or []]
        lines = [str(step["title"])] if step.get("title") else []
        lines += [f"- [ ] {item}" for item in items]
        note = await self._note(run, "\n".join(lines))
        return f"checklist of {len(items)} item(s) added", {"note_id": note["id"]}

    async def _note(self, run: _Run, body: str) -> Row:
        return await self._store.insert(
            "incident_notes",
            run.org_id,
            {"incident_id": run.incident["id"], "author_id": None, "body": body},
        )

    def _notice(self, run: _Run, i: int, step: Mapping[str, Any]) -> dict[str, Any]:
        inc = run.incident
        text = step.get("message") or f"Playbook {run.playbook['name']}: {inc.get('title')}"
        check = self._router.check_info(inc.get("check_id"))
        return notice(
            event="playbook",
            summary=str(text),
            status="DOWN" if inc.get("kind") == "check" else "TRIGGERED",
            organization_id=run.org_id,
            at=time.time(),
            severity=str(inc.get("severity") or "warning"),
            check={**check, "id": inc.get("check_id")} if check else None,
            extra={
                "incident_id": inc["id"],
                "incident_title": inc.get("title"),
                "playbook_id": run.playbook["id"],
                "playbook_name": run.playbook["name"],
                "playbook_run_id": run.run_id,
                "step": i + 1,
            },
        )

    async def _notify_channel(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        channel_id = int(step["channel_id"])
        ch = await self._router.channel(run.org_id, channel_id)
        if ch is None:
            raise StepFailed(f"channel {channel_id} not found")
        if not ch["is_active"]:
            raise StepFailed(f"channel {channel_id} is paused")
        row = {
            "channel_id": channel_id,
            "check_id": run.incident.get("check_id"),
            "event": "playbook",
            "dedup_key": f"playbook:{run.run_id}:s{i + 1}:{channel_id}",
            "payload": self._notice(run, i, step),
            "status": "pending",
            "next_attempt_at": time.time(),
        }
        await self._write(run, deliveries=[row])
        self._router.written()
        return f"queued to channel {channel_id}", {"channel_id": channel_id}

    async def _notify_user(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        user_id = int(step["user_id"])
        incident = {**run.incident, "organization_id": run.org_id}
        rows = await plan_pages(
            self._store,
            incident,
            [user_id],
            at=time.time(),
            key=f"playbook{run.run_id}:s{i + 1}",
            public_url=self._router.public_url,
        )
        if not rows:
            raise StepFailed(
                f"user {user_id} cannot be paged (not an active member, or no verified"
                " contact method)"
            )
        for r in rows:
            r["payload"]["incident_id"] = run.incident["id"]
        await self._write(run, deliveries=rows)
        self._router.written()
        return f"paged user {user_id} on {len(rows)} contact method(s)", {
            "user_id": user_id,
            "pages": len(rows),
        }

    async def _call_webhook(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if self._http is None:
            raise StepFailed("the runner is not started")
        url = str(step["url"])
        body = {
            "event": "playbook.step",
            "organization_id": run.org_id,
            "incident": incident_json(run.incident),
            "playbook": {
                "id": run.playbook["id"],
                "name": run.playbook["name"],
                "run_id": run.run_id,
                "step": i + 1,
            },
        }
        headers = {str(k): str(v) for k, v in (step.get("headers") or {}).items()}
        timeout = aiohttp.ClientTimeout(total=float(step.get("timeout_s") or WEBHOOK_TIMEOUT_S))
        try:
            async with self._http.post(url, json=body, headers=headers, timeout=timeout) as resp:
                code = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StepFailed(f"POST {url} failed: {type(exc).__name__}: {exc}") from None
        if not 200 <= code < 300:
            raise StepFailed(f"POST {url} answered {code}")
        return f"POST {url} answered {code}", {"response_code": code}

    async def _open_war_room(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        try:
            room = await self.war_rooms.open(
                run.org_id,
                run.incident,
                title=step.get("title") or None,
                member_ids=[int(u) for u in step.get("member_ids") or []],
                actor_id=None,
                why=f"opened by playbook {run.playbook['id']} ({run.playbook['name']})",
            )
        except WarRoomOpen as exc:
            return f"war room {exc.room['id']} was open already", {"war_room_id": exc.room["id"]}
        return f"war room {room['id']} opened", {"war_room_id": room["id"]}

    async def _set_severity(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        severity = str(step["severity"])
        before = run.incident.get("severity")
        if before == severity:
            raise StepSkipped(f"the severity is {severity} already")
        now = time.time()
        row = await self._write(
            run,
            fields={"severity": severity},
            event={
                "kind": "severity_changed",
                "actor_id": None,
                "at": now,
                "detail": {
                    "from": before,
                    "to": severity,
                    "reason": f"playbook {run.playbook['id']} ({run.playbook['name']})",
                },
            },
            only_if_status=("OPEN", "ACKNOWLEDGED"),
        )
        if row is None:
            raise StepSkipped("the incident is resolved")
        run.incident["severity"] = severity
        return f"severity {before} -> {severity}", {"from": before, "to": severity}

    async def _run_check(
        self, run: _Run, i: int, step: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        check_id = step.get("check_id") or run.incident.get("check_id")
        if not check_id:
            raise StepSkipped("the incident has no check and the step names none")
        row = await self._store.get_check([run.org_id], int(check_id))
        if row is None:
            raise StepFailed(f"check {check_id} not found")
        if probed_remotely(row):
            raise StepSkipped(f"check {check_id} is probed by its agents, not here")
        if row["type"] == "heartbeat" or not runnable(row["type"]):
            raise StepSkipped(f"{row['type']} checks cannot be probed on demand")
        try:
            result = await self._engine.run_once(engine_check(row, self._engine), record=True)
        except ValueError as exc:
            raise StepFailed(f"check {check_id} cannot run: {exc}") from None
        status = result.status.value if hasattr(result.status, "value") else str(result.status)
        return f"check {check_id} ran: {status}", {"check_id": int(check_id), "result": status}

    async def _write(
        self,
        run: _Run,
        *,
        fields: Mapping[str, Any] | None = None,
        event: Mapping[str, Any] | None = None,
        deliveries: Sequence[Mapping[str, Any]] = (),
        only_if_status: Collection[str] | None = None,
    ) -> Row | None:
        op: dict[str, Any] = {
            "org_id": run.org_id,
            "incident_id": run.incident["id"],
            "fields": dict(fields or {}),
            "event": event,
            "deliveries": list(deliveries),
        }
        if only_if_status is not None:
            op["only_if_status"] = tuple(only_if_status)
        row = await self._group.submit(op)
        if row is None and only_if_status is None:
            raise StepFailed("the incident was deleted")
        return row


_STEPS: dict[str, Any] = {
    "add_note": PlaybookRunner._add_note,
    "add_checklist": PlaybookRunner._add_checklist,
    "notify_channel": PlaybookRunner._notify_channel,
    "notify_user": PlaybookRunner._notify_user,
    "call_webhook": PlaybookRunner._call_webhook,
    "open_war_room": PlaybookRunner._open_war_room,
    "set_severity": PlaybookRunner._set_severity,
    "run_check": PlaybookRunner._run_check,
}


def run_json(row: Row, playbook: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run as the API answers it (`api/playbooks.py` types it)."""
    started, finished = row["started_at"], row["finished_at"]
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "playbook_id": row["playbook_id"],
        "playbook_name": playbook.get("name") if playbook else None,
        "incident_id": row["incident_id"],
        "status": row["status"],
        "steps": row["steps"] or [],
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_s": None if finished is None else round(finished - started, 3),
    }


RUN_STATUSES: Final = ("running", "completed", "partial", "failed", "interrupted")
