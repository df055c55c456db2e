"""The domain values the engine hands out and takes in: checks, results, status changes."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple


def storable_text(text: str | None) -> str | None:
    """Text from probes, plugins and agents as both database backends store it:
    PostgreSQL refuses U+0000 in text (and with it the whole batch a result is in),
    so it becomes U+FFFD everywhere, and one odd reply cannot hold up every result."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


class Status(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    UP = "UP"
    DOWN = "DOWN"
    DEGRADED = "DEGRADED"
    LATE = "LATE"
    PAUSED = "PAUSED"


# NOTE: the order is the native core's numeric status code (rust_core/aggregate.rs).
STATUS_BY_CODE: tuple[Status, ...] = (
    Status.UNKNOWN,
    Status.UP,
    Status.DOWN,
    Status.DEGRADED,
    Status.LATE,
    Status.PAUSED,
)
CODE_BY_STATUS: dict[Status, int] = {s: i for i, s in enumerate(STATUS_BY_CODE)}


@dataclass(slots=True)
class Check:
    """A check as the engine sees it. `interval` and `timeout` are in seconds;
    type-specific settings (url, expected codes, …) sit in the named fields or in
    `options`, as do the verdict settings: `alert_after_failures` (default 1),
    `alert_window_runs` (window mode: DOWN when `alert_after_failures` of the last
    this-many runs failed) and `critical_sources` (source ids)."""

    id: int
    type: str
    interval: float = 60.0
    timeout: float = 10.0
    name: str = ""
    url: str | None = None
    host: str | None = None
    port: int | None = None
    is_active: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def probe_config(self) -> dict[str, Any]:
        """The settings a probe reads: the options plus url, host and port."""
        config = dict(self.options)
        for key in ("url", "host", "port"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return config


@dataclass(slots=True, frozen=True)
class ProbeOutcome:
    """What a probe plugin returns. The engine measures latency when the plugin does not."""

    status: Status
    error_kind: str | None = None
    message: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def up(cls, *, status_code: int | None = None, latency_ms: float | None = None) -> ProbeOutcome:
        return cls(Status.UP, status_code=status_code, latency_ms=latency_ms)

    @classmethod
    def down(
        cls,
        error_kind: str,
        message: str,
        *,
        status_code: int | None = None,
        latency_ms: float | None = None,
    ) -> ProbeOutcome:
        return cls(Status.DOWN, error_kind, message, status_code, latency_ms)


@dataclass(slots=True, frozen=True)
class Timings:
    """Time spent in each phase of a probe, in ms; None where the phase does not apply."""

    dns_ms: float | None = None
    connect_ms: float | None = None
    tls_ms: float | None = None
    first_byte_ms: float | None = None


# The result record, defined once: every field of a stored result, in the order the
# store's columns hold them. The store's columns (store/tables.py `RESULT_COLUMNS`), the
# agents' wire rows (agent/wire.py) and `Result.values()` derive their layouts from it;
# the native core's tuple (rust_core/py.rs) has one codec, `engine._result`.
RESULT_FIELDS: tuple[str, ...] = (
    "check_id",
    "source",
    "started_at",
    "due_at",
    "latency_ms",
    "status",
    "error_kind",
    "message",
    "status_code",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "first_byte_ms",
    "details_json",
)
# The free-text fields of the record (stored through `storable_text`).
RESULT_TEXT_FIELDS = ("error_kind", "message", "details_json")


@dataclass(slots=True, frozen=True)
class Result:
    """One probe run. Times are Unix seconds; `due_at` is when the schedule wanted the
    run (None for runs outside the schedule)."""

    check_id: int
    status: Status
    started_at: float
    latency_ms: float
    due_at: float | None = None
    error_kind: str | None = None
    message: str | None = None
    status_code: int | None = None
    source: str = "central"
    timings: Timings | None = None
    details_json: str | None = None

    @property
    def details(self) -> dict[str, Any]:
        """Type-specific details (address, answers, certificate expiry, bytes read…)."""
        return json.loads(self.details_json) if self.details_json else {}

    def values(self) -> tuple[Any, ...]:
        """The record's values in `RESULT_FIELDS` order (the status as its name)."""
        t = self.timings
        return (
            self.check_id,
            self.source,
            self.started_at,
            self.due_at,
            self.latency_ms,
            self.status.value,
            self.error_kind,
            self.message,
            self.status_code,
            t.dns_ms if t else None,
            t.connect_ms if t else None,
            t.tls_ms if t else None,
            t.first_byte_ms if t else None,
            self.details_json,
        )


@dataclass(slots=True, frozen=True)
class Rollup:
    """One closed rollup bucket of a check (a minute in production): runs by status,
    downtime and excluded time (maintenance, paused, no data), incidents begun, and the
    latency sketch of successful runs (opaque bytes; read with `tocsin.figures`)."""

    check_id: int
    start_ms: int
    span_ms: int
    runs_up: int
    runs_down: int
    runs_degraded: int
    downtime_ms: int
    excluded_ms: int
    incidents: int
    sketch: bytes

    def astuple(self) -> tuple[int, int, int, int, int, int, int, int, int, bytes]:
        return (
            self.check_id,
            self.start_ms,
            self.span_ms,
            self.runs_up,
            self.runs_down,
            self.runs_degraded,
            self.downtime_ms,
            self.excluded_ms,
            self.incidents,
            self.sketch,
        )


@dataclass(slots=True, frozen=True)
class StatusChange:
    """A check's verdict changed."""

    check_id: int
    previous: Status
    current: Status
    at: float
    reason: str | None = None
    # Every source's status at that moment: {"central": UP, "agent:5": DOWN, …}.
    sources: dict[str, Status] = field(default_factory=dict)
    # Inside a maintenance window: recorded, not alertable.
    in_maintenance: bool = False


class FiredTimer(NamedTuple):
    """A timer of a `TimerChannel` that came due: the caller's `id`, the time it was
    armed for (`due`, Unix seconds, to the millisecond) and when the core fired it
    (`fired`, never before `due`)."""

    id: int
    due: float
    fired: float
