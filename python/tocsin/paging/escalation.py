"""Escalation: pages the targets of an incident's policy, step after step, until someone
acknowledges or the incident resolves.

The walk's position is on the incident's row (`escalation_step`, `escalation_round`,
`escalation_due_at`), written with the incident's own changes: an incident opens with
step 1 due at once, an acknowledgement or a resolution clears the due time. The delays
run on the engine's native timing wheel (`Engine.timer_channel("escalation")`, keyed by
incident id), not in a polling loop; at start-up every pending step is armed again from
the store, so a step due during a restart fires once, as soon as the server is back.

A step that fires is applied in one transaction: the next position, the timeline event
(`escalated`: who was paged, how, and who could not be reached) and the outbox rows of
its pages (contact methods through `contacts.plan_pages`, channels through the router).
The write only happens while the incident is still OPEN (an acknowledgement that wins
the race pages nobody), and every page's dedup key names the incident, round, step and
target, so nothing is sent twice."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from tocsin import oncall
from tocsin.engine import Engine
from tocsin.models import FiredTimer
from tocsin.notify.router import Router
from tocsin.paging import contacts
from tocsin.paging.policies import PAGED_TEAM_ROLES, Policy, Step, after, policy_of
from tocsin.store.base import Principal, Row, Store, StoreUnavailableError

log = logging.getLogger("tocsin.paging")

OPEN = "OPEN"
# Steps applied per store transaction.
BATCH = 500
# A step is applied when its due time is at most this far ahead (the wheel's tick).
EARLY_S = 0.05
MAX_BACKOFF = 5.0
# An incident whose step failed (not the database: its data) is tried again this later.
RETRY_S = 30.0
# Steps falling due one after another are gathered this long into one transaction: a
# transaction (its commit) costs far more than a step, so a steady stream of due steps
# goes out in a few tens of transactions a second, not one per millisecond tick.
LINGER_S = 0.02

PlanPages = Callable[..., Awaitable[list[dict[str, Any]]]]


class Escalator:
    """Arms, fires and records escalation steps; one per server."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        router: Router | None = None,
        *,
        plan_pages: PlanPages = contacts.plan_pages,
    ) -> None:
        self._store = store
        self._timers = engine.timer_channel("escalation")
        self._router = router
        self._plan_pages = plan_pages
        self._due: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps_fired = 0
        # How late each step was applied (seconds after its due time), for the bench.
        self.lateness: collections.deque[float] = collections.deque(maxlen=1_000_000)

    async def start(self) -> None:
        self._timers.listen(self._on_fire)
        pending = await self._store.escalating_incidents()
        self._timers.arm(pending)
        if pending:
            log.info("escalation: %d pending steps armed again", len(pending))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-escalation")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def watch(self, row: Mapping[str, Any]) -> None:
        """An incident changed (opened, acknowledged, resolved): arm its next step, or
        cancel it."""
        self.watch_many([row])

    def watch_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        arm: list[tuple[int, float]] = []
        cancel: list[int] = []
        for row in rows:
            due = row.get("escalation_due_at")
            if row.get("status") == OPEN and due is not None:
                arm.append((int(row["id"]), float(due)))
            else:
                cancel.append(int(row["id"]))
        if arm:
            self._timers.arm(arm)
        if cancel:
            self._timers.cancel(cancel)

    def _on_fire(self, fired: list[FiredTimer]) -> None:
        self._due.update(f.id for f in fired)
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._due) < BATCH:
                await asyncio.sleep(LINGER_S)
            while self._due:
                ids = sorted(self._due)[:BATCH]
                self._due.difference_update(ids)
                try:
                    await self.fire(ids)
                    backoff = 0.1
                except asyncio.CancelledError:
                    self._due.update(ids)
                    raise
                except StoreUnavailableError as exc:
                    log.warning("escalation waits for the database: %s", exc)
                    self._due.update(ids)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                except Exception:
                    # Never lost: the steps stay pending in the store and are armed again
                    # a little later.
                    log.exception("escalation of %d incidents failed; retrying", len(ids))
                    self._timers.arm([(i, time.time() + backoff) for i in ids])
                    backoff = min(backoff * 2, MAX_BACKOFF)

    async def fire(self, ids: Collection[int], now: float | None = None) -> int:
        """Apply the due steps of these incidents; how many paged."""
        now = time.time() if now is None else now
        rows = await self._store.incidents_by_id(ids)
        batch = _Lookups(self._store)
        ops: list[dict[str, Any]] = []
        early: list[tuple[int, float]] = []
        lateness: list[float] = []
        for current in rows:
            due = current.get("escalation_due_at")
            if current["status"] != OPEN or due is None:
                continue
            if float(due) > now + EARLY_S:
                early.append((int(current["id"]), float(due)))  # moved since it was armed
                continue
            try:
                op = await self._step(current, batch, float(due), now)
            except StoreUnavailableError:
                raise
            except Exception:
                # This incident only: the others in the batch go on; it is tried again.
                log.exception("escalation step of incident %s failed", current["id"])
                early.append((int(current["id"]), now + RETRY_S))
                continue
            if op is not None:
                ops.append(op)
                lateness.append(now - float(due))
        if early:
            self._timers.arm(early)
        if not ops:
            return 0
        written = await self._store.write_incident_batch(ops)
        paged = 0
        for row, op, late in zip(written, ops, lateness, strict=True):
            if row is None or op["event"]["kind"] != "escalated":
                continue  # acknowledged or resolved meanwhile: nobody paged
            paged += 1
            self.lateness.append(late)
        self.watch_many(r for r in written if r is not None)
        self.steps_fired += paged
        if self._router is not None:
            self._router.written()
        return paged

    async def _step(
        self, row: Row, batch: _Lookups, due: float, now: float
    ) -> dict[str, Any] | None:
        org_id = int(row["organization_id"])
        policy = await batch.policy(org_id, row.get("escalation_policy_id"))
        step_index = int(row.get("escalation_step") or 0)
        round_ = int(row.get("escalation_round") or 0)
        if policy is None or step_index >= len(policy.steps):
            why = "the escalation policy was deleted" if policy is None else "the policy changed"
            return {
                "org_id": org_id,
                "incident_id": row["id"],
                "fields": {"escalation_due_at": None},
                "event": {"kind": "escalation_stopped", "at": now, "detail": {"reason": why}},
                "only_if_status": (OPEN,),
            }
        step = policy.steps[step_index]
        users, channels, unreachable = await self._targets(org_id, step, batch, now)
        # The step's due time too: SQLite may give a deleted incident's id to a new one,
        # whose pages must not collide with the old ones' dedup keys.
        key = f"{{incident}}:{round(due * 1000)}:r{round_}:s{step_index + 1}"
        # The first page reads as the news of the incident; later ones as escalations.
        event = "opened" if (step_index, round_) == (0, 0) else "escalated"
        deliveries = await self._plan_pages(batch, row, users, at=now, key=key, event=event)
        paged_users = {d["payload"].get("user_id") for d in deliveries}
        unreachable += [
            {"type": "user", "id": u, "reason": "no verified contact method"}
            for u in users
            if u not in paged_users
        ]
        if channels and self._router is not None:
            try:
                deliveries += await self._router.plan(
                    org_id,
                    row,
                    "escalated",
                    at=now,
                    suffix=f"-{round(due * 1000)}-r{round_}s{step_index + 1}",
                    channels=channels,
                )
            except StoreUnavailableError:
                raise
            except Exception:
                # The people are still paged; the channels' failure is on the timeline.
                log.exception("planning the channels of incident %s failed", row["id"])
                unreachable += [
                    {"type": "channel", "id": int(c["id"]), "reason": "planning failed"}
                    for c in channels
                ]
                channels = []
        nxt = after(policy, step_index, round_, due, now)
        detail = {
            "policy_id": policy.id,
            "step": step_index + 1,
            "round": round_,
            "pages": contacts.page_summaries(deliveries),
            "channels": [int(c["id"]) for c in channels],
            "unreachable": unreachable,
            "next_step_at": nxt.due,
        }
        return {
            "org_id": org_id,
            "incident_id": row["id"],
            "fields": {
                "escalation_step": nxt.step,
                "escalation_round": nxt.round,
                "escalation_due_at": nxt.due,
            },
            "event": {"kind": "escalated", "at": now, "detail": detail},
            "deliveries": deliveries,
            "only_if_status": (OPEN,),
        }

    async def _targets(
        self, org_id: int, step: Step, batch: _Lookups, now: float
    ) -> tuple[list[int], list[Row], list[dict[str, Any]]]:
        """The users (in order, once each) and channels a step pages now, and the
        targets nobody answers for."""
        users: list[int] = []
        channels: list[Row] = []
        unreachable: list[dict[str, Any]] = []
        for target in step.targets:
            if target.type == "user":
                users.append(target.id)
            elif target.type == "schedule":
                who = await batch.on_call(org_id, target.id, now)
                if who is None:
                    unreachable.append(
                        {"type": "schedule", "id": target.id, "reason": "nobody on call"}
                    )
                else:
                    users.append(who)
            elif target.type == "team":
                members = await batch.team(org_id, target.id)
                if not members:
                    reason = "team deleted" if members is None else "nobody to page in the team"
                    unreachable.append({"type": "team", "id": target.id, "reason": reason})
                else:
                    users += members
            else:
                channel = await batch.channel(org_id, target.id)
                if channel is None:
                    unreachable.append(
                        {"type": "channel", "id": target.id, "reason": "channel deleted"}
                    )
                else:
                    channels.append(channel)
        return list(dict.fromkeys(users)), channels, unreachable


