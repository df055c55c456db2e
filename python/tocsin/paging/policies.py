"""Escalation policies as values, and how an incident walks through one.

A policy is an ordered list of steps and a repeat count. Step 1 pages at once when the
incident opens; each step then waits its `delay_seconds` for an acknowledgement before
the next step pages (PagerDuty's `escalation_delay_in_minutes`). After the last step's
delay the policy starts again from step 1, `repeat_count` more times; then it stops.
An acknowledgement or a resolution stops it at any point.

Pure: no I/O. The escalation service (`escalation.py`) keeps the walk's position on the
incident's row (`escalation_step`, `escalation_round`, `escalation_due_at`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TargetType = Literal["user", "schedule", "team", "channel"]
TARGET_TYPES: tuple[TargetType, ...] = ("user", "schedule", "team", "channel")
# The members of a team a `team` target pages (observers are not paged).
PAGED_TEAM_ROLES: frozenset[str] = frozenset({"lead", "member"})
MAX_STEPS = 20
MAX_TARGETS = 20
MAX_REPEATS = 9
MAX_DELAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Target:
    type: TargetType
    id: int


@dataclass(frozen=True, slots=True)
class Step:
    delay_seconds: int
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    id: int
    organization_id: int
    name: str
    steps: tuple[Step, ...]
    repeat_count: int = 0


def policy_of(row: Mapping[str, Any]) -> Policy:
    """The policy of a stored row (steps as the API stored them)."""
    steps = tuple(
        Step(
            int(s.get("delay_seconds") or 0),
            tuple(Target(t["type"], int(t["id"])) for t in s.get("targets") or []),
        )
        for s in row.get("steps") or []
    )
    return Policy(
        int(row["id"]),
        int(row["organization_id"]),
        str(row.get("name") or ""),
        steps,
        int(row.get("repeat_count") or 0),
    )


@dataclass(frozen=True, slots=True)
class Position:
    """Where an incident stands in its policy: the next step to page (0-based), the
    round (0 for the first pass) and when that step is due (None: finished)."""

    step: int
    round: int
    due: float | None


def after(policy: Policy, step: int, round_: int, due: float, now: float) -> Position:
    """The position after step `step` of round `round_` paged. The next step is due its
    delay after the step's own due time (so a late step does not push the rest of the
    policy back), and never before `now`."""
    delay = policy.steps[step].delay_seconds if step < len(policy.steps) else 0
    if step + 1 < len(policy.steps):
        return Position(step + 1, round_, max(due + delay, now))
    if round_ < policy.repeat_count:
        return Position(0, round_ + 1, max(due + delay, now))
    return Position(len(policy.steps), round_, None)
