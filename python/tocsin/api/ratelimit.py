"""Rate limits: a token bucket per API token (or session) for authenticated routes, and
per client address for everything else, pings included; and per client address for
failed authentication, so credentials cannot be guessed at line rate. Over a limit, 429
with `Retry-After`."""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import falcon
import falcon.asgi

from tocsin.api.auth import SESSION_COOKIE
from tocsin.security import hash_token

ENV_PER_TOKEN = "TOCSIN_RATE_LIMIT_PER_TOKEN"  # noqa: S105  a variable name, no secret
ENV_PER_ADDRESS = "TOCSIN_RATE_LIMIT_PER_ADDRESS"

# Sustained requests per second and burst: far above what a person, a script or the
# test suite sends, low enough to stop one client from starving the others.
PER_TOKEN_RATE = 50.0
PER_TOKEN_BURST = 200.0
PER_ADDRESS_RATE = 100.0
PER_ADDRESS_BURST = 500.0
# Failed authentications (401) per client address: a burst for typos and expired
# sessions, then one per second; while the bucket is empty, that address's requests
# with credentials are refused before any lookup.
FAILED_AUTH_RATE = 1.0
FAILED_AUTH_BURST = 20.0
MAX_KEYS = 100_000

_PING_PREFIX = "/api/ping/"


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

    def take(self, key: Any) -> int:
        """Spend one request for `key`: 0 when allowed, else whole seconds to wait (≥ 1)."""
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
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket[0]) / self.rate))


def _rate_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of requests per second, got {raw!r}") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be >= 0 (0 turns the limit off), got {raw!r}")
    return value


class RateLimitMiddleware:
    """Register after `AuthMiddleware`: it keys authenticated requests by the credential
    the auth middleware accepted (so each token has its own budget, whichever address it
    comes from) and the rest by client address, with pings in a bucket of their own.
    A rate of 0 turns that limit off."""

    def __init__(
        self,
        *,
        per_token: float = PER_TOKEN_RATE,
        token_burst: float | None = None,
        per_address: float = PER_ADDRESS_RATE,
        address_burst: float | None = None,
        max_keys: int = MAX_KEYS,
    ) -> None:
        # Without an explicit burst, it keeps the default's proportion to the rate.
        self._tokens = (
            TokenBuckets(
                per_token,
                max(1.0, token_burst or per_token * PER_TOKEN_BURST / PER_TOKEN_RATE),
                max_keys=max_keys,
            )
            if per_token > 0
            else None
        )
        self._addresses = (
            TokenBuckets(
                per_address,
                max(1.0, address_burst or per_address * PER_ADDRESS_BURST / PER_ADDRESS_RATE),
                max_keys=max_keys,
            )
            if per_address > 0
            else None
        )
        self._failures = (
            TokenBuckets(FAILED_AUTH_RATE, FAILED_AUTH_BURST, max_keys=max_keys)
            if per_address > 0
            else None
        )

    @classmethod
    def from_env(cls) -> RateLimitMiddleware:
        """Limits from TOCSIN_RATE_LIMIT_PER_TOKEN and TOCSIN_RATE_LIMIT_PER_ADDRESS
        (requests per second; 0 = off), else the defaults."""
        return cls(
            per_token=_rate_from_env(ENV_PER_TOKEN, PER_TOKEN_RATE),
            per_address=_rate_from_env(ENV_PER_ADDRESS, PER_ADDRESS_RATE),
        )

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if self._failures is None or req.path.startswith(_PING_PREFIX):
            return
        if req.get_header("Authorization") is None and not req.cookies:
            return
        wait = self._failures.wait(("fail", req.remote_addr))
        if wait:
            _refuse_json(resp, wait)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        if self._failures is not None and resp.status_code == 401:
            self._failures.take(("fail", req.remote_addr))

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if getattr(req.context, "principal", None) is not None:
            if self._tokens is None:
                return
            wait = self._tokens.take(("token", hash_token(_credential(req))))
            if wait:
                _refuse_json(resp, wait)
        elif self._addresses is not None:
            ping = req.path.startswith(_PING_PREFIX)
            wait = self._addresses.take(("ping" if ping else "addr", req.remote_addr))
            if wait:
                if ping:
                    _refuse_text(resp, wait)
                else:
                    _refuse_json(resp, wait)


def _credential(req: falcon.asgi.Request) -> str:
    # The auth middleware has already accepted exactly this credential.
    header = req.get_header("Authorization")
    if header is not None:
        return header.partition(" ")[2].strip()
    cookies = req.get_cookie_values(SESSION_COOKIE) or []
    return cookies[0] if cookies else ""


# PERF: the refusal completes the response instead of raising, so a flood costs no
# exception handling; the body still follows the API's error model.
def _refuse_json(resp: falcon.asgi.Response, wait: int) -> None:
    resp.status = falcon.HTTP_429
    resp.media = {"detail": "Too many requests"}
    resp.set_header("Retry-After", str(wait))
    resp.complete = True


def _refuse_text(resp: falcon.asgi.Response, wait: int) -> None:
    resp.status = falcon.HTTP_429
    resp.content_type = falcon.MEDIA_TEXT
    resp.text = "too many requests"
    resp.set_header("Retry-After", str(wait))
    resp.complete = True
