"""Rate limits: token buckets per caller, and the budgets of one server (per API token,
per client address, failed authentications per address, inbound events per integration
key), from the environment. The HTTP middleware that spends the first three is
api/ratelimit.py; the inbound routes spend the events' (api/inbound_events.py)."""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV_PER_TOKEN = "TOCSIN_RATE_LIMIT_PER_TOKEN"  # noqa: S105  a variable name, no secret
ENV_PER_ADDRESS = "TOCSIN_RATE_LIMIT_PER_ADDRESS"
ENV_INBOUND_RATE = "TOCSIN_INBOUND_RATE"
ENV_INBOUND_BURST = "TOCSIN_INBOUND_BURST"

# Sustained requests per second and burst: far above what a person, a script or the
# test suite sends, low enough to stop one client from starving the others.
PER_TOKEN_RATE = 50.0
PER_TOKEN_BURST = 200.0
PER_ADDRESS_RATE = 100.0
PER_ADDRESS_BURST = 500.0
# Inbound events per second per integration key: far above what a monitoring system
# sends, low enough that one runaway sender cannot starve the others.
INBOUND_RATE = 600.0
INBOUND_BURST = 3000.0
# Failed authentications (401) per client address: a burst for typos and expired
# sessions, then one per second; while the bucket is empty, that address's requests
# with credentials are refused before any lookup.
FAILED_AUTH_RATE = 1.0
FAILED_AUTH_BURST = 20.0
MAX_KEYS = 100_000


class TokenBuckets:
    """Token buckets keyed by caller. Buckets live in least-recently-used order; an idle
    bucket that has filled up again is the same as a new one and is dropped, and past
    `max_keys` the least recently used goes, so memory stays bounded."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._refill = burst / rate  # seconds for an empty bucket to fill up
        # key -> [tokens left, at]
        self._buckets: OrderedDict[Any, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: Any) -> int:
        """Whole seconds until `key` may spend a request (0: now), spending nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0
        tokens = min(self.burst, bucket[0] + (self._clock() - bucket[1]) * self.rate)
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self.rate))

    def take(self, key: Any, cost: float = 1.0) -> int:
        """Spend `cost` (one request, or a group of events) for `key`: 0 when allowed,
        else whole seconds to wait (≥ 1). A cost above the burst passes on a full bucket
        (it is never refused for ever) and leaves it below zero, to be waited out."""
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = bucket = [self.burst, now]
            if len(buckets) > self._max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        # PERF: at most two idle buckets dropped per request keeps the sweep off the
        # hot path while the dict still drains at twice the rate new keys arrive.
        for _ in range(2):
            oldest = next(iter(buckets.values()))
            if oldest is bucket or now - oldest[1] < self._refill:
                break
            buckets.popitem(last=False)
        need = min(cost, self.burst)
        if bucket[0] >= need:
            bucket[0] -= cost
            return 0
        return max(1, math.ceil((need - bucket[0]) / self.rate))


def _rate_from_env(name: str, default: float, what: str = "requests") -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of {what} per second, got {raw!r}") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be >= 0 (0 turns the limit off), got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The budgets of one server; a budget of None is turned off (rate 0)."""

    tokens: TokenBuckets | None
    addresses: TokenBuckets | None
    failures: TokenBuckets | None
    # Inbound events per integration key (a request spends one per event it carries).
    events: TokenBuckets | None = None

    @classmethod
    def build(
        cls,
        *,
        per_token: float = PER_TOKEN_RATE,
        token_burst: float | None = None,
        per_address: float = PER_ADDRESS_RATE,
        address_burst: float | None = None,
        inbound: float = INBOUND_RATE,
        inbound_burst: float | None = None,
        max_keys: int = MAX_KEYS,
    ) -> RateLimits:
        """Without an explicit burst, it keeps the default's proportion to the rate (the
        events' at least the default)."""
        events_burst = inbound_burst or max(INBOUND_BURST, inbound * INBOUND_BURST / INBOUND_RATE)
        return cls(
            tokens=TokenBuckets(
                per_token,
                max(1.0, token_burst or per_token * PER_TOKEN_BURST / PER_TOKEN_RATE),
                max_keys=max_keys,
            )
            if per_token > 0
            else None,
            addresses=TokenBuckets(
                per_address,
                max(1.0, address_burst or per_address * PER_ADDRESS_BURST / PER_ADDRESS_RATE),
                max_keys=max_keys,
            )
            if per_address > 0
            else None,
            failures=TokenBuckets(FAILED_AUTH_RATE, FAILED_AUTH_BURST, max_keys=max_keys)
            if per_address > 0
            else None,
            events=TokenBuckets(
                inbound,
                max(1.0, events_burst),
                max_keys=max_keys,
            )
            if inbound > 0
            else None,
        )

    @classmethod
    def from_env(cls) -> RateLimits:
        """Limits from TOCSIN_RATE_LIMIT_PER_TOKEN and TOCSIN_RATE_LIMIT_PER_ADDRESS
        (requests per second), TOCSIN_INBOUND_RATE and TOCSIN_INBOUND_BURST (events per
        second per integration key, and the burst); 0 = off; else the defaults."""
        burst = _rate_from_env(ENV_INBOUND_BURST, 0.0, "events")
        return cls.build(
            per_token=_rate_from_env(ENV_PER_TOKEN, PER_TOKEN_RATE),
            per_address=_rate_from_env(ENV_PER_ADDRESS, PER_ADDRESS_RATE),
            inbound=_rate_from_env(ENV_INBOUND_RATE, INBOUND_RATE, "events"),
            inbound_burst=burst or None,
        )
