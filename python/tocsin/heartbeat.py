"""Heartbeat schedules: when a passive check's next ping is due, on a fixed interval or
a cron expression in a time zone (croniter), safe across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from tocsin.schedules import cron as valid_cron
from tocsin.schedules import cron_next, invalid, time_zone

__all__ = ["MAX_GRACE_S", "HeartbeatSchedule"]

MAX_GRACE_S = 31 * 86_400


@dataclass(frozen=True, slots=True)
class HeartbeatSchedule:
    """`interval` (s) or `cron` (with `tz`), and the `grace` (s) after the due time
    before a late check is DOWN."""

    interval: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    grace: float = 60.0

    @classmethod
    def from_settings(cls, interval: float, options: dict[str, Any]) -> HeartbeatSchedule:
        """From a check: `schedule` (a cron expression; else the check's interval),
        `timezone` (IANA name, default UTC) and `grace_period` (s, default 60)."""
        cron = (options.get("schedule") or "").strip() or None
        # Rows stored before empty zones were refused mean UTC by an empty one.
        tz = options.get("timezone") or "UTC"
        grace = options.get("grace_period", 60)
        # The same validation as the API's: a stored rule the API would refuse (one
        # that never matches, or an unknown zone) is refused here too, by name.
        time_zone(tz)
        if cron is not None:
            valid_cron(cron, tz)
        if not isinstance(grace, int | float) or not 0 <= grace <= MAX_GRACE_S:
            raise invalid("grace_period", f"must be 0 to {MAX_GRACE_S} seconds")
        return cls(interval=None if cron else interval, cron=cron, tz=tz, grace=float(grace))

    def next_due(self, after: float) -> float:
        """The first due time after `after` (Unix seconds)."""
        if self.cron is None:
            assert self.interval is not None
            return after + self.interval
        zone = time_zone(self.tz)
        base = dt.datetime.fromtimestamp(after, zone)
        due = cron_next(self.cron, zone, base)
        try:
            previous: dt.datetime = croniter(self.cron, base).get_prev(dt.datetime)
        except (ValueError, TypeError, OverflowError):
            return due.timestamp()
        # When clocks fall back, a wall-clock time repeats an hour later; cron daemons
        # run the job once, so the repeat is not a new due time.
        if due.replace(tzinfo=None) == previous.replace(tzinfo=None):
            due = cron_next(self.cron, zone, due)
        return due.timestamp()
