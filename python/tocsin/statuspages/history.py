"""The closed days of a component's uptime bars, kept between page builds.

A status page shows 90 days per component, and 89 of them are over: their day rollups
and incidents no longer change (but for results that arrive late — an agent's spool, a
server's last minute at shutdown — which `max_age` bounds). So a page build reads and
renders only today per component once the closed days are here, and the closed days are
read again when the UTC day changes, after `max_age`, or when a page shows a check whose
days are not here yet. Entries are per check, so pages that share checks share them."""

from __future__ import annotations

from dataclasses import dataclass

from tocsin.statuspages.documents import UptimeDayJson


@dataclass(frozen=True, slots=True)
class ClosedDays:
    """One check's closed days (oldest first) as of the UTC day `today`."""

    today: int
    first: int
    built_at: float
    days: tuple[UptimeDayJson, ...]
    # The days' bars as HTML (escaped), rendered once, and the days with incidents.
    bars: str
    incident_days: tuple[str, ...]
    # Time counted (maintenance, paused, no data left out) and downtime, over the days.
    counted_ms: int
    down_ms: int


class History:
    # About 30 KB per check (90 days of JSON and their bars): 20,000 checks ≈ 600 MB at
    # most, which only servers showing that many components on pages reach.
    def __init__(self, *, max_age: float = 3600.0, max_checks: int = 20_000) -> None:
        self.max_age = max_age
        self.max_checks = max_checks
        self._by_check: dict[int, ClosedDays] = {}

    def __len__(self) -> int:
        return len(self._by_check)

    def get(self, check_id: int, today: int, first: int, now: float) -> ClosedDays | None:
        entry = self._by_check.get(check_id)
        if entry is None or entry.today != today or entry.first != first:
            return None
        if now - entry.built_at > self.max_age:
            return None
        return entry

    def put(self, check_id: int, entry: ClosedDays) -> None:
        if len(self._by_check) >= self.max_checks and check_id not in self._by_check:
            # Entries of earlier days go first, else the oldest built.
            stale = [cid for cid, e in self._by_check.items() if e.today != entry.today]
            for cid in stale or [min(self._by_check, key=lambda c: self._by_check[c].built_at)]:
                del self._by_check[cid]
        self._by_check[check_id] = entry

    def forget(self, check_ids: list[int] | set[int] | frozenset[int]) -> None:
        for cid in check_ids:
            self._by_check.pop(cid, None)
