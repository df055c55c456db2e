"""A stored schedule (its row and its overrides' rows, as the store gives them) as the
`Schedule` the shifts are computed from; shared by the API and by escalation, which
pages whoever a schedule has on call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from tocsin.oncall.shifts import DAYS, Layer, Override, Restriction, Schedule


def clock(text: str) -> dt.time:
    """`HH:MM` as a time of day."""
    hour, minute = text.split(":")
    return dt.time(int(hour), int(minute))


def schedule_of(row: Mapping[str, Any], overrides: Iterable[Mapping[str, Any]]) -> Schedule:
    layers = []
    for layer in row["layers"] or []:
        layers.append(
            Layer(
                participants=tuple(layer["participants"]),
                start=dt.date.fromisoformat(layer["start"]),
                rotation_type=layer["rotation_type"],
                handoff_time=clock(layer["handoff_time"]),
                rotation_length_hours=layer.get("rotation_length_hours"),
                restrictions=tuple(
                    Restriction(
                        tuple(DAYS.index(d) for d in r["days"]), clock(r["start"]), clock(r["end"])
                    )
                    for r in layer.get("restrictions") or []
                ),
            )
        )
    return Schedule(
        row["timezone"],
        tuple(layers),
        tuple(
            Override(o["user_id"], float(o["starts_at"]), float(o["ends_at"]), o["id"])
            for o in overrides
        ),
    )
