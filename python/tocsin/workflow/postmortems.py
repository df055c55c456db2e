"""Postmortems: what an incident review starts from, derived from the incidents' own
timelines (detection, acknowledgement, escalation, resolution, with times and durations),
and the review rendered as Markdown (docs/postmortems.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from tocsin.store.base import Row, Store
from tocsin.timestamps import iso

# Timeline events a review reads as milestones, and how they read.
_MILESTONES = {
    "opened": "detected",
    "acknowledged": "acknowledged",
    "escalated": "escalated",
    "escalation_stopped": "escalation stopped",
    "severity_changed": "severity changed",
    "retriggered": "triggered again",
    "resolved": "resolved",
    "playbook_run": "playbook ran",
    "war_room_opened": "war room opened",
    "war_room_closed": "war room closed",
}
# Events read per incident (a flapping incident's timeline is long; a review needs its
# milestones, not every repeat).
MAX_EVENTS_PER_INCIDENT = 2000
_PAGE = 500


async def incident_events(store: Store, org_id: int, incident_id: int) -> list[Row]:
    events: list[Row] = []
    while len(events) < MAX_EVENTS_PER_INCIDENT:
        page = await store.select(
            "incident_events",
            [org_id],
            where={"incident_id": incident_id},
            limit=_PAGE,
            offset=len(events),
        )
        events += page
        if len(page) < _PAGE:
            break
    events.sort(key=lambda e: (e["at"], e["id"]))
    return events


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 3)


def _summary(kind: str, detail: Mapping[str, Any]) -> str:
    if kind == "opened":
        what = detail.get("status") or detail.get("severity") or ""
        reason = detail.get("reason") or ""
        return " — ".join(x for x in (f"opened {what}".strip(), reason) if x)
    if kind == "escalated":
        pages = detail.get("pages") or []
        step = detail.get("step")
        return f"escalation step {step}: {len(pages)} page(s)"
    if kind == "severity_changed":
        return f"severity {detail.get('from')} → {detail.get('to')}"
    if kind == "resolved":
        return "resolved automatically" if detail.get("automatic") else "resolved"
    if kind == "playbook_run":
        return f"playbook {detail.get('playbook_name') or detail.get('playbook_id')}"
    return _MILESTONES.get(kind, kind.replace("_", " "))


def prefill(incidents: Sequence[tuple[Row, Sequence[Row]]]) -> dict[str, Any]:
    """The timeline of a review of these incidents (each with its events): per incident
    its milestones and durations, all milestones in order, and the overall figures
    (detection of the first, first acknowledgement, resolution of the last)."""
    per_incident: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row, rows in incidents:
        started = float(row["started_at"])
        acked = row.get("acknowledged_at")
        resolved = row.get("resolved_at")
        escalations = sum(1 for e in rows if e["kind"] == "escalated")
        per_incident.append(
            {
                "id": row["id"],
                "kind": row["kind"],
                "title": row["title"],
                "severity": row["severity"],
                "status": row["status"],
                "check_id": row.get("check_id"),
                "service_id": row.get("service_id"),
                "detected_at": iso(started),
                "acknowledged_at": iso(acked),
                "resolved_at": iso(resolved),
                "time_to_acknowledge_s": _seconds(started, acked),
                "time_to_resolve_s": _seconds(started, resolved),
                "escalations": escalations,
            }
        )
        for e in rows:
            if e["kind"] not in _MILESTONES:
                continue
            events.append(
                {
                    "at": iso(e["at"]),
                    "_at": float(e["at"]),
                    "incident_id": row["id"],
                    "kind": e["kind"],
                    "milestone": _MILESTONES[e["kind"]],
                    "summary": _summary(e["kind"], e.get("detail") or {}),
                    "actor_id": e.get("actor_id"),
                }
            )
    events.sort(key=lambda e: (e["_at"], e["incident_id"]))
    first_at = events[0]["_at"] if events else None
    for e in events:
        e["offset_s"] = _seconds(first_at, e.pop("_at"))
    starts = [float(r["started_at"]) for r, _ in incidents]
    acks = [float(r["acknowledged_at"]) for r, _ in incidents if r.get("acknowledged_at")]
    ends = [float(r["resolved_at"]) for r, _ in incidents if r.get("resolved_at")]
    detected = min(starts) if starts else None
    acknowledged = min(acks) if acks else None
    all_resolved = bool(incidents) and len(ends) == len(incidents)
    resolved = max(ends) if all_resolved else None
    return {
        "detected_at": iso(detected),
        "acknowledged_at": iso(acknowledged),
        "resolved_at": iso(resolved),
        "time_to_acknowledge_s": _seconds(detected, acknowledged),
        "time_to_resolve_s": _seconds(detected, resolved),
        "escalations": sum(i["escalations"] for i in per_incident),
        "incidents": per_incident,
        "events": events,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {sec} s"
    return f"{sec} s"


def default_impact(timeline: Mapping[str, Any], names: Mapping[int, str]) -> str:
    """What a review's impact section starts as: what was affected, and for how long."""
    affected = []
    for inc in timeline.get("incidents") or []:
        what = names.get(inc.get("check_id") or 0) or inc.get("title") or f"incident {inc['id']}"
        affected.append(f"{what} ({inc.get('severity')})")
    lines = []
    if affected:
        lines.append("Affected: " + ", ".join(affected) + ".")
    total = timeline.get("time_to_resolve_s")
    lines.append(
        f"Duration: {_duration(total)}." if total is not None else "Duration: not resolved yet."
    )
    return " ".join(lines)


