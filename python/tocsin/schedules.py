"""Every schedule-like input, validated in one place: time zones, cron expressions and
RRULEs. The API calls these before it stores anything, and the engine calls the same
functions when it loads a stored check or window, so what one accepts the other can
run: a rule that never matches, fires more often than its minimum period, takes too
long to evaluate or names an unknown zone is refused with the field at fault.

Errors are `InvalidCheckError` (a `ValueError`) with `field` set: the API answers them
with a 422 naming that field."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import re
import zoneinfo

from croniter import croniter
from dateutil import rrule as _rrule
from dateutil.rrule import rrulestr

import tocsin._core as _core

# Standard cron has minutes as its finest field; a sixth (seconds) field is refused.
CRON_FIELDS = 5
# How many occurrences are computed to learn a rule's shortest period.
SAMPLE = 10
MAX_RULE_LENGTH = 500
_FREQ = re.compile(r"FREQ=([A-Z]+)")
# The period of an RRULE frequency (at INTERVAL=1), for the ones finer than a day.
_FREQ_SECONDS = {"SECONDLY": 1, "MINUTELY": 60}


def invalid(field: str, message: str) -> _core.InvalidCheckError:
    """The error the API turns into a 422 at `field`."""
    exc = _core.InvalidCheckError(f"{field}: {message}")
    exc.field = field
    exc.reason = message
    exc.check_id = None
    return exc


def refusal_text(exc: BaseException) -> str:
    """How a refusal reads where it is shown (`schedule_error`, logs): `field: reason`
    when the error names its field, else its message."""
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    field = getattr(exc, "field", None)
    return f"{field}: {reason}" if field else reason


def time_zone(name: str | None, field: str = "timezone") -> zoneinfo.ZoneInfo:
    """An IANA time zone by name, one of `time_zone_names()`; an empty or unknown name
    is refused."""
    if not name or not name.strip():
        raise invalid(field, "must be an IANA time zone name such as UTC or Europe/Paris")
    return _zone(name, field)


@functools.cache
def time_zone_names() -> frozenset[str]:
    """The names this server's time zone database has (what the API's document lists).
    `ZoneInfo` also opens files that are not such names (`posix/…`, `right/…`,
    `posixrules`): they are refused."""
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=1024)
def _zone(name: str, field: str) -> zoneinfo.ZoneInfo:
    if name not in time_zone_names():
        raise invalid(field, f"unknown time zone {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise invalid(field, f"unknown time zone {name!r}") from None


def cron(expr: str, tz: str = "UTC", *, field: str = "schedule", min_period_s: float = 60) -> str:
    """A cron expression of five fields (or an @-macro) that matches at some time and
    whose occurrences are at least `min_period_s` apart. Returns it stripped."""
    expr = expr.strip()
    _cron(expr, tz, field, min_period_s)
    return expr


@functools.lru_cache(maxsize=4096)
def _cron(expr: str, tz: str, field: str, min_period_s: float) -> None:
    zone = time_zone(tz)
    if len(expr) > MAX_RULE_LENGTH:
        raise invalid(field, f"longer than {MAX_RULE_LENGTH} characters")
    if not expr.startswith("@") and len(expr.split()) != CRON_FIELDS:
        raise invalid(
            field,
            "must have five fields (minute hour day month weekday); no seconds",
        )
    if not croniter.is_valid(expr):
        raise invalid(field, f"{expr!r} is not a cron expression")
    # From a fixed date, so the answer does not depend on when it is asked.
    base = dt.datetime(2000, 1, 1, tzinfo=zone)
    try:
        it = croniter(expr, base)
        starts = [it.get_next(dt.datetime).timestamp() for _ in range(SAMPLE)]
    except (ValueError, TypeError, OverflowError):
        raise invalid(field, f"{expr!r} never matches") from None
    _min_period(field, starts, min_period_s)


def cron_next(expr: str, zone: zoneinfo.ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first occurrence of a validated cron expression after `after`."""
    try:
        nxt: dt.datetime = croniter(expr, after.astimezone(zone)).get_next(dt.datetime)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid("schedule", f"{expr!r} has no next occurrence: {exc}") from None
    return nxt


