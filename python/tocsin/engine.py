"""`tocsin.Engine`: the embeddable facade over the native core.

The core's clock thread owns the schedule. Native probe types (HTTP, TCP, UDP, DNS,
ICMP, TLS) run on the core's own threads; other types are handed to this asyncio loop
as due work for their plugin. When the core has work or news (results, status changes)
it makes a file descriptor readable; the loop wakes on it, drains everything in one
call, starts the due plugin probes and publishes the news. Nothing crosses the
boundary one probe at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import tocsin._core as _core
from tocsin.heartbeat import HeartbeatSchedule
from tocsin.maintenance import MaintenanceWindow
from tocsin.models import (
    CODE_BY_STATUS,
    STATUS_BY_CODE,
    Check,
    FiredTimer,
    ProbeOutcome,
    Result,
    Rollup,
    Status,
    StatusChange,
    Timings,
    storable_text,
)
from tocsin.probes import PYTHON_KIND, ProbeRegistry, default_registry
from tocsin.schedules import refusal_text

log = logging.getLogger("tocsin.engine")

Event = Result | StatusChange
Listener = Callable[[Sequence[Result], Sequence[StatusChange]], None]
TimerListener = Callable[[list[FiredTimer]], None]

_TimingsTuple = tuple[int | None, int | None, int | None, int | None]
# The native result record: (check_id, due_ms, started_us, latency_us, status,
# error_kind, message, status_code, run_id, timings, details_json).
_ResultTuple = tuple[
    int, int, int, int, int, str | None, str | None, int, int, _TimingsTuple, str | None, int
]
# (check_id, previous, current, at_us, reason, [(source, status)], in_maintenance)
_TransitionTuple = tuple[int, int, int, int, str | None, list[tuple[int, int]], bool]
CENTRAL = 0
# Heartbeat runs started (`/start` pings) and not finished yet, kept at most.
MAX_OPEN_RUNS = 100_000
# Stored checks are loaded this many per native call (one by one only in a chunk that
# holds a check the engine refuses).
LOAD_CHUNK = 1_000
_SIGNALS = ("start", "log", "success", "fail")
# The run id of results `ingest_verdicts` folds in (never handed out by `run_many`): the
# core folds them without queueing them back (rust_core/engine.rs STORED_RUN).
_STORED = 2**63 - 1
# Timer channels share the core's key space: a key is the channel's index in the top 16
# bits and the caller's id in the low 48.
_TIMER_ID_BITS = 48
TIMER_ID_LIMIT = 1 << _TIMER_ID_BITS
_TIMER_ID_MASK = TIMER_ID_LIMIT - 1
MAX_TIMER_CHANNELS = 1 << 16
# Due times the core takes (ms since the epoch): kept well inside its u64.
_MAX_DUE_MS = 1 << 62


class Sources:
    """Source names (`central`, `agent:5`, `geo:EU-PL`) and the small ids the core uses
    for them; ids are given out as names first appear."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {"central": CENTRAL}
        self._names: dict[int, str] = {CENTRAL: "central"}

    def id(self, name: str) -> int:
        found = self._ids.get(name)
        if found is None:
            found = self._ids[name] = len(self._ids)
            self._names[found] = name
        return found

    def name(self, source_id: int) -> str:
        return self._names.get(source_id, f"source:{source_id}")

    def statuses(self, pairs: list[tuple[int, int]]) -> dict[str, Status]:
        return {self.name(s): STATUS_BY_CODE[code] for s, code in pairs}


_NO_TIMINGS: _TimingsTuple = (None, None, None, None)


class EngineClosedError(RuntimeError):
    """The engine is not running."""


def _ms(us: int | None) -> float | None:
    return None if us is None else us / 1e3


def _us(t: Timings | None) -> _TimingsTuple:
    if t is None:
        return _NO_TIMINGS
    parts = (t.dns_ms, t.connect_ms, t.tls_ms, t.first_byte_ms)
    return tuple(None if ms is None else round(ms * 1e3) for ms in parts)  # type: ignore[return-value]


