"""On-call schedules: who is on call when, computed from a schedule's layers, their
restrictions and its overrides (pure; see shifts.py and docs/oncall.md)."""

from tocsin.oncall.rows import schedule_of
from tocsin.oncall.shifts import (
    DAYS,
    HORIZON_S,
    MAX_RANGE_S,
    MAX_SHIFTS,
    Layer,
    Override,
    Restriction,
    Schedule,
    Shift,
    layer_on_call_at,
    on_call_at,
    shifts,
    to_instant,
)

__all__ = [
    "DAYS",
    "HORIZON_S",
    "MAX_RANGE_S",
    "MAX_SHIFTS",
    "Layer",
    "Override",
    "Restriction",
    "Schedule",
    "Shift",
    "layer_on_call_at",
    "on_call_at",
    "schedule_of",
    "shifts",
    "to_instant",
]
