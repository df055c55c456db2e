"""Maintenance windows and rollups: windows open and close on their schedule, flag the
transitions inside them, and their time is left out of uptime."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tocsin
from tocsin import (
    Check,
    Engine,
    MaintenanceWindow,
    ProbeOutcome,
    ProbeRegistry,
    Rollup,
    Status,
    StatusChange,
)

WARSAW = zoneinfo.ZoneInfo("Europe/Warsaw")


def local(*args: int) -> float:
    return dt.datetime(*args, tzinfo=WARSAW).timestamp()


def test_a_one_off_window() -> None:
    w = MaintenanceWindow(frozenset({1}), start=1000.0, duration=60)
    assert not w.active_at(999) and w.active_at(1000) and w.active_at(1059.9)
    assert not w.active_at(1060)
    assert w.next_change(0) == 1000 and w.next_change(1000) == 1060
    assert w.next_change(2000) is None


def test_a_weekly_rrule_window_keeps_its_local_time_across_dst() -> None:
    # Sundays 01:00-03:00 Warsaw time; clocks go back on Sunday 25 October 2026.
    w = MaintenanceWindow(
        frozenset({1}),
        start=local(2026, 10, 18, 1, 0),
        duration=7200,
        rrule="FREQ=WEEKLY;BYDAY=SU",
        tz="Europe/Warsaw",
    )
    assert w.active_at(local(2026, 10, 18, 2, 0))
    assert not w.active_at(local(2026, 10, 21, 2, 0))
    opens = w.next_change(local(2026, 10, 21, 12, 0))
    assert opens == local(2026, 10, 25, 1, 0)
    assert dt.datetime.fromtimestamp(opens, WARSAW).isoformat() == "2026-10-25T01:00:00+02:00"
    assert (
        dt.datetime.fromtimestamp(w.next_change(local(2026, 11, 1, 0, 0)) or 0, WARSAW).isoformat()
        == "2026-11-01T01:00:00+01:00"
    )


def test_a_cron_window_and_bad_windows() -> None:
    w = MaintenanceWindow(frozenset({1}), start=0, duration=600, cron="0 3 * * *", tz="UTC")
    day = 86_400 * 20_000
    assert w.active_at(day + 3 * 3600 + 300)
    assert not w.active_at(day + 3 * 3600 + 600)
    assert w.next_change(day) == day + 3 * 3600
    for kwargs, field in [
        ({"duration": 0}, "duration"),
        ({"duration": 60, "cron": "nope"}, "cron"),
        ({"duration": 60, "rrule": "FREQ=SOMETIMES"}, "rrule"),
        ({"duration": 60, "tz": "Atlantis/Nowhere"}, "timezone"),
    ]:
        with pytest.raises(tocsin.InvalidCheckError) as info:
            MaintenanceWindow(frozenset({1}), start=0, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


async def test_a_recurring_window_suppresses_alerting_and_is_excluded_from_uptime() -> None:
    registry = ProbeRegistry()
    failing = {"now": False}

    @registry.probe("switch")
    async def switch(check: Check) -> ProbeOutcome:
        if failing["now"]:
            return ProbeOutcome.down("http_status", "down for maintenance")
        return ProbeOutcome.up(latency_ms=5.0)

    rollups: list[Rollup] = []
    changes: list[StatusChange] = []
    async with Engine(registry=registry, rollup_span=1.0) as engine:
        engine.add_rollup_listener(rollups.extend)
        engine.add_listener(lambda _r, c: changes.extend(c))
        engine.upsert([Check(id=1, type="switch", interval=1, timeout=1)])
        while not changes:
            await asyncio.sleep(0.05)
        assert changes[-1].current is Status.UP

        # Every 30 s for 6 s, starting now: the outage below falls inside it.
        opened = time.time()
        engine.set_windows(
            [
                MaintenanceWindow(
                    frozenset({1}), start=opened, duration=6, rrule="FREQ=SECONDLY;INTERVAL=30"
                )
            ]
        )
        await asyncio.sleep(0.3)
        assert engine.in_maintenance(1)
        failing["now"] = True
        await asyncio.sleep(2.5)
        failing["now"] = False
        while time.time() < opened + 8:
            await asyncio.sleep(0.2)
        assert not engine.in_maintenance(1)

    down = [c for c in changes if c.current is Status.DOWN]
    assert len(down) == 1
    assert down[0].in_maintenance  # recorded, flagged, not alertable
    window = [r for r in rollups if opened - 1 <= r.start_ms / 1000 < opened + 8]
    f = tocsin.figures(window, apdex_t_ms=100)
    assert f["downtime_ms"] == 0
    assert f["incidents"] == 0
    assert f["uptime_pct"] == 100.0
    assert sum(r.excluded_ms for r in window) >= 5_000
    assert sum(r.runs_down for r in window) >= 1  # the runs still count as runs
    assert f["p50_ms"] == pytest.approx(5.0, rel=0.01)
    g = tocsin.figures(window, latency_threshold_ms=10)
    assert g["runs_within_threshold"] == sum(r.runs_up + r.runs_degraded for r in window)
    assert tocsin.figures(window, latency_threshold_ms=1)["runs_within_threshold"] == 0
    assert f["runs_within_threshold"] is None


async def test_downtime_outside_a_window_counts() -> None:
    registry = ProbeRegistry()

    @registry.probe("broken")
    async def broken(check: Check) -> ProbeOutcome:
        return ProbeOutcome.down("connect_refused", "refused")

    rollups: list[Rollup] = []
    async with Engine(registry=registry, rollup_span=1.0) as engine:
        engine.add_rollup_listener(rollups.extend)
        engine.upsert([Check(id=1, type="broken", interval=1, timeout=1)])
        while sum(r.downtime_ms for r in rollups) < 2_000:
            await asyncio.sleep(0.1)
    f = tocsin.figures(rollups)
    assert f["incidents"] == 1
    assert f["uptime_pct"] is not None and f["uptime_pct"] < 100.0
    assert f["mttr_ms"] == f["downtime_ms"]


def test_slo_state() -> None:
    s = tocsin.slo(99.0, (995.0, 1000.0), (90.0, 100.0), budget_warn_pct=25, burn_rate_threshold=2)
    assert s.budget_remaining == pytest.approx(0.5)
    assert s.burn_rate == pytest.approx(10.0)
    assert (s.budget_warning, s.budget_exhausted, s.burn_rate_alert) == (False, False, True)
    with pytest.raises(ValueError, match="fraction"):
        tocsin.slo(100.0, (1.0, 1.0), (1.0, 1.0))


async def test_a_check_added_during_its_window_is_flagged_at_once() -> None:
    async with Engine() as engine:
        engine.set_windows([MaintenanceWindow(frozenset({2}), start=time.time(), duration=30)])
        await asyncio.sleep(0.1)
        assert not engine.in_maintenance(2)  # not a check of this engine yet
        engine.upsert([Check(id=2, type="noop", interval=86_400)])
        for _ in range(50):
            if engine.in_maintenance(2):
                break
            await asyncio.sleep(0.02)
        assert engine.in_maintenance(2)


# -- recurring windows far from their first start --------------------------------------

SPAN = {  # how far after its first start a window is asked about (bounded by the reference)
    "YEARLY": 40 * 365 * 86_400,
    "MONTHLY": 10 * 365 * 86_400,
    "WEEKLY": 5 * 365 * 86_400,
    "DAILY": 3 * 365 * 86_400,
    "HOURLY": 200 * 86_400,
    "MINUTELY": 10 * 86_400,
}
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def rrules(draw: st.DrawFn) -> str:
    freq = draw(st.sampled_from(sorted(SPAN)))
    parts = [f"FREQ={freq}", f"INTERVAL={draw(st.integers(1, 5))}"]
    if freq in ("YEARLY", "MONTHLY", "WEEKLY", "DAILY") and draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=3, unique=True))
        parts.append("BYDAY=" + ",".join(days))
    if freq in ("MONTHLY", "WEEKLY", "DAILY") and draw(st.booleans()):
        hours = draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))
        parts.append("BYHOUR=" + ",".join(map(str, sorted(hours))))
    if freq == "MONTHLY" and draw(st.booleans()):
        parts.append(f"BYMONTHDAY={draw(st.integers(1, 31))}")
    if freq == "YEARLY" and draw(st.booleans()):
        parts.append(f"BYMONTH={draw(st.integers(1, 12))}")
    if draw(st.integers(0, 4)) == 0:
        parts.append(f"BYSETPOS={draw(st.sampled_from([1, -1]))}")
    return ";".join(parts)


@given(
    rule=rrules(),
    start=st.integers(1_500_000_000, 1_800_000_000),
    ahead=st.floats(0.0, 1.0),
    tz=st.sampled_from(["UTC", "Europe/Warsaw", "America/New_York", "Asia/Kolkata"]),
)
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_a_window_far_from_its_first_start_agrees_with_the_whole_rule(
    rule: str, start: int, ahead: float, tz: str
) -> None:
    # The window is asked about from its start's rule moved forward by whole periods (or
    # it would walk years of occurrences); the answers must be the whole rule's.
    w = MaintenanceWindow(frozenset({1}), float(start), 300.0, rrule=rule, tz=tz)
    freq = rule.split(";")[0].removeprefix("FREQ=")
    t = start + ahead * SPAN[freq]
    whole = w._rule()
    here = dt.datetime.fromtimestamp(t, zoneinfo.ZoneInfo(tz))
    last = whole.before(here, inc=True)
    following = whole.after(here, inc=False)
    assert w._last_start(t) == (None if last is None else last.timestamp())
    assert w._next_start(t) == (None if following is None else following.timestamp())
    active = last is not None and t < last.timestamp() + 300.0
    assert w.active_at(t) is active


def test_years_of_a_five_minute_rule_are_not_walked_through() -> None:
    start = float(int(time.time()) - 3 * 365 * 86_400)
    w = MaintenanceWindow(frozenset({1}), start, 60.0, rrule="FREQ=MINUTELY;INTERVAL=5")
    now = start + 3 * 365 * 86_400
    # Correct answers (not a timing: the moved rule's answers are checked above) for a
    # rule whose occurrences are plain arithmetic.
    last = w._last_start(now)
    assert last is not None and 0 <= now - last < 300 and (last - start) % 300 == 0
    assert w.next_change(now) in (last + 60.0, last + 300.0)


async def test_closing_the_engine_hands_out_the_minute_under_way() -> None:
    registry = ProbeRegistry()

    @registry.probe("broken")
    async def broken(check: Check) -> ProbeOutcome:
        return ProbeOutcome.down("connect", "refused")

    rollups: list[Rollup] = []
    changes: list[StatusChange] = []
    # Hour-long buckets: none closes by itself while the test runs.
    engine = Engine(registry=registry, rollup_span=3600.0)
    async with engine:
        engine.add_rollup_listener(rollups.extend)
        engine.add_listener(lambda _r, c: changes.extend(c))
        engine.upsert([Check(id=1, type="broken", interval=1, timeout=1)])
        while not any(c.current is Status.DOWN for c in changes):
            await asyncio.sleep(0.05)
        went_down = next(c.at for c in changes if c.current is Status.DOWN)
        await asyncio.sleep(1.0)
        assert rollups == []
    # Closing handed out the part-filled bucket: the downtime so far, its runs, the
    # incident; nothing accounted is lost with the process.
    assert [r.check_id for r in rollups] == [1]
    (r,) = rollups
    assert r.runs_down >= 1 and r.incidents == 1
    assert r.downtime_ms >= 900
    assert r.start_ms <= went_down * 1000 < r.start_ms + r.span_ms
