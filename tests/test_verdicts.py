"""Verdicts through the engine: several sources, a critical one, thresholds, pause,
maintenance flags and stale sources."""

from __future__ import annotations

import asyncio
import time

import pytest

import tocsin
from tocsin import Check, Engine, ProbeOutcome, ProbeRegistry, Result, Status, StatusChange


def result(check_id: int, source: str, status: Status, kind: str | None = None) -> Result:
    return Result(
        check_id=check_id,
        status=status,
        started_at=time.time(),
        latency_ms=1.0,
        error_kind=kind or ("timeout" if status is Status.DOWN else None),
        source=source,
    )


async def next_change(stream: tocsin.EventStream, timeout: float = 10) -> StatusChange:
    async def wait() -> StatusChange:
        async for event in stream:
            if isinstance(event, StatusChange):
                return event
        raise AssertionError("stream closed")

    return await asyncio.wait_for(wait(), timeout)


# A day-long interval: the check's own scheduled run never comes during a test.
QUIET = {"interval": 86_400, "timeout": 1}


async def test_three_sources_with_a_critical_one_failing_in_turn() -> None:
    async with Engine() as engine:
        geo = engine.source_id("geo:EU-PL")
        engine.upsert([Check(id=1, type="noop", **QUIET, options={"critical_sources": [geo]})])
        events = engine.events()

        engine.ingest([result(1, s, Status.UP) for s in ("central", "agent:1", "geo:EU-PL")])
        up = await next_change(events)
        assert (up.previous, up.current) == (Status.UNKNOWN, Status.UP)
        assert up.sources == {"central": "UP"}  # the first result already decided it
        assert engine.sources(1) == {"central": "UP", "agent:1": "UP", "geo:EU-PL": "UP"}

        engine.ingest([result(1, "agent:1", Status.DOWN, "connect_refused")])
        degraded = await next_change(events)
        assert (degraded.current, degraded.reason) == (Status.DEGRADED, "connect_refused")
        assert degraded.sources["agent:1"] is Status.DOWN

        engine.ingest([result(1, "central", Status.DOWN)])
        assert engine.status(1) is Status.DEGRADED  # the critical source is still UP

        engine.ingest([result(1, "geo:EU-PL", Status.DOWN, "dns_error")])
        down = await next_change(events)
        assert (down.previous, down.current, down.reason) == (
            Status.DEGRADED,
            Status.DOWN,
            "dns_error",
        )

        engine.ingest([result(1, "geo:EU-PL", Status.UP), result(1, "agent:1", Status.UP)])
        await next_change(events)
        assert engine.status(1) is Status.DEGRADED  # central still DOWN
        engine.ingest([result(1, "central", Status.UP)])
        back = await next_change(events)
        assert back.current is Status.UP
        assert engine.sources(1) == {"central": "UP", "agent:1": "UP", "geo:EU-PL": "UP"}


async def test_down_only_after_alert_after_failures_and_in_a_window() -> None:
    async with Engine() as engine:
        engine.upsert(
            [
                Check(id=1, type="noop", **QUIET, options={"alert_after_failures": 3}),
                Check(
                    id=2,
                    type="noop",
                    **QUIET,
                    options={"alert_after_failures": 2, "alert_window_runs": 4},
                ),
            ]
        )
        engine.ingest([result(1, "central", Status.UP)])
        for _ in range(2):
            engine.ingest([result(1, "central", Status.DOWN)])
        await asyncio.sleep(0.05)
        assert engine.status(1) is Status.UP
        engine.ingest([result(1, "central", Status.DOWN)])
        assert engine.status(1) is Status.DOWN

        seq = [Status.DOWN, Status.UP, Status.UP, Status.UP, Status.DOWN]
        engine.ingest([result(2, "central", s) for s in seq])
        assert engine.status(2) is Status.UP  # one failure within the last 4 runs
        engine.ingest([result(2, "central", Status.DOWN)])
        assert engine.status(2) is Status.DOWN


async def test_bad_verdict_settings_are_refused_with_the_field() -> None:
    async with Engine() as engine:
        for options in (
            {"alert_after_failures": 0},
            {"alert_after_failures": 5, "alert_window_runs": 3},
        ):
            with pytest.raises(tocsin.InvalidCheckError) as info:
                engine.upsert([Check(id=1, type="noop", **QUIET, options=options)])
            assert info.value.field == "alert_after_failures"


async def test_pause_is_a_paused_verdict_and_maintenance_flags_transitions() -> None:
    async with Engine() as engine:
        engine.upsert([Check(id=1, type="noop", **QUIET)])
        events = engine.events()
        engine.ingest([result(1, "central", Status.UP)])
        assert (await next_change(events)).current is Status.UP

        engine.pause([1])
        paused = await next_change(events)
        assert (paused.current, paused.reason) == (Status.PAUSED, "paused")
        assert engine.status(1) is Status.PAUSED
        engine.resume([1])
        assert (await next_change(events)).current is Status.UP

        engine.set_maintenance([1], True)
        engine.ingest([result(1, "central", Status.DOWN)])
        down = await next_change(events)
        assert (down.current, down.in_maintenance) == (Status.DOWN, True)
        engine.set_maintenance([1], False)
        engine.ingest([result(1, "central", Status.UP)])
        up = await next_change(events)
        assert (up.current, up.in_maintenance) == (Status.UP, False)


async def test_a_silent_source_goes_stale_and_leaves_the_verdict() -> None:
    registry = ProbeRegistry()

    @registry.probe("fine")
    async def fine(check: Check) -> ProbeOutcome:
        return ProbeOutcome.up()

    async with Engine(registry=registry) as engine:
        events = engine.events()
        engine.upsert([Check(id=1, type="fine", interval=1, timeout=1)])
        assert (await next_change(events)).current is Status.UP
        engine.ingest([result(1, "agent:7", Status.DOWN)])
        assert (await next_change(events)).current is Status.DEGRADED
        # agent:7 never reports again: after three intervals it is stale, not DOWN.
        stale = await next_change(events, timeout=15)
        assert (stale.current, stale.reason) == (Status.UP, "source stale")
        assert stale.sources == {"central": "UP", "agent:7": "UNKNOWN"}
