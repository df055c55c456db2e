"""Micro-benchmarks of the result codecs: the agents' wire format (tocsin/agent/wire.py),
the result record (`Result.values()`) and the engine facade's decoding of the native
core's result tuples (`tocsin.engine._result`). Every figure is for a batch of 5,000
results, the shape an agent sends and the engine drains; each benchmark checks what it
got back, so a broken codec fails instead of timing.

    .venv/bin/python -m pytest bench/micro --benchmark-only
"""

from __future__ import annotations

import random
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from tocsin.agent import wire
from tocsin.api.agent_wire import MAX_CLOCK_AHEAD, MAX_RESULT_AGE
from tocsin.engine import Sources, _result
from tocsin.models import RESULT_FIELDS, STATUS_BY_CODE, Result, Status, Timings

# At least 20 rounds: the rounds are max-time / a calibration run, and one slow
# calibration run (a collection, a busy machine) would leave a handful of rounds.
pytestmark = pytest.mark.benchmark(group="codecs", min_rounds=20)

N = 5_000
SOURCE = "agent:3"
ORG = 9
NOW = time.time()


def _results(n: int = N, source: str = "central") -> list[Result]:
    """`n` results as probes produce them: mostly UP HTTP runs with phase timings, some
    DOWN with an error, some DEGRADED, a few with details; fixed seed."""
    rnd = random.Random(14)
    out = []
    for i in range(n):
        started = NOW - 60 + i * 0.01
        kind = rnd.random()
        if kind < 0.8:
            out.append(
                Result(
                    check_id=1 + i % 1_000,
                    status=Status.UP,
                    started_at=started,
                    latency_ms=round(rnd.uniform(5, 300), 3),
                    due_at=started - 0.002,
                    status_code=200,
                    source=source,
                    timings=Timings(0.4, 1.2, 3.5, round(rnd.uniform(2, 250), 3)),
                )
            )
        elif kind < 0.95:
            out.append(
                Result(
                    check_id=1 + i % 1_000,
                    status=Status.DOWN,
                    started_at=started,
                    latency_ms=10_000.0,
                    due_at=started - 0.002,
                    error_kind="timeout",
                    message=f"no answer within 10 s from 198.51.100.{i % 250}",
                    source=source,
                    timings=Timings(0.4, None, None, None),
                )
            )
        else:
            out.append(
                Result(
                    check_id=1 + i % 1_000,
                    status=Status.DEGRADED,
                    started_at=started,
                    latency_ms=round(rnd.uniform(1_000, 3_000), 3),
                    due_at=started - 0.002,
                    status_code=200,
                    message="slower than 1000 ms",
                    source=source,
                    details_json='{"bytes": 5120, "address": "203.0.113.7"}',
                )
            )
    return out


RESULTS = _results()
# The same results as the agent that produced them: wire rows, body, decoded object.
ROWS = [wire.row(r) for r in RESULTS]
BODY = wire.encode(1, ROWS)
DATA = wire.decode(BODY, wire.MSGPACK)
OLDEST, NEWEST = NOW - MAX_RESULT_AGE, NOW + MAX_CLOCK_AHEAD


def _expected_row(r: Result) -> list[Any]:
    """A wire row written out field by field (the codec derives it from the names)."""
    t = r.timings or Timings()
    return [
        r.check_id,
        r.status.value,
        r.started_at,
        r.latency_ms,
        r.due_at,
        r.error_kind,
        r.message,
        r.status_code,
        t.dns_ms,
        t.connect_ms,
        t.tls_ms,
        t.first_byte_ms,
        r.details_json,
    ]


def test_wire_row(benchmark: Any) -> None:
    """Agent side: a probe result to its wire row (the runner's listener, per result)."""
    rows = benchmark(lambda: [wire.row(r) for r in RESULTS])
    assert len(rows) == N
    assert rows == [_expected_row(r) for r in RESULTS]


def test_wire_encode(benchmark: Any) -> None:
    """Agent side: 5,000 rows to a msgpack batch body (what the spool writes)."""
    body = benchmark(wire.encode, 7, ROWS)
    assert msgpack.unpackb(body, raw=False) == {"seq": 7, "results": ROWS}


def test_wire_decode(benchmark: Any) -> None:
    """Server side: the msgpack body of 5,000 rows to the batch object."""
    data = benchmark(wire.decode, BODY, wire.MSGPACK)
    assert data == {"seq": 1, "results": ROWS}


def test_wire_parse(benchmark: Any) -> None:
    """Server side: validation of a decoded batch of 5,000 rows (the column-wise path)."""
    batch = benchmark(wire.parse, DATA, SOURCE, oldest=OLDEST, newest=NEWEST)
    assert batch.seq == 1
    assert batch.source == SOURCE
    assert batch.rows == ROWS


