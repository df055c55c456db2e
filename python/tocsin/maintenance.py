"""Maintenance windows: one-off, or recurring by an RRULE (RFC 5545) or a cron
expression, each lasting `duration` seconds, in a time zone. The engine keeps the
checks of every active window flagged: verdicts go on, transitions are not alertable,
and the time is excluded from SLA totals."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field

from croniter import croniter
from dateutil import rrule as _rrule
from dateutil.rrule import rrulestr

from tocsin.heartbeat import invalid


@dataclass(frozen=True)
class MaintenanceWindow:
    check_ids: frozenset[int]
    start: float  # Unix seconds: the one-off start, or the recurrence's first start
    duration: float  # seconds
    rrule: str | None = None
    cron: str | None = None
    tz: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise invalid("duration", "must be positive")
        if self.rrule and self.cron:
            raise invalid("rrule", "give an rrule or a cron expression, not both")
        try:
            object.__setattr__(self, "_zone", zoneinfo.ZoneInfo(self.tz))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise invalid("timezone", f"unknown time zone {self.tz!r}") from None
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise invalid("cron", f"{self.cron!r} is not a cron expression")
        if self.rrule is not None:
            try:
                self._rule()
            except (ValueError, TypeError) as exc:
                raise invalid("rrule", f"invalid RRULE: {exc}") from None

    def _local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self._zone)

    def _rule(self) -> _rrule.rrule | _rrule.rruleset:
        assert self.rrule is not None
        return rrulestr(self.rrule, dtstart=self._local(self.start))

    def _last_start(self, t: float) -> float | None:
        """The latest occurrence starting at or before `t`."""
        if t < self.start:
            return None
        if self.rrule is not None:
            occ = self._rule().before(self._local(t), inc=True)
            return None if occ is None else float(occ.timestamp())
        if self.cron is not None:
            # croniter's previous occurrence is strictly before its base.
            prev: dt.datetime = croniter(self.cron, self._local(t + 1e-3)).get_prev(dt.datetime)
            return prev.timestamp() if prev.timestamp() >= self.start else None
        return self.start

    def _next_start(self, t: float) -> float | None:
        """The first occurrence starting after `t`."""
        if t < self.start:
            return self.start
        if self.rrule is not None:
            occ = self._rule().after(self._local(t), inc=False)
            return None if occ is None else float(occ.timestamp())
        if self.cron is not None:
            nxt: dt.datetime = croniter(self.cron, self._local(t)).get_next(dt.datetime)
            return nxt.timestamp()
        return None

    def active_at(self, t: float) -> bool:
        start = self._last_start(t)
        return start is not None and t < start + self.duration

    def next_change(self, t: float) -> float | None:
        """When the window next opens or closes after `t`."""
        start = self._last_start(t)
        if start is not None and t < start + self.duration:
            return start + self.duration
        return self._next_start(t)


def checks_in_maintenance(windows: Iterable[MaintenanceWindow], t: float) -> set[int]:
    return {cid for w in windows if w.active_at(t) for cid in w.check_ids}
