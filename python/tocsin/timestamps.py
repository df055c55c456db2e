"""Timestamps as the API and every document it stores show them: ISO 8601 in UTC with
a `Z`."""

from __future__ import annotations

import datetime as dt
import functools
from typing import overload


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: float | None) -> str | None: ...
def iso(ts: float | None) -> str | None:
    """`None` stays `None` (so a time never set answers null)."""
    if ts is None:
        return None
    return _iso(ts)


# PERF: most times in API documents (created, updated, status changed) are the same from
# one read of an object to the next; formatting them is the costly part of a check's JSON.
@functools.lru_cache(maxsize=1 << 16)
def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")
