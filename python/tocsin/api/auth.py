"""Authentication for every `/api` route: `Bearer pat_…` personal access tokens, and
sessions (`Bearer <jwt>` or the `access_token` cookie) issued by `POST /api/auth/token`;
and the login throttle that slows password guessing."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from typing import Any

import falcon
import falcon.asgi

from tocsin.security import TOKEN_PREFIX, hash_token, password_stamp, read_session, same_stamp
from tocsin.store.base import Principal, Store

SESSION_COOKIE = "access_token"
log = logging.getLogger("tocsin.api.auth")

# A token's last use is written at most this often (seconds), off the request's path.
TOUCH_EVERY = 60.0

_CACHE_TTL = 10.0
_CACHE_MAX = 10_000
_CHALLENGE = ['Bearer realm="tocsin"']

_middlewares: weakref.WeakSet[AuthMiddleware] = weakref.WeakSet()


def forget_user(user_id: int) -> None:
    """Drop cached lookups for a user whose roles, password, tokens or state changed,
    so the change holds from the next request on rather than after the cache expires."""
    for mw in list(_middlewares):
        mw.forget(user_id)


class AuthMiddleware:
    """Resolves the caller to a `Principal` on `req.context.principal` (and sets
    `req.context.session` when it came from a session rather than a token). Lookups
    are cached briefly to keep the database off the hot path. Resources with a true
    `auth_public` attribute, and paths under `public_prefixes`, need no credentials."""

    def __init__(
        self,
        store: Store,
        *,
        public_prefixes: tuple[str, ...] = (),
        session_key: bytes | None = None,
    ) -> None:
        self._store = store
        self._public = public_prefixes
        self._session_key = session_key
        # key -> (expires at, user id or None, principal or None)
        self._cache: dict[str, tuple[float, int | None, Principal | None]] = {}
        # token hash -> when its use was last written; and the writes in flight
        self._touched: dict[str, float] = {}
        self._touching: set[asyncio.Task[None]] = set()
        _middlewares.add(self)

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if resource is None or req.path.startswith(self._public):
            return
        if getattr(resource, "auth_public", False):
            return
        header = req.get_header("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise falcon.HTTPUnauthorized(
                    description="Not authenticated", challenges=_CHALLENGE
                )
        else:
            cookies = req.get_cookie_values(SESSION_COOKIE) or []
            token = cookies[0] if cookies else ""
            if not token:
                raise falcon.HTTPUnauthorized(
                    description="Not authenticated", challenges=_CHALLENGE
                )
        req.context.session = not token.startswith(TOKEN_PREFIX)
        if req.context.session:
            principal = await self._session(token)
            if principal is None:
                raise falcon.HTTPUnauthorized(
                    description="Invalid or expired session", challenges=_CHALLENGE
                )
        else:
            principal = await self._token(token)
            if principal is None:
                raise falcon.HTTPUnauthorized(
                    description="Invalid or revoked token", challenges=_CHALLENGE
                )
        req.context.principal = principal

    def forget(self, user_id: int) -> None:
        stale = [k for k, (_, uid, _) in self._cache.items() if uid == user_id]
        for k in stale:
            del self._cache[k]

    def _cached(self, key: str) -> tuple[bool, Principal | None]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[2]
        return False, None

    def _remember(self, key: str, user_id: int | None, principal: Principal | None) -> None:
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + _CACHE_TTL, user_id, principal)

    async def _token(self, token: str) -> Principal | None:
        key = hash_token(token)
        found, principal = self._cached(key)
        if not found:
            principal = await self._store.principal_for_token(key)
            self._remember(key, principal.user_id if principal else None, principal)
        if principal is not None:
            self._touch(key)
        return principal

    def _touch(self, key: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        if len(self._touched) >= _CACHE_MAX:
            self._touched.clear()
        self._touched[key] = now
        task = asyncio.get_running_loop().create_task(self._write_use(key, time.time()))
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)

    async def _write_use(self, key: str, at: float) -> None:
        try:
            await self._store.touch_token(key, at)
        except Exception as exc:  # a busy or absent database only delays the stamp
            log.debug("recording a token's use failed: %s", exc)
            self._touched.pop(key, None)

    async def _session(self, token: str) -> Principal | None:
        signing_key = self._session_key
        if signing_key is None:
            return None
        claims = read_session(signing_key, token)  # signature and expiry, every time
        if claims is None:
            return None
        user_id, stamp = claims
        key = f"session:{user_id}:{stamp}"
        found, principal = self._cached(key)
        if found:
            return principal
        principal = await self._store.principal_for_user(user_id)
        if principal is not None:
            # A session ends when the password it was opened with changes.
            current = await self._store.password_hash(user_id)
            if current is None or not same_stamp(password_stamp(current), stamp):
                principal = None
        self._remember(key, user_id, principal)
        return principal


class LoginThrottle:
    """Failed logins per (username, client address): after `limit` failures within
    `window` seconds, further attempts are refused for a backoff that doubles with
    each further failure, up to `max_backoff`. A success clears the count. In memory:
    it slows guessing against one server process."""

    def __init__(
        self,
        *,
        limit: int = 5,
        window: float = 900.0,
        backoff: float = 30.0,
        max_backoff: float = 900.0,
        max_entries: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._max_entries = max_entries
        # key -> (failures, first failure at, blocked until)
        self._entries: OrderedDict[tuple[str, str], tuple[int, float, float]] = OrderedDict()

    def retry_after(self, username: str, address: str, now: float | None = None) -> float:
        """Seconds until this pair may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        entry = self._entries.get((username, address))
        if entry is None:
            return 0.0
        _, first, blocked_until = entry
        if now - first > self.window and now >= blocked_until:
            del self._entries[(username, address)]
            return 0.0
        return max(0.0, blocked_until - now)

    def failed(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        key = (username, address)
        failures, first, blocked_until = self._entries.pop(key, (0, now, 0.0))
        if now - first > self.window and now >= blocked_until:
            failures, first = 0, now
        failures += 1
        if failures >= self.limit:
            delay = min(self.max_backoff, self.backoff * 2 ** (failures - self.limit))
            blocked_until = now + delay
        self._entries[key] = (failures, first, blocked_until)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def succeeded(self, username: str, address: str) -> None:
        self._entries.pop((username, address), None)
