"""Rate limits over HTTP: the budgets (tocsin/ratelimits.py, built with the other
services) spent per API token (or session) on authenticated routes, per client address
on everything else, pings in a bucket of their own, and per client address for failed
authentication, so credentials cannot be guessed at line rate. Inbound events are not
limited per address (each integration key has its own budget, `RateLimits.events`);
their routes count an unknown key as a failed authentication themselves
(api/inbound_events.py), so a sender's live keys are never held back by a dead one.
Over a limit, 429 with `Retry-After`."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from tocsin.api.auth import SESSION_COOKIE
from tocsin.api.paths import INBOUND_PREFIXES, PING_PREFIX
from tocsin.ratelimits import (
    ENV_PER_ADDRESS,
    ENV_PER_TOKEN,
    FAILED_AUTH_BURST,
    RateLimits,
    TokenBuckets,
)
from tocsin.security import hash_token

__all__ = [
    "ENV_PER_ADDRESS",
    "ENV_PER_TOKEN",
    "FAILED_AUTH_BURST",
    "RateLimitMiddleware",
    "TokenBuckets",
]


class RateLimitMiddleware:
    """Register after `AuthMiddleware`: it keys authenticated requests by the credential
    the auth middleware accepted (so each token has its own budget, whichever address it
    comes from) and the rest by client address, with pings in a bucket of their own.
    A rate of 0 turns that limit off."""

    def __init__(self, limits: RateLimits) -> None:
        self._tokens = limits.tokens
        self._addresses = limits.addresses
        self._failures = limits.failures

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if self._failures is None or req.path.startswith(PING_PREFIX):
            return
        if req.path.startswith(INBOUND_PREFIXES):
            return  # an integration key is not a credential of this middleware's
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
        elif self._addresses is not None and not req.path.startswith(INBOUND_PREFIXES):
            ping = req.path.startswith(PING_PREFIX)
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