def test_wire_store_rows(benchmark: Any) -> None:
    """Server side: a parsed batch to the rows the store inserts (`RESULT_COLUMNS`)."""
    batch = wire.parse(DATA, SOURCE, oldest=OLDEST, newest=NEWEST)
    rows = benchmark(batch.store_rows, ORG)
    assert len(rows) == N
    for got, r in zip(rows, RESULTS, strict=True):
        values = r.values()
        # check_id, organization_id, then the record's fields with the agent as source.
        assert got == (values[0], ORG, SOURCE, *values[2:])


def test_wire_verdict_rows(benchmark: Any) -> None:
    """Server side: a parsed batch to what the engine's verdicts read."""
    batch = wire.parse(DATA, SOURCE, oldest=OLDEST, newest=NEWEST)
    rows = benchmark(batch.verdict_rows)
    assert rows == [
        (r.check_id, r.started_at, r.latency_ms, r.status.value, r.error_kind, r.message)
        for r in RESULTS
    ]


def test_wire_receive_path(benchmark: Any) -> None:
    """Server side, the whole codec part of `POST /api/agents/results`
    (api/agent_wire.py) without the store and the engine: decode, parse (which keeps
    U+0000 as U+FFFD), store rows, verdict rows."""

    def receive() -> tuple[list[tuple[Any, ...]], list[Any]]:
        data = wire.decode(BODY, wire.MSGPACK)
        batch = wire.parse(data, SOURCE, oldest=OLDEST, newest=NEWEST)
        return batch.store_rows(ORG), batch.verdict_rows()

    stored, verdicts = benchmark(receive)
    assert len(stored) == len(verdicts) == N
    assert stored[0] == (RESULTS[0].check_id, ORG, SOURCE, *RESULTS[0].values()[2:])
    assert verdicts[-1][0] == RESULTS[-1].check_id


def test_result_values(benchmark: Any) -> None:
    """The result record's values in `RESULT_FIELDS` order, for 5,000 results."""
    values = benchmark(lambda: [r.values() for r in RESULTS])
    assert len(values) == N
    for got, r in zip(values, RESULTS, strict=True):
        assert dict(zip(RESULT_FIELDS, got, strict=True)) == {
            "check_id": r.check_id,
            "source": r.source,
            "started_at": r.started_at,
            "due_at": r.due_at,
            "latency_ms": r.latency_ms,
            "status": r.status.value,
            "error_kind": r.error_kind,
            "message": r.message,
            "status_code": r.status_code,
            "dns_ms": r.timings.dns_ms if r.timings else None,
            "connect_ms": r.timings.connect_ms if r.timings else None,
            "tls_ms": r.timings.tls_ms if r.timings else None,
            "first_byte_ms": r.timings.first_byte_ms if r.timings else None,
            "details_json": r.details_json,
        }


def _core_tuples(n: int = N) -> list[tuple[Any, ...]]:
    """Result tuples as the native core hands them over in `drain()` (rust_core/py.rs):
    (check_id, due_ms, started_us, latency_us, status code, error_kind, message,
    http status or 0, run_id, timings in us, details_json, source id)."""
    rnd = random.Random(15)
    started0 = int(NOW * 1e6)
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        check_id, started = 1 + i % 1_000, started0 + i * 10_000
        due_ms = started // 1_000 - 2
        if rnd.random() < 0.85:
            latency = rnd.randrange(5_000, 300_000)
            timings = (400, 1_200, 3_500, rnd.randrange(2_000, 250_000))
            out.append(
                (check_id, due_ms, started, latency, 1, None, None, 200, i, timings, None, i % 3)
            )
        else:
            message = "connection refused" if i % 2 else "connection\x00refused"
            timings = (400, None, None, None)
            out.append(
                (check_id, due_ms, started, 1_500, 2, "connect", message, 0, i, timings, None, 0)
            )
    return out


def test_engine_result_decoding(benchmark: Any) -> None:
    """The engine facade: 5,000 native result tuples to `Result` records (what every
    drain does with the core's results)."""
    tuples = _core_tuples()
    sources = Sources()
    sources.id("agent:1")
    sources.id("agent:2")
    results = benchmark(lambda: [_result(t, sources) for t in tuples])
    assert len(results) == N
    names = {0: "central", 1: "agent:1", 2: "agent:2"}
    for r, t in zip(results, tuples, strict=True):
        assert r.check_id == t[0]
        assert r.source == names[t[11]]
        assert r.status is STATUS_BY_CODE[t[4]]
        assert r.started_at == t[2] / 1e6
        assert r.latency_ms == t[3] / 1e3
        assert r.due_at == t[1] / 1e3
        assert r.status_code == (t[7] or None)
        assert r.timings is not None
        assert r.timings.dns_ms == 0.4
        if r.status is Status.DOWN:
            # NUL is not storable text: it arrives as U+FFFD.
            assert r.message in ("connection refused", "connection\ufffdrefused")
            assert r.timings.connect_ms is None
        else:
            assert r.timings.first_byte_ms == t[9][3] / 1e3
