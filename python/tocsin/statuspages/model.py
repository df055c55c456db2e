"""What a status page is made of and the rule that sums it up: components (a check shown
under a display name, in a section) and the status each one shows.

A component shows its check's verdict, except:
- a check inside an open maintenance window shows MAINTENANCE, whatever its verdict;
- a PAUSED check shows PAUSED, and a check with no data yet (UNKNOWN) shows UNKNOWN;
  neither says anything about the service, so neither moves the overall status.

Overall: OUTAGE when any component is DOWN, else DEGRADED when any is DEGRADED or LATE,
else MAINTENANCE when every component that counts is in maintenance (and at least one
is), else OPERATIONAL (also for a page with no component)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tocsin.slugs import SLUG_PATTERN, SLUG_RE

__all__ = ["SLUG_PATTERN", "SLUG_RE"]

# The statuses a component shows (a check's verdict, or MAINTENANCE).
OPERATIONAL: Final = "OPERATIONAL"
DEGRADED: Final = "DEGRADED"
OUTAGE: Final = "OUTAGE"
MAINTENANCE: Final = "MAINTENANCE"

# Words people read, per component status and per overall status.
COMPONENT_LABELS: Final = {
    "UP": "Operational",
    "DEGRADED": "Degraded performance",
    "LATE": "Delayed",
    "DOWN": "Outage",
    "MAINTENANCE": "Under maintenance",
    "PAUSED": "Paused",
    "UNKNOWN": "No data yet",
}
OVERALL_LABELS: Final = {
    OPERATIONAL: "All systems operational",
    DEGRADED: "Degraded performance",
    OUTAGE: "Outage",
    MAINTENANCE: "Under maintenance",
}


def is_slug(text: str) -> bool:
    return SLUG_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Component:
    check_id: int
    # Shown instead of the check's name; "" shows the check's name.
    name: str = ""
    # The section it is grouped under; "" is no section (listed first).
    section: str = ""
    description: str = ""

    def as_row(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "name": self.name,
            "section": self.section,
            "description": self.description,
        }


def components_of(stored: Iterable[Mapping[str, Any]], check_ids: Sequence[int]) -> list[Component]:
    """A stored page's components; a page stored without them (by other means) shows its
    `check_ids` under their checks' names."""
    parts = [
        Component(
            int(c["check_id"]),
            str(c.get("name") or ""),
            str(c.get("section") or ""),
            str(c.get("description") or ""),
        )
        for c in stored
        if isinstance(c, Mapping) and isinstance(c.get("check_id"), int)
    ]
    return parts or [Component(int(cid)) for cid in check_ids]


def component_status(verdict: str, in_maintenance: bool) -> str:
    """What a component shows: MAINTENANCE inside a window, else its check's verdict."""
    return MAINTENANCE if in_maintenance else verdict


def overall_status(shown: Iterable[str]) -> str:
    """The page's status from what its components show (see the module's text)."""
    counted = [s for s in shown if s not in ("PAUSED", "UNKNOWN")]
    if "DOWN" in counted:
        return OUTAGE
    if "DEGRADED" in counted or "LATE" in counted:
        return DEGRADED
    if counted and all(s == MAINTENANCE for s in counted):
        return MAINTENANCE
    return OPERATIONAL


def day_uptime(span_ms: int, downtime_ms: int, excluded_ms: int) -> float | None:
    """A day's uptime % by the SLA rule: DOWN time is downtime; maintenance, paused and
    no-data time are out of the total. None when nothing was counted."""
    total = span_ms - excluded_ms
    if total <= 0:
        return None
    return max(0.0, min(100.0, (total - downtime_ms) * 100.0 / total))