def _cell(text: Any) -> str:
    return str(text if text is not None else "—").replace("|", "\\|").replace("\n", " ")


def _time(value: str | None) -> str:
    if not value:
        return "—"
    return dt.datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def markdown(pm: Mapping[str, Any], people: Mapping[int, str]) -> str:
    """The review as Markdown: its sections, the timeline as a table, the action items
    as a checklist (`people`: user id → how to name them)."""
    t = pm.get("timeline") or {}
    out = [f"# {' '.join(str(pm['title']).split())}", ""]
    out.append(f"Status: **{pm['status'].replace('_', ' ')}**")
    if pm.get("published_at"):
        out.append(f"  \nPublished: {_time(pm['published_at'])}")
    out += ["", "## Summary", "", pm.get("summary") or "_To be written._", ""]
    out += ["## Impact", "", pm.get("impact") or "_To be written._", ""]
    out += [
        "## Key figures",
        "",
        "| | |",
        "|---|---|",
        f"| Detected | {_time(t.get('detected_at'))} |",
        f"| Acknowledged | {_time(t.get('acknowledged_at'))} |",
        f"| Resolved | {_time(t.get('resolved_at'))} |",
        f"| Time to acknowledge | {_duration(t.get('time_to_acknowledge_s'))} |",
        f"| Time to resolve | {_duration(t.get('time_to_resolve_s'))} |",
        f"| Escalations | {t.get('escalations', 0)} |",
        "",
    ]
    out += ["## Timeline", "", "| Time (UTC) | Incident | What | Detail |", "|---|---|---|---|"]
    for e in t.get("events") or []:
        out.append(
            f"| {_time(e['at'])} | #{e['incident_id']} | {_cell(e['milestone'])} |"
            f" {_cell(e['summary'])} |"
        )
    out += ["", "## Root cause", "", pm.get("root_cause") or "_To be written._", ""]
    out += ["## What went well", "", pm.get("what_went_well") or "_To be written._", ""]
    out += ["## What went wrong", "", pm.get("what_went_wrong") or "_To be written._", ""]
    out += ["## Action items", ""]
    items = pm.get("action_items") or []
    if not items:
        out.append("_None yet._")
    for item in items:
        box = "x" if item.get("status") == "done" else " "
        extra = []
        if item.get("owner_id"):
            extra.append(f"owner: {people.get(item['owner_id'], 'user ' + str(item['owner_id']))}")
        if item.get("due_date"):
            extra.append(f"due {item['due_date']}")
        suffix = f" ({', '.join(extra)})" if extra else ""
        out.append(f"- [{box}] {item['title']}{suffix}")
    out.append("")
    return "\n".join(out)
