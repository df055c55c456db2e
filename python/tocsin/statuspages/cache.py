"""What the public sees, rendered once: status pages (HTML, JSON, uptime, feed) and badges
are kept by key until something they show changes, so a thundering herd during an outage
costs no database query per request.

An entry names the checks it shows; a status change, an incident change or a maintenance
change of one of them drops it (`invalidate_checks`), an edit of a page drops that page's
entries (`invalidate_prefix`), and every entry also expires after `max_age` seconds
(uptime bars and "upcoming maintenance" move with the clock). Concurrent misses of one
key share one build (single flight), and a build that started before an invalidation of
one of its checks (or of its key) is served to its waiters but not kept; an invalidation
of other checks does not stop it being kept, so a slow build of a big page is kept while
the rest of a large fleet changes."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cached:
    body: bytes
    content_type: str
    # A strong validator: the body's hash, quoted as HTTP wants it.
    etag: str
    built_at: float
    # The body gzipped once at build (bodies of GZIP_MIN bytes or more), for clients
    # that accept it: a 500-component page is megabytes of repetitive markup.
    gzipped: bytes | None = None

    @property
    def gzip_etag(self) -> str:
        """The gzipped representation's own validator."""
        return self.etag[:-1] + '-gz"'


@dataclass(frozen=True, slots=True)
class Built:
    """What a builder returns: the document, its type, and the checks it shows (None:
    it depends on no check, only on the clock and on explicit invalidation)."""

    body: bytes
    content_type: str
    checks: Collection[int] | None = None


GZIP_MIN = 1024
GZIP_LEVEL = 5


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class PublicCache:
    def __init__(self, *, max_age: float = 30.0, max_entries: int = 10_000) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self._keys_of_check: dict[int, set[str]] = {}
        self._checks_of_key: dict[str, frozenset[int]] = {}
        self._building: dict[str, asyncio.Future[Cached]] = {}
        # A clock of invalidations, and when each check, key prefix, or everything was
        # last invalidated, remembered only while a build is under way (what a build
        # that started earlier must check before it is kept).
        self._clock = 0
        self._check_changed: dict[int, int] = {}
        self._prefix_changed: dict[str, int] = {}
        self._cleared = 0
        self.hits = 0
        self.misses = 0
        self.builds = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float | None = None) -> Cached | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (now if now is not None else time.time()) - entry.built_at > self.max_age:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def get_or_build(self, key: str, build: Callable[[], Awaitable[Built]]) -> Cached:
        """The entry for `key`, built by `build()` on a miss; concurrent misses wait for
        the same build. A build's exception reaches every waiter and nothing is kept."""
        entry = self.get(key)
        if entry is not None:
            self.hits += 1
            return entry
        pending = self._building.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        started = self._clock
        try:
            built = await build()
            self.builds += 1
            gzipped = (
                gzip.compress(built.body, GZIP_LEVEL, mtime=0)
                if len(built.body) >= GZIP_MIN
                else None
            )
            entry = Cached(
                built.body, built.content_type, etag_of(built.body), time.time(), gzipped
            )
            if not self._changed_since(started, key, built.checks):
                self._put(key, entry, built.checks)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody else waiting: retrieve it, so asyncio does not log it as lost.
            future.exception()
            raise
        finally:
            self._building.pop(key, None)
            if not self._building:
                self._check_changed.clear()
                self._prefix_changed.clear()

    def _changed_since(self, started: int, key: str, checks: Collection[int] | None) -> bool:
        if self._clock == started:
            return False
        if self._cleared > started:
            return True
        if any(t > started and key.startswith(p) for p, t in self._prefix_changed.items()):
            return True
        changed = self._check_changed
        return any(changed.get(cid, 0) > started for cid in checks or ())

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def invalidate_checks(self, check_ids: Collection[int]) -> int:
        """Drop every entry that shows one of these checks; how many were dropped."""
        now = self._tick()
        building = bool(self._building)
        keys: set[str] = set()
        for cid in check_ids:
            if building:
                self._check_changed[cid] = now
            keys |= self._keys_of_check.get(cid, set())
        for key in keys:
            self._drop(key)
        return len(keys)

    def invalidate_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with `prefix` (a page's entries after an edit)."""
        now = self._tick()
        if self._building:
            self._prefix_changed[prefix] = now
        keys = [k for k in self._entries if k.startswith(prefix)]
        for key in keys:
            self._drop(key)
        return len(keys)

    def clear(self) -> None:
        self._cleared = self._tick()
        self._entries.clear()
        self._keys_of_check.clear()
        self._checks_of_key.clear()

    def _put(self, key: str, entry: Cached, checks: Collection[int] | None) -> None:
        self._drop(key)
        self._entries[key] = entry
        ids = frozenset(checks or ())
        self._checks_of_key[key] = ids
        for cid in ids:
            self._keys_of_check.setdefault(cid, set()).add(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        self._entries.pop(key, None)
        for cid in self._checks_of_key.pop(key, frozenset()):
            keys = self._keys_of_check.get(cid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_of_check[cid]
