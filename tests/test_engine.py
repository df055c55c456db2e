"""Embedding `tocsin.Engine` in an asyncio program: schedule, plugins, results, changes."""

from __future__ import annotations

import asyncio
import time

import pytest

import tocsin
from helpers import Target
from tocsin import Check, Engine, ProbeOutcome, ProbeRegistry, Status, StatusChange


async def collect(
    stream: tocsin.EventStream,
    n: int,
    kind: type,
    timeout: float = 10.0,
    seen: list | None = None,
) -> list:
    out: list = []

    async def run() -> None:
        async for event in stream:
            if seen is not None:
                seen.append(event)
            if isinstance(event, kind):
                out.append(event)
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_native_noop_checks_run_on_schedule_and_report_one_change() -> None:
    async with Engine() as engine:
        events = engine.events()
        engine.upsert([Check(id=i, type="noop", interval=1) for i in (1, 2, 3)])
        seen: list = []
        results = await collect(events, 6, tocsin.Result, seen=seen)
        await asyncio.sleep(0.1)
        seen.extend(events._events)
        for r in results:
            assert r.status is Status.UP
            assert r.due_at is not None
            assert r.started_at >= r.due_at
        changes = [e for e in seen if isinstance(e, StatusChange)]
        assert {c.check_id for c in changes} == {1, 2, 3}
        assert all(c.previous is Status.UNKNOWN and c.current is Status.UP for c in changes)


async def test_a_python_plugin_gets_the_check_and_its_outcome_becomes_the_status() -> None:
    registry = ProbeRegistry()
    calls: list[int] = []

    @registry.probe("flaky")
    async def flaky(check: Check) -> ProbeOutcome:
        calls.append(check.id)
        if check.options["fail"]:
            return ProbeOutcome.down("protocol_error", "bad banner")
        return ProbeOutcome.up(latency_ms=1.5)

    async with Engine(registry=registry) as engine:
        events = engine.events()
        engine.upsert(
            [
                Check(id=1, type="flaky", interval=1, options={"fail": False}),
                Check(id=2, type="flaky", interval=1, options={"fail": True}),
            ]
        )
        changes = await collect(events, 2, StatusChange)
        by_id = {c.check_id: c for c in changes}
        assert by_id[1].current is Status.UP
        assert by_id[2].current is Status.DOWN
        assert by_id[2].reason == "protocol_error"
        assert engine.status(2) is Status.DOWN
        assert set(calls) >= {1, 2}


async def test_a_hung_plugin_is_cut_off_at_the_timeout_and_an_exception_is_a_down() -> None:
    registry = ProbeRegistry()

    @registry.probe("hang")
    async def hang(check: Check) -> ProbeOutcome:
        await asyncio.sleep(60)
        return ProbeOutcome.up()

    @registry.probe("boom")
    async def boom(check: Check) -> ProbeOutcome:
        raise RuntimeError("kaput")

    async with Engine(registry=registry) as engine:
        t0 = time.monotonic()
        r = await engine.run_once(Check(id=1, type="hang", timeout=0.3))
        assert time.monotonic() - t0 < 5
        assert (r.status, r.error_kind) == (Status.DOWN, "timeout")
        r = await engine.run_once(Check(id=2, type="boom"))
        assert (r.status, r.error_kind) == (Status.DOWN, "probe_error")
        assert r.message == "RuntimeError: kaput"


@pytest.mark.parametrize("probe_type", ["uptime", "http_aiohttp"])
async def test_http_probes_follow_a_real_server_down_and_up(
    target: Target, probe_type: str
) -> None:
    """The native probe and the aiohttp reference plugin agree."""
    async with Engine() as engine:
        events = engine.events()
        engine.upsert([Check(id=1, type=probe_type, interval=1, timeout=2, url=target.url)])
        [up] = await collect(events, 1, StatusChange)
        assert up.current is Status.UP
        await target.stop()
        [down] = await collect(events, 1, StatusChange)
        assert (down.current, down.reason) == (Status.DOWN, "connect_refused")
        await target.start()
        [back] = await collect(events, 1, StatusChange)
        assert back.current is Status.UP


