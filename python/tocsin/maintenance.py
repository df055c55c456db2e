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
from dateutil.relativedelta import relativedelta
from dateutil.rrule import rrulestr

from tocsin import schedules
from tocsin.schedules import invalid

# PERF: the engine walks a rule's occurrences from its first start at every evaluation,
# so a window may not recur more often than hourly, and a rule that never matches (its
# iterator would search up to the year 9999) is refused.
MIN_PERIOD_S = 3600


@dataclass(frozen=True)
class MaintenanceWindow:
    check_ids: frozenset[int]
    start: float  # Unix seconds: the one-off start, or the recurrence's first start
    duration: float  # seconds
    rrule: str | None = None
    cron: str | None = None
    tz: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)
    _parsed: _rrule.rrule | _rrule.rruleset | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise invalid("duration", "must be positive")
        if self.rrule and self.cron:
            raise invalid("cron", "give an rrule or a cron expression, not both")
        object.__setattr__(self, "_zone", schedules.time_zone(self.tz))
        if self.cron is not None:
            # The same rule the API applies; cheap, unlike evaluating an RRULE (which
            # the API does, in a thread, before it stores one).
            schedules.cron(self.cron, self.tz, field="cron", min_period_s=MIN_PERIOD_S)
        if self.rrule is not None:
            upper = self.rrule.upper().replace(" ", "")
            if "DTSTART" in upper or "\n" in self.rrule or "\r" in self.rrule:
                raise invalid("rrule", "give one RRULE line; the first start is starts_at")
            try:
                self._rule()
            except (ValueError, TypeError) as exc:
                raise invalid("rrule", f"invalid RRULE: {exc}") from None

    def _local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self._zone)

    def _rule(self) -> _rrule.rrule | _rrule.rruleset:
        if self._parsed is None:
            assert self.rrule is not None
            object.__setattr__(
                self, "_parsed", rrulestr(self.rrule, dtstart=self._local(self.start))
            )
        assert self._parsed is not None
        return self._parsed

    def _rule_near(self, t: float) -> _rrule.rrule | _rrule.rruleset:
        """The rule with its start moved forward by whole recurrence periods to shortly
        before `t`: the same occurrences from that start on, without iterating over
        every occurrence since the first start (years of a 5-minute rule took seconds).
        Moving by whole periods keeps what the start decides (the periods that recur,
        the weekday, day of month and time of day a rule leaves implicit). Rules with a
        COUNT, rule sets and day-of-month starts past the 28th are not moved."""
        rule = self._rule()
        if not isinstance(rule, _rrule.rrule):
            return rule
        # dateutil keeps these without public accessors.
        count, start, freq, interval = (
            getattr(rule, name) for name in ("_count", "_dtstart", "_freq", "_interval")
        )
        if count is not None:
            return rule
        naive = start.replace(tzinfo=None)
        target = self._local(t).replace(tzinfo=None)
        if target <= naive:
            return rule
        step: relativedelta | dt.timedelta
        if freq in (_rrule.YEARLY, _rrule.MONTHLY):
            if start.day > 28:
                return rule
            months = (target.year - naive.year) * 12 + target.month - naive.month
            unit = 12 if freq == _rrule.YEARLY else 1
            periods = months // (unit * interval)
            step = relativedelta(months=unit * interval)
        else:
            seconds = {
                _rrule.WEEKLY: 7 * 86_400,
                _rrule.DAILY: 86_400,
                _rrule.HOURLY: 3_600,
                _rrule.MINUTELY: 60,
                _rrule.SECONDLY: 1,
            }[freq] * interval
            periods = int((target - naive).total_seconds() // seconds)
            step = dt.timedelta(seconds=seconds)
        # Two periods of slack: the occurrences that matter lie in later periods.
        k = periods - 2
        if k <= 0:
            return rule
        moved = naive + step * k
        return rule.replace(dtstart=moved.replace(tzinfo=start.tzinfo))

    def _last_start(self, t: float) -> float | None:
        """The latest occurrence starting at or before `t`."""
        if t < self.start:
            return None
        if self.rrule is not None:
            occ = self._rule_near(t).before(self._local(t), inc=True)
            if occ is None:  # nothing since the moved start: ask the whole rule
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
            occ = self._rule_near(t).after(self._local(t), inc=False)
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
