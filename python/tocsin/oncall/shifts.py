"""The shifts of an on-call schedule, computed from its definition.

A schedule has a time zone, layers and overrides. A layer rotates through its
participants: handoff `k` is at the local wall time `start @ handoff_time + k * length`
(length 24 h for `daily`, 168 h for `weekly`, `rotation_length_hours` for `custom`),
and participant `k mod n` is on call from handoff `k` to handoff `k + 1`. Nobody is on
call in a layer before its first handoff, nor outside its restrictions (weekly windows
of local wall time) when it has any. A later layer overrides the earlier ones wherever
it has someone on call; an override (a user over an absolute time range) replaces
whoever is on call then, a later override winning over an earlier one.

Wall times are local, so a 09:00 handoff stays at 09:00 across DST changes. A wall
time takes effect at the first instant the local clock reaches it:

- an *ambiguous* wall time (it occurs twice when clocks go back) is its first
  occurrence;
- a *nonexistent* wall time (skipped when clocks go forward) is the instant the clocks
  jump over it (02:30 on the spring-forward night in Europe/Warsaw is 03:00 CEST).

Times are Unix seconds (floats). A timeline covers at most `MAX_RANGE_S` and
`MAX_SHIFTS` shifts (`ValueError` beyond)."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ROTATION_HOURS = {"daily": 24, "weekly": 168}
MAX_RANGE_S = 90 * 86_400
MAX_SHIFTS = 10_000
_UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class Restriction:
    """On each of `days` (0 = Monday), the layer has someone on call from `start` to
    `end` local wall time; an `end` at or before `start` is on the next day."""

    days: tuple[int, ...]
    start: dt.time
    end: dt.time


@dataclass(frozen=True, slots=True)
class Layer:
    participants: tuple[int, ...]
    start: dt.date
    rotation_type: str = "daily"
    handoff_time: dt.time = dt.time(9, 0)
    rotation_length_hours: int | None = None
    restrictions: tuple[Restriction, ...] = ()

    @property
    def length(self) -> dt.timedelta:
        hours = ROTATION_HOURS.get(self.rotation_type) or self.rotation_length_hours
        if not hours or hours < 1:
            raise ValueError("a custom rotation needs rotation_length_hours >= 1")
        return dt.timedelta(hours=hours)


@dataclass(frozen=True, slots=True)
class Override:
    user_id: int
    start: float
    end: float
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    timezone: str
    layers: tuple[Layer, ...]
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True, slots=True)
class Shift:
    """`user_id` on call over [start, end); from `layer` (its index), or from the
    override `override_id` when `layer` is None."""

    user_id: int
    start: float
    end: float
    layer: int | None
    override_id: int | None = None


def to_instant(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> float:
    """The first instant the local clock of `zone` reads `wall` (naive) or later."""
    first = wall.replace(tzinfo=zone, fold=0)
    t = first.timestamp()
    if dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None) == wall:
        return t  # exists (an ambiguous time: fold=0 is its first occurrence)
    # In a gap: the jump lies between the two readings; find it to the second.
    lo = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = math.ceil(t)
    lo, hi = min(lo, hi), max(lo, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


def _local(t: float, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def _rotation(
    layer: Layer, zone: zoneinfo.ZoneInfo, lo: float, hi: float
) -> Iterator[tuple[float, float, int]]:
    """(start, end, user) of the layer's rotation, clipped to [lo, hi)."""
    if not layer.participants:
        return
    anchor = dt.datetime.combine(layer.start, layer.handoff_time)
    length = layer.length
    # A first guess a little early (DST moves wall time by at most a few hours).
    k = max(0, math.floor((_local(lo, zone) - anchor) / length) - 1)
    at = to_instant(anchor + k * length, zone)
    while at < hi:
        nxt = to_instant(anchor + (k + 1) * length, zone)
        if nxt > lo and nxt > at:
            user = layer.participants[k % len(layer.participants)]
            yield max(at, lo), min(nxt, hi), user
        k, at = k + 1, nxt