def rrule_starts(
    text: str, first: float, tz: str, n: int = SAMPLE, *, field: str = "rrule"
) -> list[float]:
    """The first `n` occurrences (Unix seconds) of an RRULE line starting at `first`,
    fewer when the rule ends; refused if it cannot be parsed or evaluated, or can never
    match."""
    zone = time_zone(tz)
    if len(text) > MAX_RULE_LENGTH:
        raise invalid(field, f"longer than {MAX_RULE_LENGTH} characters")
    upper = text.upper().replace(" ", "")
    if "DTSTART" in upper or "\n" in text or "\r" in text:
        raise invalid(field, "give one RRULE line; the first start is starts_at")
    start = dt.datetime.fromtimestamp(first, zone)
    try:
        rule = rrulestr(text, dtstart=start)
        if not isinstance(rule, _rrule.rrule):
            raise invalid(field, "give one RRULE line")
        # Whether the rule can match at all, searched over one 400-year Gregorian cycle
        # near the end of the calendar (so the search is bounded), from the same date.
        year = start.year + 400 * ((9200 - start.year) // 400 + 1)
        probe = rule.replace(dtstart=start.replace(year=year), count=None, until=None)
        if next(iter(probe), None) is None:
            raise invalid(field, "never matches: no window would ever open")
        starts = [o.timestamp() for o in itertools.islice(iter(rule), n)]
    except _core.InvalidCheckError:
        raise
    except (ValueError, TypeError, OverflowError, KeyError, IndexError) as exc:
        # dateutil fails on some rules it parsed (BYHOUR=25: a TypeError) only when
        # they are evaluated; such a rule must never reach the engine.
        raise invalid(field, f"invalid RRULE: {exc}") from None
    if not starts:
        raise invalid(field, "never matches: no window would ever open")
    return starts


def cron_starts(expr: str, first: float, tz: str, n: int = SAMPLE) -> list[float]:
    """The first `n` occurrences of a validated cron expression at or after `first`."""
    zone = time_zone(tz)
    it = croniter(expr, dt.datetime.fromtimestamp(first, zone) - dt.timedelta(seconds=1))
    try:
        return [it.get_next(dt.datetime).timestamp() for _ in range(n)]
    except (ValueError, TypeError, OverflowError):
        raise invalid("cron", f"{expr!r} never matches") from None


def recurrence(
    *, rrule: str | None, cron_expr: str | None, first: float, tz: str, min_period_s: float
) -> None:
    """A recurring window's rule (an RRULE or a cron expression, not both): it matches
    at some time and recurs at most every `min_period_s`."""
    if rrule and cron_expr:
        raise invalid("cron", "give an rrule or a cron expression, not both")
    if cron_expr:
        cron(cron_expr, tz, field="cron", min_period_s=min_period_s)
        _min_period("cron", cron_starts(cron_expr, first, tz), min_period_s)
    elif rrule:
        freq = _FREQ.search(rrule.upper())
        if freq is not None and _FREQ_SECONDS.get(freq.group(1), math.inf) < min_period_s:
            # Refused before any evaluation: a rule with a fine frequency that rarely
            # matches takes minutes to search (dateutil walks every period).
            raise invalid(
                "rrule", f"FREQ={freq.group(1)} recurs more often than {_span(min_period_s)}"
            )
        _min_period("rrule", rrule_starts(rrule, first, tz), min_period_s)


def _min_period(field: str, starts: list[float], min_period_s: float) -> None:
    if any(b - a < min_period_s for a, b in itertools.pairwise(starts)):
        raise invalid(field, f"occurrences must be at least {_span(min_period_s)} apart")


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        n = int(seconds // 3600)
        return "an hour" if n == 1 else f"{n} hours"
    if seconds % 60 == 0:
        n = int(seconds // 60)
        return "a minute" if n == 1 else f"{n} minutes"
    return f"{seconds:g} seconds"
