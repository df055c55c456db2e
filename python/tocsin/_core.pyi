"""Type stubs for the native core (rust_core/py.rs); checked with mypy.stubtest."""

from typing import final

__all__ = [
    "MAX_INTERVAL_MS",
    "MAX_TIMEOUT_MS",
    "MIN_INTERVAL_MS",
    "Core",
    "InvalidCheckError",
    "figures",
    "phase_ms",
    "roll_up",
    "slo",
]

MIN_INTERVAL_MS: int
MAX_INTERVAL_MS: int
MAX_TIMEOUT_MS: int

class InvalidCheckError(ValueError):
    """A check the engine cannot accept: schedule limits, an unknown kind, or a probe
    setting (then `field` names it)."""

    check_id: int | None
    field: str | None
    reason: str

_Timings = tuple[int | None, int | None, int | None, int | None]
_Result = tuple[
    int, int, int, int, int, str | None, str | None, int, int, _Timings, str | None, int
]
_Transition = tuple[int, int, int, int, str | None, list[tuple[int, int]], bool]
_Rollup = tuple[int, int, int, int, int, int, int, int, int, bytes]

@final
class Core:
    """The native engine: owns the clock thread, the probe runtime, the schedule and the
    result outbox."""

    def __new__(
        cls,
        threads: int = 0,
        max_in_flight: int = 10_000,
        max_per_host: int = 1_000,
        extra_ca_pem: str | None = None,
        rollup_span_ms: int = 60_000,
    ) -> Core: ...
    def upsert(self, specs: list[tuple[int, int, int, int, bool, str | None]]) -> None: ...
    @staticmethod
    def validate(specs: list[tuple[int, int, int, int, bool, str | None]]) -> None: ...
    def run_once(self, runs: list[tuple[int, int, int, str, int, bool]]) -> None: ...
    def remove(self, ids: list[int]) -> int: ...
    def pause(self, ids: list[int]) -> int: ...
    def resume(self, ids: list[int]) -> int: ...
    def seed(self, statuses: list[tuple[int, int]]) -> None: ...
    def report(self, results: list[_Result]) -> None: ...
    def drain(
        self,
    ) -> tuple[
        list[tuple[int, int, int, int]],
        list[_Result],
        list[_Transition],
        list[_Rollup],
    ]: ...
    def wakeup_fd(self) -> int: ...
    def now_us(self) -> int: ...
    def next_due(self, id: int) -> int | None: ...
    def status(self, id: int) -> int: ...
    def stats(self) -> tuple[int, int, int]: ...
    def expect(self, check_id: int, due_ms: int, grace_ms: int) -> None: ...
    def heartbeat_due(self, check_id: int) -> int | None: ...
    def set_maintenance(self, ids: list[int], on: bool) -> None: ...
    def sources(self, id: int) -> list[tuple[int, int]]: ...
    def expire_source(self, source: int) -> None: ...
    def flush_rollups(self) -> None: ...
    def close(self) -> None: ...

def phase_ms(id: int, interval_ms: int) -> int: ...
def figures(
    buckets: list[_Rollup], apdex_t_ms: float, latency_threshold_ms: float | None = None
) -> dict[str, float | int | None]: ...
def slo(
    target: float,
    window: tuple[float, float],
    burn_window: tuple[float, float],
    warn_remaining: float,
    burn_threshold: float,
) -> tuple[float, float, float, bool, bool, bool]: ...
def roll_up(buckets: list[_Rollup], span_ms: int) -> list[_Rollup]: ...
