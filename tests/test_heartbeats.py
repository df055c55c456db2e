"""Heartbeat checks: pings, LATE and DOWN from the core's deadlines, cron schedules in a
time zone across daylight-saving changes."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo

import pytest

import tocsin
from tocsin import Check, Engine, Status, StatusChange
from tocsin.heartbeat import HeartbeatSchedule

WARSAW = zoneinfo.ZoneInfo("Europe/Warsaw")


def local(*args: int) -> float:
    return dt.datetime(*args, tzinfo=WARSAW).timestamp()


def wall(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, WARSAW).isoformat()


def test_a_daily_cron_keeps_one_due_time_when_clocks_fall_back() -> None:
    s = HeartbeatSchedule.from_settings(60, {"schedule": "30 2 * * *", "timezone": "Europe/Warsaw"})
    # The job pinged at 02:30 CEST on the night clocks go back: 02:30 comes round again
    # an hour later (CET), but cron runs the job once, so tomorrow is next.
    pinged = local(2026, 10, 25, 2, 30, 5)
    assert wall(s.next_due(pinged)) == "2026-10-26T02:30:00+01:00"
    assert wall(s.next_due(local(2026, 10, 24, 2, 31))) == "2026-10-25T02:30:00+02:00"


def test_a_daily_cron_on_the_night_clocks_spring_forward() -> None:
    s = HeartbeatSchedule.from_settings(60, {"schedule": "30 2 * * *", "timezone": "Europe/Warsaw"})
    # 02:30 does not exist on 29 March 2026 in Warsaw: due when the clock jumps.
    assert wall(s.next_due(local(2026, 3, 28, 2, 31))) == "2026-03-29T03:00:00+02:00"
    assert wall(s.next_due(local(2026, 3, 29, 3, 1))) == "2026-03-30T02:30:00+02:00"


def test_bad_schedules_are_refused_with_the_field() -> None:
    for options, field in [
        ({"schedule": "every tuesday"}, "schedule"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"grace_period": -1}, "grace_period"),
    ]:
        with pytest.raises(tocsin.InvalidCheckError) as info:
            HeartbeatSchedule.from_settings(60, options)
        assert info.value.field == field


async def changes(stream: tocsin.EventStream, n: int, timeout: float = 10) -> list[StatusChange]:
    out: list[StatusChange] = []

    async def wait() -> None:
        async for e in stream:
            if isinstance(e, StatusChange):
                out.append(e)
                if len(out) == n:
                    return

    await asyncio.wait_for(wait(), timeout)
    return out


async def test_pings_drive_up_late_and_down() -> None:
    async with Engine() as engine:
        engine.upsert([Check(id=1, type="heartbeat", interval=1, options={"grace_period": 1})])
        events = engine.events()
        assert engine.status(1) is Status.UNKNOWN  # never pinged: new, not late
        assert engine.heartbeat_due(1) is None

        result = engine.ping(1)
        assert result is not None and result.status is Status.UP
        due = engine.heartbeat_due(1)
        assert due is not None and due > time.time()
        up, late, down = await changes(events, 3)
        assert [up.current, late.current, down.current] == [Status.UP, Status.LATE, Status.DOWN]
        assert (late.reason, down.reason) == ("late", "missed")
        assert late.at >= due  # never late before it is due

        engine.ping(1, "start", rid="run-1")
        await asyncio.sleep(0.2)
        r = engine.ping(1, "success", rid="run-1")
        assert r is not None and r.latency_ms >= 200  # the run's duration
        assert (await changes(events, 1))[0].current is Status.UP


async def test_fail_pings_and_exit_codes_are_down() -> None:
    async with Engine() as engine:
        engine.upsert([Check(id=1, type="heartbeat", interval=3600)])
        r = engine.ping(1, "fail")
        assert r is not None
        assert (r.status, r.error_kind) == (Status.DOWN, "fail")
        assert engine.status(1) is Status.DOWN
        engine.ping(1, 0)
        assert engine.status(1) is Status.UP
        r = engine.ping(1, 3)
        assert r is not None
        assert (r.status, r.error_kind, r.message) == (
            Status.DOWN,
            "exit_code",
            "the job exited with code 3",
        )
        with pytest.raises(ValueError, match="0-255"):
            engine.ping(1, 256)
        with pytest.raises(KeyError):
            engine.ping(99)


async def test_a_cron_heartbeat_expects_its_next_occurrence() -> None:
    async with Engine() as engine:
        engine.upsert(
            [
                Check(
                    id=1,
                    type="heartbeat",
                    options={"schedule": "0 4 * * *", "timezone": "Europe/Warsaw"},
                )
            ]
        )
        # On the night clocks go back in 2027 (still ahead, so no deadline fires).
        engine.ping(1, at=local(2027, 10, 31, 4, 0, 10))
        due = engine.heartbeat_due(1)
        assert due is not None
        assert wall(due) == "2027-11-01T04:00:00+01:00"


async def test_a_rearmed_heartbeat_goes_late_then_down_without_a_new_ping() -> None:
    async with Engine() as engine:
        changes: list[StatusChange] = []
        engine.add_listener(lambda results, batch: changes.extend(batch))
        engine.seed([(1, Status.UP)])
        engine.upsert([Check(id=1, type="heartbeat", interval=1, options={"grace_period": 1})])
        # The last ping was stored 1.2 s ago (before a restart): due 0.2 s ago.
        engine.rearm(1, time.time() - 1.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and engine.status(1) is not Status.DOWN:
            await asyncio.sleep(0.05)
        assert [c.current for c in changes] == [Status.LATE, Status.DOWN]
        with pytest.raises(KeyError):
            engine.rearm(2, time.time())


async def test_starts_without_a_finish_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tocsin.engine, "MAX_OPEN_RUNS", 3)
    async with Engine() as engine:
        engine.upsert([Check(id=1, type="heartbeat", interval=3600)])
        for rid in ("a", "b", "c", "d"):
            engine.ping(1, "start", rid=rid, at=100.0 + ord(rid))
        engine.ping(1, "start", rid="b", at=300.0)  # started again: the newest now
        engine.ping(1, "start", rid="e", at=400.0)
        # The oldest open runs went first ("a", then "c"); the rest still time their run.
        lost = engine.ping(1, "success", rid="a", at=500.0)
        assert lost is not None and lost.latency_ms == 0.0
        timed = engine.ping(1, "success", rid="b", at=500.0)
        assert timed is not None and timed.latency_ms == pytest.approx(200_000.0)
        assert engine.ping(1, "success", rid="c", at=500.0).latency_ms == 0.0  # type: ignore[union-attr]
        timed = engine.ping(1, "success", rid="d", at=500.0)
        assert timed is not None and timed.latency_ms == pytest.approx((500.0 - 200.0) * 1e3)