@pytest.mark.parametrize("probe_type", ["uptime", "http_aiohttp"])
async def test_run_once_reports_status_code_and_expected_codes(
    target: Target, probe_type: str
) -> None:
    async with Engine() as engine:
        r = await engine.run_once(Check(id=1, type=probe_type, url=target.url + "status/503"))
        assert (r.status, r.error_kind, r.status_code) == (Status.DOWN, "http_status", 503)
        r = await engine.run_once(
            Check(
                id=1,
                type=probe_type,
                url=target.url + "status/503",
                options={"expected_status_codes": [503]},
            )
        )
        assert (r.status, r.status_code) == (Status.UP, 503)
        assert r.latency_ms > 0
        assert engine.status(1) is Status.UNKNOWN  # run_once does not record by default


async def test_bad_checks_raise_value_errors_and_change_nothing() -> None:
    async with Engine() as engine:
        with pytest.raises(tocsin.UnknownProbeTypeError):
            engine.upsert([Check(id=1, type="noop"), Check(id=2, type="nope")])
        with pytest.raises(tocsin.InvalidCheckError):
            engine.upsert([Check(id=3, type="noop", interval=0.5)])
        with pytest.raises(ValueError, match="interval"):
            engine.upsert([Check(id=4, type="noop", interval=86_401)])
        assert engine.stats()["checks"] == 0
        assert engine.get(1) is None


async def test_pause_resume_remove_and_listener() -> None:
    batches: list[int] = []
    async with Engine() as engine:
        engine.add_listener(lambda results, changes: batches.append(len(results)))
        engine.upsert([Check(id=1, type="noop", interval=1)])
        assert engine.next_due(1) is not None
        engine.pause([1])
        assert engine.status(1) is Status.PAUSED
        assert engine.next_due(1) is None
        engine.resume([1])
        assert engine.next_due(1) is not None
        await asyncio.sleep(1.2)
        assert sum(batches) >= 1
        assert engine.remove([1]) == 1
        assert engine.next_due(1) is None
    with pytest.raises(tocsin.EngineClosedError):
        engine.upsert([Check(id=5, type="noop")])


async def test_a_slow_consumer_loses_the_oldest_events_not_the_engine() -> None:
    async with Engine() as engine:
        stream = engine.events(maxsize=5)
        engine.upsert([Check(id=i, type="noop", interval=1) for i in range(1, 51)])
        await asyncio.sleep(1.5)
        assert stream.dropped > 0
        assert len(stream._events) == 5
        stream.close()
        assert [e async for e in stream] != []


async def test_loading_stored_checks_keeps_out_only_the_ones_refused() -> None:
    """A chunk holding a check the engine refuses is loaded one by one: the bad ones
    are kept out with their reasons (field named), every other one is scheduled;
    `validate` refuses the same without changing anything."""
    bad_interval = Check(id=1500, type="noop", interval=0.01)
    bad_port = Check(id=2300, type="tcp", host="127.0.0.1", port=None, interval=60)
    heartbeat = Check(id=2400, type="heartbeat", options={"schedule": "0 0 30 2 *"})
    checks = [Check(id=i, type="noop", interval=60) for i in range(1, 2501)]
    for bad in (bad_interval, bad_port, heartbeat):
        checks[bad.id - 1] = bad
    async with Engine() as engine:
        for bad in (bad_interval, bad_port, heartbeat):
            with pytest.raises(tocsin.InvalidCheckError):
                engine.validate([bad])
        assert engine.get(1) is None
        refused = engine.load(checks)
        assert sorted(refused) == [1500, 2300, 2400]
        assert refused[1500] == "interval: 10 ms is outside 1000..=86400000 ms"
        assert refused[2400].startswith("schedule: ")
        assert engine.refusal(2300) == refused[2300]
        assert engine.get(1499) is not None and engine.get(2500) is not None
        assert engine.get(1500) is None
        # A valid change schedules it and clears the refusal.
        engine.upsert([Check(id=1500, type="noop", interval=60)])
        assert engine.refusal(1500) is None and engine.get(1500) is not None
