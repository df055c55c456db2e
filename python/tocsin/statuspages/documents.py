"""The public documents of a status page, typed: what `GET /api/status-pages/public/{slug}`
and `…/uptime` answer, and what the HTML page and the Atom feed are rendered from."""

from __future__ import annotations

from typing_extensions import TypedDict


class PublicComponentJson(TypedDict):
    check_id: int
    # the display name (the check's name when the page gives none)
    name: str
    section: str
    description: str
    # what it shows: UP, DEGRADED, LATE, DOWN, MAINTENANCE, PAUSED or UNKNOWN
    status: str
    # the same in words ("Operational", "Under maintenance", …)
    status_text: str


class PublicSectionJson(TypedDict):
    # "" for components in no section
    name: str
    # the section's own overall status (OPERATIONAL, DEGRADED, OUTAGE, MAINTENANCE)
    status: str
    components: list[PublicComponentJson]


class PublicIncidentJson(TypedDict):
    id: int
    check_id: int
    # the component's display name
    component: str
    title: str
    # OPEN, ACKNOWLEDGED or RESOLVED
    status: str
    severity: str
    started_at: str
    resolved_at: str | None


class PublicMaintenanceJson(TypedDict):
    id: int
    name: str
    description: str
    # the page's checks it covers
    check_ids: list[int]
    components: list[str]
    # the occurrence under way, or the next one
    starts_at: str
    ends_at: str
    in_progress: bool


class PublicPageJson(TypedDict):
    name: str
    slug: str
    description: str
    logo_url: str | None
    # the HTML page
    url: str
    # OPERATIONAL, DEGRADED, OUTAGE or MAINTENANCE
    status: str
    status_text: str
    sections: list[PublicSectionJson]
    components: list[PublicComponentJson]
    # unresolved incidents of the page's checks, newest first
    incidents: list[PublicIncidentJson]
    # resolved and unresolved incidents of the last 14 days, newest first
    incident_history: list[PublicIncidentJson]
    # windows open now, then the next occurrences of the others, soonest first
    maintenance: list[PublicMaintenanceJson]
    generated_at: str


class UptimeDayJson(TypedDict):
    # UTC day, YYYY-MM-DD
    date: str
    # percent (maintenance, paused and no-data time excluded); null: no data that day
    uptime: float | None
    downtime_s: float
    incidents: int


class ComponentUptimeJson(TypedDict):
    check_id: int
    name: str
    section: str
    # over the days with data; null when none had any
    uptime: float | None
    # oldest first, one per day, the last one today (so far)
    days: list[UptimeDayJson]


class PublicUptimeJson(TypedDict):
    slug: str
    days: int
    components: list[ComponentUptimeJson]
    generated_at: str
