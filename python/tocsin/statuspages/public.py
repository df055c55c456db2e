"""Building a status page's public documents from the store, the engine and the window
book: the summary (overall status, sections, incidents, maintenance), the 90-day uptime,
and the recent incidents the feed shows. Built on a cache miss only (see cache.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tocsin.engine import Engine
from tocsin.figures import clip
from tocsin.maintenance import MaintenanceWindow
from tocsin.models import Rollup
from tocsin.statuspages.documents import (
    ComponentUptimeJson,
    PublicComponentJson,
    PublicIncidentJson,
    PublicMaintenanceJson,
    PublicPageJson,
    PublicSectionJson,
    PublicUptimeJson,
    UptimeDayJson,
)
from tocsin.statuspages.history import ClosedDays, History
from tocsin.statuspages.model import (
    COMPONENT_LABELS,
    OVERALL_LABELS,
    Component,
    component_status,
    components_of,
    day_uptime,
    overall_status,
)
from tocsin.statuspages.render import ComponentBlocks, Strip, bar_html
from tocsin.store.base import Row, Store
from tocsin.timestamps import iso
from tocsin.windows import WindowBook

DAY_S = 86_400
UPTIME_DAYS = 90
HISTORY_DAYS = 14
# Upcoming maintenance further ahead than this is not shown.
MAINTENANCE_HORIZON_S = 60 * DAY_S
# Incidents of a page's checks read at most, newest first.
_INCIDENT_MAX = 5_000
_SEVERITY_WORDS = {"critical": "Outage", "warning": "Degraded performance"}


class PageNotFound(LookupError):
    """No page with this slug, or a private one: the public sees neither."""


def page_url(slug: str) -> str:
    return f"/status/{slug}"


@dataclass(frozen=True, slots=True)
class Shown:
    """A component as the page shows it: its check's row and the status it shows."""

    component: Component
    name: str
    status: str
    # When the check was created (ms): its bars count no time before.
    created_ms: int = 0

    def json(self) -> PublicComponentJson:
        c = self.component
        return {
            "check_id": c.check_id,
            "name": self.name,
            "section": c.section,
            "description": c.description,
            "status": self.status,
            "status_text": COMPONENT_LABELS.get(self.status, self.status.title()),
        }


@dataclass(frozen=True, slots=True)
class Page:
    row: Row
    shown: list[Shown]

    @property
    def org_id(self) -> int:
        return int(self.row["organization_id"])

    @property
    def page_id(self) -> int:
        return int(self.row["id"])

    @property
    def check_ids(self) -> list[int]:
        return [s.component.check_id for s in self.shown]

    def name_of(self, check_id: int) -> str:
        for s in self.shown:
            if s.component.check_id == check_id:
                return s.name
        return ""