def _windows(
    layer: Layer, zone: zoneinfo.ZoneInfo, lo: float, hi: float
) -> list[tuple[float, float]]:
    """The layer's restriction windows over [lo, hi), merged and clipped; the whole
    range when it has none."""
    if not layer.restrictions:
        return [(lo, hi)]
    first = _local(lo, zone).date() - dt.timedelta(days=2)
    last = _local(hi, zone).date() + dt.timedelta(days=1)
    raw: list[tuple[float, float]] = []
    day = first
    while day <= last:
        for r in layer.restrictions:
            if day.weekday() not in r.days:
                continue
            end_day = day if r.end > r.start else day + dt.timedelta(days=1)
            a = to_instant(dt.datetime.combine(day, r.start), zone)
            b = to_instant(dt.datetime.combine(end_day, r.end), zone)
            if b > lo and a < hi and b > a:
                raw.append((max(a, lo), min(b, hi)))
        day += dt.timedelta(days=1)
    raw.sort()
    merged: list[tuple[float, float]] = []
    for a, b in raw:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _layer_segments(
    layer: Layer, zone: zoneinfo.ZoneInfo, lo: float, hi: float
) -> list[tuple[float, float, int]]:
    """(start, end, user), sorted and disjoint: the rotation within the restrictions."""
    windows = _windows(layer, zone, lo, hi)
    out: list[tuple[float, float, int]] = []
    i = 0
    for a, b, user in _rotation(layer, zone, lo, hi):
        while i < len(windows) and windows[i][1] <= a:
            i += 1
        j = i
        while j < len(windows) and windows[j][0] < b:
            s, e = max(a, windows[j][0]), min(b, windows[j][1])
            if e > s:
                out.append((s, e, user))
            j += 1
        if len(out) > MAX_SHIFTS * 4:
            raise ValueError(f"the range has more than {MAX_SHIFTS} shifts")
    return out


def _covering(segments: Sequence[tuple[float, float, int]], t: float) -> int | None:
    i = bisect.bisect_right(segments, (t, math.inf, math.inf)) - 1
    if i >= 0 and segments[i][0] <= t < segments[i][1]:
        return segments[i][2]
    return None


def shifts(schedule: Schedule, start: float, end: float) -> list[Shift]:
    """The shifts over [start, end), in order, adjacent pieces of the same user from the
    same source merged. Nobody on call: no shift."""
    if not end > start:
        raise ValueError("the end must be after the start")
    if end - start > MAX_RANGE_S:
        raise ValueError(f"a timeline covers at most {MAX_RANGE_S // 86_400} days")
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    layers = [_layer_segments(layer, zone, start, end) for layer in schedule.layers]
    overrides = [
        (max(o.start, start), min(o.end, end), o)
        for o in schedule.overrides
        if o.end > start and o.start < end and o.end > o.start
    ]
    cuts = {start, end}
    for segs in layers:
        for a, b, _ in segs:
            cuts.update((a, b))
    for a, b, _o in overrides:
        cuts.update((a, b))
    points = sorted(cuts)
    out: list[Shift] = []
    for a, b in itertools.pairwise(points):
        piece = _who(layers, overrides, a)
        if piece is None:
            continue
        user, layer, override_id = piece
        last = out[-1] if out else None
        if (
            last is not None
            and last.end == a
            and (last.user_id, last.layer, last.override_id) == (user, layer, override_id)
        ):
            out[-1] = Shift(user, last.start, b, layer, override_id)
        else:
            if len(out) >= MAX_SHIFTS:
                raise ValueError(f"the range has more than {MAX_SHIFTS} shifts")
            out.append(Shift(user, a, b, layer, override_id))
    return out


def _who(
    layers: list[list[tuple[float, float, int]]],
    overrides: list[tuple[float, float, Override]],
    t: float,
) -> tuple[int, int | None, int | None] | None:
    for a, b, o in reversed(overrides):
        if a <= t < b:
            return o.user_id, None, o.id
    for index in range(len(layers) - 1, -1, -1):
        user = _covering(layers[index], t)
        if user is not None:
            return user, index, None
    return None


HORIZON_S = 31 * 86_400


def on_call_at(schedule: Schedule, t: float, horizon: float = HORIZON_S) -> Shift | None:
    """Who is on call at `t`: the shift from `t` (earlier time is not looked at) to its
    end, looked for up to `horizon` seconds ahead."""
    found = shifts(schedule, t, t + horizon)
    return found[0] if found and found[0].start <= t else None


def layer_on_call_at(schedule: Schedule, index: int, t: float) -> int | None:
    """Who layer `index` alone has on call at `t`."""
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    return _covering(_layer_segments(schedule.layers[index], zone, t, t + 1.0), t)
