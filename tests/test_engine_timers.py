"""Timer channels of `tocsin.Engine`: keyed one-shot timers on the native timing wheel,
fired back to each channel's listeners on the loop."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest

from tocsin import Engine, EngineClosedError
from tocsin.engine import TimerChannel
from tocsin.models import FiredTimer


class Heard:
    """Every batch a channel's listener got, and a way to wait for a number of timers."""

    def __init__(self, channel: TimerChannel) -> None:
        self.fired: list[FiredTimer] = []
        self.batches = 0
        self._changed = asyncio.Event()
        channel.listen(self._hear)

    def _hear(self, batch: list[FiredTimer]) -> None:
        assert batch, "a listener is never called with nothing"
        self.batches += 1
        self.fired.extend(batch)
        self._changed.set()

    async def until(self, n: int, timeout: float = 10.0) -> list[FiredTimer]:
        async def wait() -> None:
            while len(self.fired) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.fired

    def ids(self) -> list[int]:
        return sorted(f.id for f in self.fired)


def ms(t: float) -> float:
    """A due time as the core keeps it: to the millisecond, rounded up."""
    return max(math.ceil(t * 1000 - 1e-3), 0) / 1000


async def test_timers_fire_once_at_their_due_time_and_channels_keep_their_ids() -> None:
    async with Engine() as engine:
        a, b = engine.timer_channel("a"), engine.timer_channel("b")
        assert engine.timer_channel("a") is a
        heard_a, heard_b = Heard(a), Heard(b)
        now = time.time()
        a.arm([(1, now + 0.2), (2, now + 0.1), (2**48 - 1, now + 0.15)])
        b.arm([(1, now + 0.3)])
        assert engine.stats()["timers"] == 4
        fired_a = await heard_a.until(3)
        fired_b = await heard_b.until(1)
        assert [f.id for f in fired_a] == [2, 2**48 - 1, 1], "in due order"
        assert {f.id: f.due for f in fired_a} == {
            1: ms(now + 0.2),
            2: ms(now + 0.1),
            2**48 - 1: ms(now + 0.15),
        }
        assert fired_b == [FiredTimer(1, ms(now + 0.3), fired_b[0].fired)]
        for f in fired_a + fired_b:
            assert f.fired >= f.due, "fired early"
        # Once each: nothing more comes while a later timer of the same channel fires.
        a.arm([(9, time.time() + 0.2)])
        await heard_a.until(4)
        assert heard_a.ids() == [1, 2, 9, 2**48 - 1]
        assert heard_b.ids() == [1]
        assert engine.stats()["timers"] == 0


async def test_a_cancelled_timer_never_fires() -> None:
    async with Engine() as engine:
        esc, other = engine.timer_channel("escalations"), engine.timer_channel("other")
        heard, heard_other = Heard(esc), Heard(other)
        now = time.time()
        esc.arm([(1, now + 0.2), (2, now + 0.3)])
        other.arm([(1, now + 0.2)])
        assert esc.cancel([1, 3]) == 1, "3 was never armed"
        assert esc.cancel([1]) == 0, "cancelled already"
        assert esc.cancel([]) == 0
        await heard.until(1)
        await heard_other.until(1)
        # A sentinel armed after the cancelled due time: when it fires, 1 would have.
        esc.arm([(4, time.time() + 0.1)])
        await heard.until(2)
        assert heard.ids() == [2, 4]
        assert heard_other.ids() == [1], "the same id in another channel is its own"
        assert esc.cancel([2]) == 0, "fired already"


async def test_re_arming_moves_the_timer_and_it_fires_once_at_the_new_time() -> None:
    async with Engine() as engine:
        ch = engine.timer_channel("steps")
        heard = Heard(ch)
        now = time.time()
        ch.arm([(1, now + 3600), (2, now + 0.1)])
        ch.arm([(1, now + 0.2), (2, now + 0.4)])
        assert engine.stats()["timers"] == 2
        fired = await heard.until(2)
        assert [(f.id, f.due) for f in fired] == [(1, ms(now + 0.2)), (2, ms(now + 0.4))]
        assert fired[1].fired >= fired[1].due, "not at its old time"
        ch.arm([(3, time.time() + 0.1)])
        await heard.until(3)
        assert heard.ids() == [1, 2, 3], "each once"


async def test_a_due_time_in_the_past_fires_at_once() -> None:
    async with Engine() as engine:
        ch = engine.timer_channel("late")
        heard = Heard(ch)
        hour_ago = time.time() - 3600
        ch.arm([(1, hour_ago), (2, 0.0), (3, -5.0)])
        fired = await heard.until(3)
        assert sorted((f.id, f.due) for f in fired) == [(1, ms(hour_ago)), (2, 0.0), (3, 0.0)]
        assert fired[-1].id == 1, "in due order"
        assert all(f.fired >= f.due for f in fired)


async def test_timers_armed_before_start_fire_once_it_runs() -> None:
    engine = Engine()
    ch = engine.timer_channel("early")
    ch.arm([(5, time.time() - 1)])
    heard = Heard(ch)
    engine.start()
    try:
        assert [f.id for f in await heard.until(1)] == [5]
    finally:
        await engine.close()


async def test_ten_thousand_timers_armed_in_one_call_fire_once_each() -> None:
    async with Engine() as engine:
        ch = engine.timer_channel("bulk")
        heard = Heard(ch)
        now = time.time()
        ch.arm([(i, now + (i % 500) / 1000) for i in range(10_000)])
        fired = await heard.until(10_000)
        await asyncio.sleep(0.2)
        assert len(fired) == 10_000, "none twice"
        assert heard.ids() == list(range(10_000))
        assert all(f.fired >= f.due for f in fired)
        assert engine.stats()["timers"] == 0


async def test_bad_ids_and_due_times_are_refused_and_nothing_is_armed() -> None:
    async with Engine() as engine:
        ch = engine.timer_channel("checked")
        now = time.time()
        bad: list[tuple[list[tuple[int, float]], str]] = [
            ([(1, now), (2**48, now)], "outside 0 <= id < 2\\*\\*48"),
            ([(1, now), (-1, now)], "outside 0 <= id < 2\\*\\*48"),
            ([(1, now), (2, math.nan)], "not a finite number"),
            ([(1, now), (2, math.inf)], "not a finite number"),
            ([(1, now), (2, 1e300)], "too far away"),
        ]
        for items, reason in bad:
            with pytest.raises(ValueError, match=reason):
                ch.arm(items)
        assert engine.stats()["timers"] == 0
        with pytest.raises(ValueError, match="outside 0 <= id"):
            ch.cancel([2**48])


async def test_a_failing_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Engine() as engine:
        ch = engine.timer_channel("noisy")

        def broken(batch: list[FiredTimer]) -> None:
            raise RuntimeError("listener bug")

        ch.listen(broken)
        heard = Heard(ch)
        with caplog.at_level(logging.ERROR, logger="tocsin.engine"):
            ch.arm([(1, time.time())])
            await heard.until(1)
        assert heard.ids() == [1]
        assert any("noisy" in r.getMessage() for r in caplog.records)


async def test_a_closed_engine_takes_no_timers() -> None:
    engine = Engine()
    engine.start()
    ch = engine.timer_channel("gone")
    ch.arm([(1, time.time() + 3600)])
    await engine.close()
    with pytest.raises(EngineClosedError):
        ch.arm([(2, time.time())])
    with pytest.raises(EngineClosedError):
        ch.cancel([1])