class PublicPages:
    """Reads one page's public documents (no cache here: the routes cache them)."""

    def __init__(
        self, store: Store, engine: Engine, windows: WindowBook, history: History | None = None
    ) -> None:
        self._store = store
        self._engine = engine
        self._windows = windows
        self.history = history or History()
        self.blocks = ComponentBlocks()

    async def load(self, slug: str) -> Page:
        """The public page with this slug and its components (checks deleted since are
        left out), or PageNotFound."""
        row = await self._store.status_page_by_slug(slug)
        if row is None or not row["is_public"]:
            raise PageNotFound(slug)
        org = [int(row["organization_id"])]
        components = components_of(row.get("components") or [], row.get("check_ids") or [])
        # One read for every component, however many the page has.
        checks = {
            int(c["id"]): c
            for c in await self._store.check_states(org, [comp.check_id for comp in components])
        }
        shown = []
        for comp in components:
            check = checks.get(comp.check_id)
            if check is None:
                continue
            shown.append(
                Shown(
                    comp,
                    comp.name or str(check["name"]),
                    component_status(
                        self._verdict(check), self._engine.in_maintenance(comp.check_id)
                    ),
                    round(float(check["created_at"]) * 1000),
                )
            )
        return Page(row, shown)

    def _verdict(self, check: Row) -> str:
        if not check.get("is_active", True):
            return "PAUSED"
        try:
            return str(self._engine.status(int(check["id"])))
        except (KeyError, ValueError, IndexError):
            # Not in the engine (a type with no probe yet): the stored status.
            return str(check.get("status") or "UNKNOWN")

    # -- the summary -----------------------------------------------------------------------

    async def summary(self, page: Page, now: float | None = None) -> PublicPageJson:
        now = time.time() if now is None else now
        row = page.row
        components = [s.json() for s in page.shown]
        recent = await self.incidents(page, since=now - HISTORY_DAYS * DAY_S)
        status = overall_status(c["status"] for c in components)
        return {
            "name": row["name"],
            "slug": row["slug"],
            "description": row["description"] or "",
            "logo_url": row.get("logo_url") or None,
            "url": page_url(row["slug"]),
            "status": status,
            "status_text": OVERALL_LABELS[status],
            "sections": sections(components),
            "components": components,
            "incidents": [i for i in recent if i["status"] != "RESOLVED"]
            + await self._older_open(page, recent),
            "incident_history": recent,
            "maintenance": self.maintenance(page, now),
            "generated_at": iso(now),
        }

    async def _older_open(
        self, page: Page, recent: Sequence[PublicIncidentJson]
    ) -> list[PublicIncidentJson]:
        """Unresolved incidents that began before the history shown."""
        seen = {i["id"] for i in recent}
        if not page.check_ids:
            return []
        rows = await self._store.open_check_incidents(page.check_ids)
        rows = [r for r in rows if r["id"] not in seen and r["organization_id"] == page.org_id]
        rows.sort(key=lambda r: r["started_at"], reverse=True)
        return [incident_json(r, page) for r in rows]

    async def incidents(self, page: Page, *, since: float) -> list[PublicIncidentJson]:
        """The incidents of the page's checks that began since `since`, newest first."""
        if not page.check_ids:
            return []
        return [incident_json(r, page) for r in await self._incident_rows(page, since)]

    async def _incident_rows(self, page: Page, since: float) -> list[Row]:
        """The incidents of the page's checks that began since `since`, newest first
        (one read, however many components; at most `_INCIDENT_MAX`)."""
        if not page.check_ids:
            return []
        rows = await self._store.check_incidents_between(
            [page.org_id],
            page.check_ids,
            since=since,
            until=time.time() + DAY_S,
            limit=_INCIDENT_MAX,
        )
        # (those still open that began earlier are in the summary's open incidents)
        return [r for r in rows if r["started_at"] >= since]

    # -- maintenance -----------------------------------------------------------------------

    def maintenance(self, page: Page, now: float) -> list[PublicMaintenanceJson]:
        found: dict[int, tuple[Row, MaintenanceWindow, list[int]]] = {}
        for cid in page.check_ids:
            for row, window in self._windows.of_check(page.org_id, cid):
                found.setdefault(row["id"], (row, window, []))[2].append(cid)
        out: list[PublicMaintenanceJson] = []
        for row, window, cids in found.values():
            item = _occurrence(row, window, cids, page, now)
            if item is not None:
                out.append(item)
        out.sort(key=lambda m: (not m["in_progress"], m["starts_at"]))
        return out

    # -- uptime ----------------------------------------------------------------------------

    async def uptime(
        self, page: Page, now: float | None = None, days: int = UPTIME_DAYS
    ) -> PublicUptimeJson:
        """Per component, `days` UTC days of uptime, the last one today so far. The closed
        days come from the history (history.py) when it has them: a build then reads the
        day rollups of today only."""
        now = time.time() if now is None else now
        today = int(now // DAY_S) * DAY_S
        first = today - (days - 1) * DAY_S
        history = self.history
        missing = [cid for cid in page.check_ids if history.get(cid, today, first, now) is None]
        by_day: dict[tuple[int, int], int] = {}
        for r in await self._incident_rows(page, first if missing else today):
            key = (int(r["check_id"]), int(r["started_at"] // DAY_S) * DAY_S)
            by_day[key] = by_day.get(key, 0) + 1
        created = {sh.component.check_id: sh.created_ms for sh in page.shown}
        fresh: dict[int, ClosedDays] = {}
        if missing:
            closed = _by_check(
                await self._store.list_rollups_of(
                    [page.org_id], missing, "day", since_ms=first * 1000, until_ms=today * 1000
                )
            )
            for cid in missing:
                fresh[cid] = _closed_days(
                    cid, closed.get(cid, []), by_day, today, first, now, created[cid]
                )
                history.put(cid, fresh[cid])
        todays = _by_check(
            await self._store.list_rollups_of(
                [page.org_id], page.check_ids, "day", since_ms=today * 1000
            )
        )
        components: list[ComponentUptimeJson] = []
        for s in page.shown:
            cid = s.component.check_id
            # (this build's own when the history, full, has let it go meanwhile)
            past = history.get(cid, today, first, now) or fresh.get(cid)
            if past is None:  # let go between the check above and here: read it again
                rows = await self._store.list_rollups_of(
                    [page.org_id], [cid], "day", since_ms=first * 1000, until_ms=today * 1000
                )
                past = _closed_days(cid, rows, by_day, today, first, now, created[cid])
            bucket = todays[cid][0] if todays.get(cid) else None
            day, counted, down = _day(cid, today, bucket, by_day, now, created[cid])
            counted += past.counted_ms
            down += past.down_ms
            components.append(
                {
                    "check_id": cid,
                    "name": s.name,
                    "section": s.component.section,
                    "uptime": None
                    if counted <= 0
                    else round(max(0.0, (counted - down) * 100.0 / counted), 3),
                    "days": [*past.days, day],
                }
            )
        return {
            "slug": page.row["slug"],
            "days": days,
            "components": components,
            "generated_at": iso(now),
        }

    def bar_strips(self, uptime: PublicUptimeJson, now: float | None = None) -> dict[int, Strip]:
        """Each component's bars as HTML, with its days that had incidents: the closed
        days' from the history (rendered once), today's now."""
        now = time.time() if now is None else now
        today = int(now // DAY_S) * DAY_S
        first = today - (uptime["days"] - 1) * DAY_S
        out: dict[int, Strip] = {}
        for c in uptime["components"]:
            days = c["days"]
            past = self.history.get(c["check_id"], today, first, now)
            if past is not None and days and len(days) == len(past.days) + 1:
                last = days[-1]
                out[c["check_id"]] = Strip(
                    past.bars + bar_html(last),
                    past.incident_days + ((last["date"],) if last["incidents"] else ()),
                )
            else:
                out[c["check_id"]] = Strip(
                    "".join(bar_html(d) for d in days),
                    tuple(d["date"] for d in days if d["incidents"]),
                )
        return out


def _by_check(rollups: list[Rollup]) -> dict[int, list[Rollup]]:
    out: dict[int, list[Rollup]] = {}
    for r in rollups:
        out.setdefault(r.check_id, []).append(r)
    return out


def _day(
    check_id: int,
    day_start: int,
    bucket: Rollup | None,
    by_day: dict[tuple[int, int], int],
    now: float,
    created_ms: int,
) -> tuple[UptimeDayJson, int, int]:
    """One day of a component: its JSON, and the time it counts and its downtime (ms).
    The time before the check existed is neither uptime nor downtime (as for the SLA
    figures: `figures.clip`)."""
    pct = None
    counted = down = 0
    if bucket is not None:
        bucket = clip(bucket, created_ms)
        # Today is not over: its span is the time so far.
        span = min(bucket.span_ms, max(0, int(now * 1000) - bucket.start_ms))
        excluded, downtime = min(bucket.excluded_ms, span), min(bucket.downtime_ms, span)
        pct = day_uptime(span, downtime, excluded)
        if pct is not None:
            counted, down = span - excluded, downtime
    day: UptimeDayJson = {
        "date": iso(day_start)[:10],
        "uptime": None if pct is None else round(pct, 3),
        "downtime_s": round((bucket.downtime_ms if bucket else 0) / 1000, 3),
        "incidents": max(by_day.get((check_id, day_start), 0), bucket.incidents if bucket else 0),
    }
    return day, counted, down


def _closed_days(
    check_id: int,
    buckets: list[Rollup],
    by_day: dict[tuple[int, int], int],
    today: int,
    first: int,
    now: float,
    created_ms: int,
) -> ClosedDays:
    by_start = {int(b.start_ms // 1000 // DAY_S) * DAY_S: b for b in buckets}
    days: list[UptimeDayJson] = []
    counted = down = 0
    for t in range(first, today, DAY_S):
        day, c, d = _day(check_id, t, by_start.get(t), by_day, now, created_ms)
        days.append(day)
        counted += c
        down += d
    return ClosedDays(
        today=today,
        first=first,
        built_at=now,
        days=tuple(days),
        bars="".join(bar_html(d) for d in days),
        incident_days=tuple(d["date"] for d in days if d["incidents"]),
        counted_ms=counted,
        down_ms=down,
    )


def sections(components: list[PublicComponentJson]) -> list[PublicSectionJson]:
    """Components grouped by section in the order sections first appear; the components
    in no section come first."""
    groups: dict[str, list[PublicComponentJson]] = {}
    if any(c["section"] == "" for c in components):
        groups[""] = []
    for c in components:
        groups.setdefault(c["section"], []).append(c)
    return [
        {"name": name, "status": overall_status(c["status"] for c in items), "components": items}
        for name, items in groups.items()
    ]


def incident_json(row: Row, page: Page) -> PublicIncidentJson:
    """An incident as the public sees it: under the component's display name, never the
    check's internal name or its probe's error text."""
    cid = int(row["check_id"])
    name = page.name_of(cid)
    what = _SEVERITY_WORDS.get(str(row.get("severity") or "").lower(), "Incident")
    return {
        "id": int(row["id"]),
        "check_id": cid,
        "component": name,
        "title": f"{name}: {what}" if name else what,
        "status": str(row["status"]),
        "severity": str(row.get("severity") or ""),
        "started_at": iso(row["started_at"]),
        "resolved_at": iso(row["resolved_at"]) if row.get("resolved_at") else None,
    }


def _occurrence(
    row: Row, window: MaintenanceWindow, cids: list[int], page: Page, now: float
) -> PublicMaintenanceJson | None:
    """The window's occurrence under way, or its next one within the horizon."""
    duration = float(row["duration_s"])
    if window.active_at(now):
        end = window.next_change(now) or now
        start, in_progress = end - duration, True
    else:
        nxt = window.next_change(now)
        if nxt is None or nxt - now > MAINTENANCE_HORIZON_S:
            return None
        start, end, in_progress = nxt, nxt + duration, False
    return {
        "id": int(row["id"]),
        "name": str(row["name"]),
        "description": str(row.get("description") or ""),
        "check_ids": cids,
        "components": [page.name_of(c) for c in cids],
        "starts_at": iso(start),
        "ends_at": iso(end),
        "in_progress": in_progress,
    }