def _result(t: _ResultTuple, sources: Sources) -> Result:
    check_id, due_ms, started_us, latency_us, status, kind, message, code, _, tm, details, src = t
    return Result(
        check_id=check_id,
        source=sources.name(src),
        status=STATUS_BY_CODE[status],
        started_at=started_us / 1e6,
        latency_ms=latency_us / 1e3,
        due_at=due_ms / 1e3 if due_ms else None,
        error_kind=storable_text(kind),
        message=storable_text(message),
        status_code=code or None,
        timings=None if tm == _NO_TIMINGS else Timings(*(_ms(x) for x in tm)),
        details_json=details,
    )


def _tuple(
    check_id: int, due_ms: int, started_us: int, o: ProbeOutcome, fallback_us: int
) -> _ResultTuple:
    latency_us = int(o.latency_ms * 1e3) if o.latency_ms is not None else fallback_us
    return (
        check_id,
        due_ms,
        started_us,
        max(latency_us, 0),
        CODE_BY_STATUS.get(o.status, CODE_BY_STATUS[Status.DOWN]),
        o.error_kind,
        o.message,
        o.status_code or 0,
        0,
        _NO_TIMINGS,
        json.dumps(o.details) if o.details else None,
        CENTRAL,
    )


class EventStream:
    """An async iterator over results and status changes. Bounded: a consumer that falls
    behind loses the oldest events (counted in `dropped`), never slows the engine."""

    def __init__(self, engine: Engine, maxsize: int) -> None:
        self._engine = engine
        self._events: collections.deque[Event] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _push(self, events: Iterable[Event]) -> None:
        for event in events:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._engine._streams.discard(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()


def _due_ms(due: float) -> int:
    """A due time in Unix seconds as the core's ms, rounded up so nothing fires before
    it (less a µs, so float noise in `x.123 * 1000` does not cost a millisecond)."""
    if not math.isfinite(due):
        raise ValueError(f"timer due time {due!r} is not a finite number of seconds")
    ms = math.ceil(due * 1000 - 1e-3)
    if ms >= _MAX_DUE_MS:
        raise ValueError(f"timer due time {due!r} is too far away")
    return max(ms, 0)


class TimerChannel:
    """One-shot timers under one name, on the native core's timing wheel: each id has
    at most one timer, fired once at or after its due time and handed to this channel's
    listeners on the event loop. Made by `Engine.timer_channel`; channels never see each
    other's ids.

    Timers live in the running engine only: closing the engine drops them and nothing
    survives a restart, so the caller keeps what it needs in its own store and re-arms
    from it at start-up (a due time in the past fires at once).
    """

    def __init__(self, engine: Engine, name: str, index: int) -> None:
        self.name = name
        self._engine = engine
        self._base = index << _TIMER_ID_BITS
        self._listeners: list[TimerListener] = []

    def _key(self, timer_id: int) -> int:
        if not 0 <= timer_id < TIMER_ID_LIMIT:
            raise ValueError(f"timer id {timer_id!r} is outside 0 <= id < 2**48")
        return self._base | timer_id

    def arm(self, items: Iterable[tuple[int, float]]) -> None:
        """Fire each `(id, due)` at `due` (Unix seconds, like `time.time()`, kept to
        the millisecond). Arming an id again moves its timer; a due time in the past
        fires at once. All are checked first (ValueError: an id outside
        0 <= id < 2**48, a due time that is not finite): then none is armed."""
        batch = [(self._key(timer_id), _due_ms(due)) for timer_id, due in items]
        if batch:
            self._engine._require().arm_timers(batch)

    def cancel(self, ids: Iterable[int]) -> int:
        """Drop the timers of these ids; returns how many were pending (ids never
        armed, fired already or cancelled count nothing). ValueError as `arm`."""
        keys = [self._key(timer_id) for timer_id in ids]
        return self._engine._require().cancel_timers(keys) if keys else 0

    def listen(self, callback: TimerListener) -> None:
        """Call `callback(fired)` on the event loop with each batch of this channel's
        timers that came due, in due order. A callback that raises is logged; the
        others still run. Timers that fire while no callback listens are lost."""
        self._listeners.append(callback)

    def _fire(self, batch: list[FiredTimer]) -> None:
        for listener in self._listeners:
            try:
                listener(batch)
            except Exception:
                log.exception("timer listener of channel %r failed", self.name)


class Engine:
    """Schedules checks natively and runs their probes; usable from any asyncio program.

    ```
    async with tocsin.Engine() as engine:
        engine.upsert([tocsin.Check(id=1, type="uptime", url="http://127.0.0.1:8080/")])
        async for event in engine.events():
            print(event)
    ```
    """

    def __init__(
        self,
        *,
        registry: ProbeRegistry | None = None,
        max_in_flight: int = 10_000,
        max_per_host: int = 1_000,
        threads: int = 0,
        extra_ca_pem: str | None = None,
        rollup_span: float = 60.0,
    ) -> None:
        """`max_in_flight` caps probes running at once (native and plugin each),
        `max_per_host` native probes per target host; `threads` sets the native probe
        threads (0: one per core); `extra_ca_pem` adds trusted CA certificates (PEM)
        for HTTPS and TLS probes, e.g. a private CA; `rollup_span` is the width of the
        rollup buckets handed to rollup listeners (seconds, a minute by default)."""
        if max_in_flight < 1 or max_per_host < 1:
            raise ValueError("max_in_flight and max_per_host must be at least 1")
        if not 0.001 <= rollup_span <= 86_400:
            raise ValueError("rollup_span must be 1 ms to 1 day")
        self._registry = registry or default_registry
        self._max_in_flight = max_in_flight
        # The core (and its clock thread) exists from construction so checks can be
        # loaded before the loop runs; `start` attaches it to the running loop.
        self._core = _core.Core(
            threads, max_in_flight, max_per_host, extra_ca_pem, round(rollup_span * 1000)
        )
        self._rollup_listeners: list[Callable[[list[Rollup]], None]] = []
        self._windows: list[MaintenanceWindow] = []
        self._in_maintenance: set[int] = set()
        self._windows_changed = asyncio.Event()
        self._maintenance_task: asyncio.Task[None] | None = None
        self._run_ids = itertools.count(1)
        self._sources = Sources()
        self._heartbeats: dict[int, HeartbeatSchedule] = {}
        # check id -> why it was not scheduled when loaded (see `load`)
        self._refused: dict[int, str] = {}
        # (check_id, rid) -> when a `start` ping opened the run
        self._runs: dict[tuple[int, str | None], float] = {}
        # One-off plugin runs share the in-flight cap the core applies to native ones.
        self._plugin_slots = asyncio.Semaphore(max_in_flight)
        # run_id -> (waiting caller, whether the result is recorded like a scheduled one)
        self._one_offs: dict[int, tuple[asyncio.Future[Result], bool]] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checks: dict[int, Check] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: collections.deque[tuple[int, int, int, int]] = collections.deque()
        self._reports: list[_ResultTuple] = []
        self._flush_pending = False
        self._listeners: list[Listener] = []
        self._streams: set[EventStream] = set()
        self._timer_channels: dict[str, TimerChannel] = {}
        # channel index (the top 16 bits of a core timer key) -> channel
        self._timer_indexes: list[TimerChannel] = []

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closed

    def start(self) -> None:
        """Attach to the running asyncio loop; probes start from here on."""
        if self._closed:
            raise EngineClosedError("a closed engine cannot be started again")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._core.wakeup_fd(), self._on_wakeup)
        if self._windows:
            self._maintenance_task = self._loop.create_task(self._maintenance_loop())
        self._on_wakeup()

    async def close(self, *, grace: float = 5.0) -> None:
        """Stop scheduling, give running probes up to `grace` seconds, publish their
        results, then release the core."""
        core = self._core
        if self._closed:
            return
        self._closed = True
        if self._maintenance_task is not None:
            self._maintenance_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance_task
        core.pause(list(self._checks))
        self._backlog.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._flush_reports()
        # The minute under way is handed out too, so the rollups lose nothing.
        core.flush_rollups()
        if self._loop is not None:
            self._loop.remove_reader(core.wakeup_fd())
            self._publish_pending()
        core.close()
        for stream in list(self._streams):
            stream.close()
        await self._registry.aclose()

    # -- checks ---------------------------------------------------------------------

    def _spec(self, check: Check) -> tuple[int, int, int, int, bool, str | None]:
        kind = self._registry.kind(check.type)
        return (
            check.id,
            round(check.interval * 1000),
            round(check.timeout * 1000),
            kind,
            check.is_active,
            # The verdict policy reads the same settings, whatever the kind.
            json.dumps(check.probe_config()),
        )

    def validate(self, checks: Iterable[Check]) -> None:
        """Raise what `upsert` would raise for these checks, changing nothing: callers
        validate a check this way before they store it."""
        checks = list(checks)
        for c in checks:
            if c.type == "heartbeat":
                HeartbeatSchedule.from_settings(c.interval, c.options)
        _core.Core.validate([self._spec(c) for c in checks])

    def upsert(self, checks: Iterable[Check]) -> None:
        """Add or change checks in one native call. All or nothing: a bad check raises
        a `ValueError` (an unknown type, an interval outside 1 s to 1 day, a probe
        setting the native probe refuses: `InvalidCheckError.field` names it) and no
        check changes."""
        checks = list(checks)
        schedules = {
            c.id: HeartbeatSchedule.from_settings(c.interval, c.options)
            for c in checks
            if c.type == "heartbeat"
        }
        self._require().upsert([self._spec(c) for c in checks])
        for check in checks:
            self._checks[check.id] = check
            self._heartbeats.pop(check.id, None)
            self._refused.pop(check.id, None)
        self._heartbeats.update(schedules)
        if self._windows:
            # A check added while its window is open is flagged at once.
            self._windows_changed.set()

    add = upsert

    def load(self, checks: Iterable[Check]) -> dict[int, str]:
        """Add stored checks one by one, so one that can no longer be scheduled (a
        setting refused since it was stored, a rule that stopped matching) is kept out
        with its reason instead of stopping the rest. Returns {check id: reason} of the
        ones refused; `refusal(id)` answers the same until the check is changed."""
        refused: dict[int, str] = {}
        checks = list(checks)
        for start in range(0, len(checks), LOAD_CHUNK):
            chunk = checks[start : start + LOAD_CHUNK]
            with contextlib.suppress(Exception):
                self.upsert(chunk)  # all or nothing: one native call per chunk
                continue
            for check in chunk:  # a chunk with a bad check: one by one
                try:
                    self.upsert([check])
                except Exception as exc:  # one bad row must never stop the others
                    refused[check.id] = self.refuse(check.id, exc)
        return refused

    def refuse(self, check_id: int, exc: BaseException) -> str:
        """Note that a stored check could not be scheduled, and why (returned)."""
        self._refused[check_id] = text = refusal_text(exc)
        return text

    def refusal(self, check_id: int) -> str | None:
        """Why a stored check was not scheduled at load, if it was not."""
        return self._refused.get(check_id)

    def refusals(self) -> dict[int, str]:
        return dict(self._refused)

    def ping(
        self,
        check_id: int,
        signal: str | int = "success",
        *,
        rid: str | None = None,
        at: float | None = None,
    ) -> Result | None:
        """A heartbeat ping: `success` (or exit code 0) is UP, `fail` or a non-zero
        exit code (1-255) is DOWN, `start` opens a run whose duration the next success
        or failure ping measures (matched by `rid` when given), `log` only records.
        After a success or failure the next ping is expected per the check's schedule:
        LATE once it is due, DOWN after the grace period. Returns the result, if any."""
        schedule = self.heartbeat(check_id)
        at = time.time() if at is None else at
        if isinstance(signal, int) and not 0 <= signal <= 255:
            raise ValueError("an exit code is 0-255")
        if signal not in _SIGNALS and not isinstance(signal, int):
            raise ValueError(f"unknown ping {signal!r}")
        if signal == "start":
            # A start whose finish never comes (a crashed job, a new rid each run) must
            # not pile up: past the cap the oldest open run is forgotten (its finish,
            # if it ever comes, is then recorded without a duration).
            self._runs.pop((check_id, rid), None)
            self._runs[(check_id, rid)] = at
            while len(self._runs) > MAX_OPEN_RUNS:
                del self._runs[next(iter(self._runs))]
            return None
        if signal == "log":
            return None
        # Every step that can fail comes before any state changes.
        due = schedule.next_due(at)
        started = self._runs.pop((check_id, rid), None)
        if signal in ("success", 0):
            outcome = ProbeOutcome.up(latency_ms=(at - started) * 1e3 if started else 0.0)
        else:
            kind, message = (
                ("fail", "the job reported a failure")
                if signal == "fail"
                else ("exit_code", f"the job exited with code {signal}")
            )
            outcome = ProbeOutcome.down(
                kind, message, latency_ms=(at - started) * 1e3 if started else 0.0
            )
        core = self._require()
        t = _tuple(check_id, 0, round((started or at) * 1e6), outcome, 0)
        core.report([t])
        core.expect(check_id, round(due * 1000), round(schedule.grace * 1000))
        return _result(t, self._sources)

    def heartbeat(self, check_id: int) -> HeartbeatSchedule:
        """A heartbeat check's schedule; KeyError when this engine has no such check."""
        schedule = self._heartbeats.get(check_id)
        if schedule is None:
            raise KeyError(f"check {check_id} is not a heartbeat check of this engine")
        return schedule

    def rearm(self, check_id: int, last_ping_at: float) -> None:
        """Expect a heartbeat check's next ping as if its last one came at
        `last_ping_at` (e.g. stored before a restart), without recording a result: a job
        that stopped pinging while the engine was down still goes LATE, then DOWN."""
        schedule = self._heartbeats.get(check_id)
        if schedule is None:
            raise KeyError(f"check {check_id} is not a heartbeat check of this engine")
        due = schedule.next_due(last_ping_at)
        self._require().expect(check_id, round(due * 1000), round(schedule.grace * 1000))

    def heartbeat_due(self, check_id: int) -> float | None:
        """When a heartbeat check's next ping is due (Unix seconds), if one is expected."""
        due = self._require().heartbeat_due(check_id)
        return None if due is None else due / 1e3

    def remove(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        for i in ids:
            self._refused.pop(i, None)
        ids = [i for i in ids if self._checks.pop(i, None) is not None]
        for i in ids:
            self._heartbeats.pop(i, None)
        self._require().remove(ids)
        return len(ids)

    def pause(self, ids: Iterable[int]) -> int:
        ids = [i for i in ids if i in self._checks]
        for i in ids:
            self._checks[i].is_active = False
        return self._require().pause(ids)

    def resume(self, ids: Iterable[int]) -> int:
        ids = [i for i in ids if i in self._checks]
        for i in ids:
            self._checks[i].is_active = True
        return self._require().resume(ids)

    def seed(self, statuses: Iterable[tuple[int, Status]]) -> None:
        """Restore known statuses (after a restart) so the next result is not a change."""
        pairs = [(i, CODE_BY_STATUS[s]) for i, s in statuses if s in CODE_BY_STATUS]
        self._require().seed(pairs)

    def get(self, check_id: int) -> Check | None:
        return self._checks.get(check_id)

    def status(self, check_id: int) -> Status:
        """The check's verdict (PAUSED when inactive, UNKNOWN before any data)."""
        return STATUS_BY_CODE[self._require().status(check_id)]

    def sources(self, check_id: int) -> dict[str, Status]:
        """Each source's status for the check (stale sources as UNKNOWN)."""
        return self._sources.statuses(self._require().sources(check_id))

    def expire_source(self, name: str) -> None:
        """Mark a source stale in every check at once (an agent gone offline or
        revoked): UNKNOWN and out of the verdicts until it reports again."""
        self._require().expire_source(self._sources.id(name))

    def source_id(self, name: str) -> int:
        """The core's id for a source name (for `critical_sources`)."""
        return self._sources.id(name)

    def ingest(self, results: Iterable[Result]) -> None:
        """Fold results observed elsewhere (agents, geo locations: `Result.source`) into
        the verdicts, as if probed here; they come back through listeners and events."""
        self._require().report(
            [
                (
                    r.check_id,
                    round(r.due_at * 1000) if r.due_at else 0,
                    round(r.started_at * 1e6),
                    round(r.latency_ms * 1e3),
                    CODE_BY_STATUS.get(r.status, CODE_BY_STATUS[Status.DOWN]),
                    r.error_kind,
                    r.message,
                    r.status_code or 0,
                    0,
                    _us(r.timings),
                    r.details_json,
                    self._sources.id(r.source),
                )
                for r in results
            ]
        )

    def ingest_verdicts(
        self,
        source: str,
        rows: Iterable[tuple[int, float, float, str, str | None, str | None]],
    ) -> None:
        """Fold results stored elsewhere already (agents' batches), given as
        `(check_id, started_at, latency_ms, status, error_kind, message)` rows: only
        the verdict changes they cause come back through listeners, not the results."""
        src = self._sources.id(source)
        code = {s.value: c for s, c in CODE_BY_STATUS.items()}
        self._require().report(
            [
                (
                    cid,
                    0,
                    round(started * 1e6),
                    round(latency * 1e3),
                    code[status],
                    kind,
                    message,
                    0,
                    _STORED,
                    _NO_TIMINGS,
                    None,
                    src,
                )
                for cid, started, latency, status, kind, message in rows
            ]
        )

    def set_maintenance(self, ids: Iterable[int], on: bool) -> None:
        """Flag checks as in a maintenance window: verdicts and transitions go on,
        flagged `in_maintenance` (not alertable)."""
        self._require().set_maintenance(list(ids), on)

    def next_due(self, check_id: int) -> float | None:
        """When the check runs next (Unix seconds); None when paused or unknown."""
        due = self._require().next_due(check_id)
        return None if due is None else due / 1e3

    def stats(self) -> dict[str, int]:
        checks, dispatched, skipped = self._require().stats()
        return {
            "checks": checks,
            "dispatched": dispatched,
            "skipped": skipped,
            "in_flight": len(self._tasks),
            "backlog": len(self._backlog),
            "timers": self._core.timer_count(),
        }

    # -- results --------------------------------------------------------------------

    def add_rollup_listener(self, listener: Callable[[list[Rollup]], None]) -> None:
        """Call `listener(rollups)` with the rollup buckets closed since the last call."""
        self._rollup_listeners.append(listener)

    def set_windows(self, windows: Iterable[MaintenanceWindow]) -> None:
        """Replace the maintenance windows; the engine flags their checks while they
        are open (transitions carry `in_maintenance`, the time is excluded from SLA
        totals)."""
        self._windows = list(windows)
        self._windows_changed.set()
        if self._maintenance_task is None and self._loop is not None:
            self._maintenance_task = self._loop.create_task(self._maintenance_loop())

    def in_maintenance(self, check_id: int) -> bool:
        return check_id in self._in_maintenance

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(results, changes)` with every drained batch, on the loop."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def timer_channel(self, name: str) -> TimerChannel:
        """The timer channel called `name`, made on first use (at most 65,536 per
        engine): one-shot timers on the native timing wheel, their ids this channel's
        own."""
        channel = self._timer_channels.get(name)
        if channel is None:
            index = len(self._timer_indexes)
            if index >= MAX_TIMER_CHANNELS:
                raise ValueError(f"an engine has at most {MAX_TIMER_CHANNELS} timer channels")
            channel = self._timer_channels[name] = TimerChannel(self, name, index)
            self._timer_indexes.append(channel)
        return channel

    def events(self, *, maxsize: int = 100_000) -> EventStream:
        """An async iterator of `Result` and `StatusChange` events from now on."""
        stream = EventStream(self, maxsize)
        self._streams.add(stream)
        return stream

    async def run_once(self, check: Check, *, record: bool = False) -> Result:
        """Probe `check` now, outside its schedule. With `record`, the result also goes
        through the core like a scheduled one (status, transitions, listeners)."""
        [result] = await self.run_many([check], record=record)
        return result

    async def run_many(self, checks: Iterable[Check], *, record: bool = False) -> list[Result]:
        """Probe many checks now (native types in one native call), within the same
        in-flight limits as scheduled runs; results in the order of `checks`. Bad
        settings raise before anything runs."""
        core = self._require()
        checks = list(checks)
        kinds = [self._registry.kind(c.type) for c in checks]
        native = [
            (
                next(self._run_ids),
                check.id,
                kind,
                json.dumps(check.probe_config()),
                round(check.timeout * 1000),
                record,
            )
            for check, kind in zip(checks, kinds, strict=True)
            if kind != PYTHON_KIND
        ]
        core.run_once(native)
        loop = asyncio.get_running_loop()
        run_ids = iter(run[0] for run in native)
        waits: list[asyncio.Future[Result]] = []
        for check, kind in zip(checks, kinds, strict=True):
            if kind == PYTHON_KIND:
                waits.append(loop.create_task(self._plugin_once(check, record)))
            else:
                future: asyncio.Future[Result] = loop.create_future()
                self._one_offs[next(run_ids)] = (future, record)
                waits.append(future)
        return list(await asyncio.gather(*waits))

    async def _plugin_once(self, check: Check, record: bool) -> Result:
        core = self._require()
        async with self._plugin_slots:
            started_us = core.now_us()
            outcome = await self._probe(check, check.timeout)
        t = _tuple(check.id, 0, started_us, outcome, core.now_us() - started_us)
        if record:
            self._reports.append(t)
            self._schedule_flush()
        return _result(t, self._sources)

    # -- internals ------------------------------------------------------------------

    def _require(self) -> _core.Core:
        if self._closed:
            raise EngineClosedError("the engine is closed")
        return self._core

    def _on_wakeup(self) -> None:
        work, results, transitions, rollups, timers = self._core.drain()
        for item in work:
            if len(self._tasks) < self._max_in_flight:
                self._start(*item)
            else:
                self._backlog.append(item)
        if results or transitions:
            self._publish(results, transitions)
        if rollups:
            self._publish_rollups(rollups)
        if timers:
            self._publish_timers(timers)

    def _publish_pending(self) -> None:
        _work, results, transitions, rollups, timers = self._core.drain()
        if results or transitions:
            self._publish(results, transitions)
        if rollups:
            self._publish_rollups(rollups)
        if timers:
            self._publish_timers(timers)

    def _publish_timers(self, fired: list[tuple[int, int, int]]) -> None:
        by_channel: dict[int, list[FiredTimer]] = collections.defaultdict(list)
        for key, due_ms, fired_us in fired:
            by_channel[key >> _TIMER_ID_BITS].append(
                FiredTimer(key & _TIMER_ID_MASK, due_ms / 1e3, fired_us / 1e6)
            )
        for index, batch in by_channel.items():
            self._timer_indexes[index]._fire(batch)

    def _publish_rollups(self, rollups: list[tuple[Any, ...]]) -> None:
        batch = [Rollup(*t) for t in rollups]
        for listener in self._rollup_listeners:
            try:
                listener(batch)
            except Exception:
                log.exception("rollup listener failed")

    async def _maintenance_loop(self) -> None:
        while True:
            now = time.time()
            active: set[int] = set()
            upcoming: list[float] = []
            broken = []
            for w in self._windows:
                try:
                    if w.active_at(now):
                        active |= w.check_ids
                    change = w.next_change(now)
                except Exception:
                    # The API refuses rules that fail to evaluate; this guards rows
                    # stored before it did: one bad rule must not stop the others.
                    log.exception("maintenance window of checks %s dropped", sorted(w.check_ids))
                    broken.append(w)
                    continue
                if change is not None:
                    upcoming.append(change)
            if broken:
                self._windows = [w for w in self._windows if w not in broken]
            known = active & self._checks.keys()
            if on := known - self._in_maintenance:
                self._core.set_maintenance(sorted(on), True)
            if off := self._in_maintenance - known:
                self._core.set_maintenance(sorted(off), False)
            self._in_maintenance = known
            wait = min(upcoming, default=now + 3600) - time.time()
            self._windows_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._windows_changed.wait(), min(max(wait, 0), 3600))

    def _start(self, check_id: int, due_ms: int, dispatched_us: int, timeout_ms: int) -> None:
        check = self._checks.get(check_id)
        if check is None:
            return
        assert self._loop is not None
        task = self._loop.create_task(self._run(check, due_ms, timeout_ms))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        while self._backlog and len(self._tasks) < self._max_in_flight:
            self._start(*self._backlog.popleft())

    async def _probe(self, check: Check, limit_s: float) -> ProbeOutcome:
        try:
            probe = self._registry.get(check.type)
            async with asyncio.timeout(limit_s):
                outcome = await probe(check)
            if not isinstance(outcome, ProbeOutcome):
                return ProbeOutcome.down(
                    "probe_error", f"probe returned {type(outcome).__name__}, not ProbeOutcome"
                )
            return outcome
        except TimeoutError:
            return ProbeOutcome.down("timeout", f"no answer within {limit_s:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("probe for check %s failed", check.id, exc_info=True)
            return ProbeOutcome.down("probe_error", f"{type(exc).__name__}: {exc}")

    async def _run(self, check: Check, due_ms: int, timeout_ms: int) -> None:
        core = self._core
        started_us = core.now_us()
        outcome = await self._probe(check, timeout_ms / 1e3)
        self._reports.append(
            _tuple(check.id, due_ms, started_us, outcome, core.now_us() - started_us)
        )
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush_reports)

    def _flush_reports(self) -> None:
        self._flush_pending = False
        if self._reports:
            reports, self._reports = self._reports, []
            self._core.report(reports)

    def _publish(self, results: list[_ResultTuple], transitions: list[_TransitionTuple]) -> None:
        res = []
        for t in results:
            result = _result(t, self._sources)
            one_off = self._one_offs.pop(t[8], None) if t[8] else None
            if one_off is not None:
                future, record = one_off
                if not future.done():
                    future.set_result(result)
                if not record:
                    continue
            res.append(result)
        changes = [
            StatusChange(
                cid,
                STATUS_BY_CODE[prev],
                STATUS_BY_CODE[cur],
                at_us / 1e6,
                storable_text(reason),
                self._sources.statuses(sources),
                maintenance,
            )
            for cid, prev, cur, at_us, reason, sources, maintenance in transitions
        ]
        if self._closed:
            # close() pauses every check to stop it: that is the engine stopping, not a
            # verdict, so it is not published (a restart resumes from the stored status).
            changes = [c for c in changes if c.current is not Status.PAUSED]
        for listener in self._listeners:
            try:
                listener(res, changes)
            except Exception:
                log.exception("engine listener failed")
        for stream in self._streams:
            stream._push(res)
            stream._push(changes)