class _Lookups:
    """What one batch of steps reads, read once per batch (also what planning the pages
    reads: `contacts.PeopleReads`)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._policies: dict[tuple[int, int], Policy | None] = {}
        self._schedules: dict[tuple[int, int], oncall.Schedule | None] = {}
        self._channels: dict[tuple[int, int], Row | None] = {}
        self._teams: dict[tuple[int, int], list[int] | None] = {}
        self._principals: dict[int, Principal | None] = {}
        self._methods: dict[tuple[tuple[int, ...], bool], list[Row]] = {}
        self._rules: dict[tuple[int, ...], list[Row]] = {}
        self._checks: dict[tuple[tuple[int, ...], int], Row | None] = {}

    async def principal_for_user(self, user_id: int) -> Principal | None:
        if user_id not in self._principals:
            self._principals[user_id] = await self._store.principal_for_user(user_id)
        return self._principals[user_id]

    async def list_contact_methods(
        self, user_ids: Collection[int], *, verified_only: bool = False
    ) -> list[Row]:
        key = (tuple(sorted(user_ids)), verified_only)
        if key not in self._methods:
            self._methods[key] = await self._store.list_contact_methods(
                key[0], verified_only=verified_only
            )
        return self._methods[key]

    async def list_notification_rules(self, user_ids: Collection[int]) -> list[Row]:
        key = tuple(sorted(user_ids))
        if key not in self._rules:
            self._rules[key] = await self._store.list_notification_rules(key)
        return self._rules[key]

    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None:
        key = (tuple(sorted(org_ids)), check_id)
        if key not in self._checks:
            self._checks[key] = await self._store.get_check(key[0], check_id)
        return self._checks[key]

    async def policy(self, org_id: int, policy_id: Any) -> Policy | None:
        if not policy_id:
            return None
        key = (org_id, int(policy_id))
        if key not in self._policies:
            row = await self._store.get("escalation_policies", [org_id], int(policy_id))
            self._policies[key] = None if row is None else policy_of(row)
        return self._policies[key]

    async def on_call(self, org_id: int, schedule_id: int, now: float) -> int | None:
        key = (org_id, schedule_id)
        if key not in self._schedules:
            row = await self._store.get("oncall_schedules", [org_id], schedule_id)
            sched = None
            if row is not None:
                overrides: Sequence[Row] = await self._store.select(
                    "oncall_overrides", [org_id], where={"schedule_id": schedule_id}, limit=1000
                )
                sched = oncall.schedule_of(row, overrides)
            self._schedules[key] = sched
        sched = self._schedules[key]
        if sched is None:
            return None
        shift = oncall.on_call_at(sched, now)
        return None if shift is None else shift.user_id

    async def team(self, org_id: int, team_id: int) -> list[int] | None:
        """The team's members a page goes to (leads first), None when it was deleted."""
        key = (org_id, team_id)
        if key not in self._teams:
            found: list[int] | None = None
            if await self._store.get("teams", [org_id], team_id) is not None:
                rows = await self._store.select(
                    "team_members", [org_id], where={"team_id": team_id}, limit=1000
                )
                rows = [r for r in rows if r["role"] in PAGED_TEAM_ROLES]
                rows.sort(key=lambda r: (r["role"] != "lead", r["id"]))
                found = [int(r["user_id"]) for r in rows]
            self._teams[key] = found
        return self._teams[key]

    async def channel(self, org_id: int, channel_id: int) -> Row | None:
        key = (org_id, channel_id)
        if key not in self._channels:
            self._channels[key] = await self._store.get(
                "notification_channels", [org_id], channel_id
            )
        return self._channels[key]
