"""Bearer-token authentication for every `/api` route."""

from __future__ import annotations

import time
from typing import Any

import falcon
import falcon.asgi

from tocsin.security import TOKEN_PREFIX, hash_token
from tocsin.store.base import Principal, Store

_CACHE_TTL = 10.0
_CACHE_MAX = 10_000


class AuthMiddleware:
    """Resolves `Authorization: Bearer pat_…` to a `Principal` on `req.context.principal`.
    Lookups are cached briefly (by token hash) to keep the database off the hot path."""

    def __init__(self, store: Store, *, public_prefixes: tuple[str, ...] = ()) -> None:
        self._store = store
        self._public = public_prefixes
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if resource is None or req.path.startswith(self._public):
            return
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
            raise falcon.HTTPUnauthorized(
                description="Not authenticated", challenges=['Bearer realm="tocsin"']
            )
        principal = await self._lookup(hash_token(token))
        if principal is None:
            raise falcon.HTTPUnauthorized(
                description="Invalid or revoked token", challenges=['Bearer realm="tocsin"']
            )
        req.context.principal = principal

    async def _lookup(self, token_hash: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(token_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._store.principal_for_token(token_hash)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token_hash] = (now + _CACHE_TTL, principal)
        return principal
