"""The native boundary: batch calls, validation, phases, the wake-up descriptor."""

from __future__ import annotations

import select
import time

import pytest

from tocsin import _core

NOOP = 1
PYTHON = 0
TCP = 3
NO_TIMINGS = (None, None, None, None)


def wait_readable(fd: int, timeout: float) -> bool:
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r)


@pytest.fixture
def core() -> _core.Core:
    c = _core.Core()
    yield c
    c.close()


def test_loading_100k_checks_is_one_call(core: _core.Core) -> None:
    core.upsert([(i, 60_000, 5_000, NOOP, True, None) for i in range(1, 100_001)])
    checks, _, _ = core.stats()
    assert checks == 100_000
    now_ms = core.now_us() // 1000
    due = core.next_due(12_345)
    assert due is not None
    assert now_ms <= due <= now_ms + 60_000
    assert due % 60_000 == _core.phase_ms(12_345, 60_000)


def test_a_bad_spec_raises_a_value_error_and_changes_nothing(core: _core.Core) -> None:
    with pytest.raises(_core.InvalidCheckError, match="interval 999 ms"):
        core.upsert([(1, 60_000, 1_000, NOOP, True, None), (2, 999, 1_000, NOOP, True, None)])
    with pytest.raises(ValueError, match="timeout"):
        core.upsert([(3, 60_000, 0, NOOP, True, None)])
    with pytest.raises(ValueError, match="kind"):
        core.upsert([(4, 60_000, 1_000, 9, True, None)])
    assert core.stats()[0] == 0
    assert core.next_due(1) is None


def test_phases_are_stable_and_spread_over_the_interval() -> None:
    assert _core.phase_ms(42, 60_000) == _core.phase_ms(42, 60_000)
    per_second = [0] * 60
    for i in range(1, 60_001):
        per_second[_core.phase_ms(i, 60_000) // 1000] += 1
    assert max(per_second) <= 1.01 * 1000
    with pytest.raises(ValueError, match="positive"):
        _core.phase_ms(1, 0)


def test_due_work_wakes_the_descriptor_and_drains_in_one_batch(core: _core.Core) -> None:
    fd = core.wakeup_fd()
    assert not wait_readable(fd, 0)
    core.upsert([(i, 1_000, 500, PYTHON, True, None) for i in range(1, 51)])
    assert wait_readable(fd, 3.0)
    seen: set[int] = set()
    deadline = time.monotonic() + 3
    while len(seen) < 50 and time.monotonic() < deadline:
        wait_readable(fd, 1.0)
        work, results, transitions, _rollups, _timers = core.drain()
        for check_id, due_ms, dispatched_us, timeout_ms in work:
            assert dispatched_us >= due_ms * 1000, "dispatched before it was due"
            assert timeout_ms == 500
            seen.add(check_id)
        assert results == []
        assert transitions == []
    assert seen == set(range(1, 51))


def test_reported_results_fold_into_status_and_transitions(core: _core.Core) -> None:
    core.upsert([(7, 60_000, 1_000, PYTHON, True, None)])
    now = core.now_us()
    core.report([(7, 0, now, 1_500, 2, "connect_refused", "refused", 0, 0, NO_TIMINGS, None, 0)])
    _work, results, transitions, _rollups, _timers = core.drain()
    assert results == [
        (7, 0, now, 1_500, 2, "connect_refused", "refused", 0, 0, NO_TIMINGS, None, 0)
    ]
    assert transitions == [(7, 0, 2, now + 1_500, "connect_refused", [(0, 2)], False)]
    assert core.status(7) == 2
    core.report([(7, 0, now + 10, 5, 2, "connect_refused", None, 0, 0, NO_TIMINGS, None, 0)])
    assert core.drain()[2] == []


def test_pause_resume_and_remove(core: _core.Core) -> None:
    core.upsert([(1, 5_000, 1_000, NOOP, True, None)])
    assert core.pause([1, 99]) == 1
    assert core.next_due(1) is None
    assert core.resume([1]) == 1
    assert core.next_due(1) is not None
    assert core.remove([1, 1]) == 1
    assert core.stats()[0] == 0


def test_a_restart_keeps_the_phase() -> None:
    a = _core.Core()
    a.upsert([(77, 30_000, 1_000, NOOP, True, None)])
    due_a = a.next_due(77)
    a.close()
    b = _core.Core()
    b.upsert([(77, 30_000, 1_000, NOOP, True, None)])
    due_b = b.next_due(77)
    b.close()
    assert due_a is not None and due_b is not None
    assert due_a % 30_000 == due_b % 30_000
