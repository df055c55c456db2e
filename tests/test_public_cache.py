"""The cache in front of the public documents (tocsin/statuspages/cache.py): one build per
key however many ask at once, dropped by a change of a check it shows, never keeping a
build that raced an invalidation."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import pytest

from tocsin.api.cached import accepts_gzip, matches
from tocsin.statuspages.cache import Built, PublicCache, etag_of


async def test_concurrent_misses_share_one_build() -> None:
    cache = PublicCache()
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def build() -> Built:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return Built(b"page", "text/html", checks=[1])

    waiters = [asyncio.create_task(cache.get_or_build("page:a", build)) for _ in range(50)]
    await started.wait()
    release.set()
    entries = await asyncio.gather(*waiters)
    assert calls == 1
    assert {e.etag for e in entries} == {etag_of(b"page")}
    assert cache.misses == 1 and cache.hits == 49
    # And later requests are hits without a build.
    again = await cache.get_or_build("page:a", build)
    assert again.body == b"page" and calls == 1


async def test_a_change_of_a_shown_check_drops_only_its_entries() -> None:
    cache = PublicCache()
    version = {"a": 0, "b": 0}

    def builder(key: str, checks: list[int]) -> Callable[[], Awaitable[Built]]:
        async def build() -> Built:
            version[key] += 1
            return Built(f"{key}{version[key]}".encode(), "text/plain", checks=checks)

        return build

    await cache.get_or_build("a", builder("a", [1, 2]))
    await cache.get_or_build("b", builder("b", [3]))
    assert cache.invalidate_checks([2]) == 1
    assert (await cache.get_or_build("a", builder("a", [1, 2]))).body == b"a2"
    assert (await cache.get_or_build("b", builder("b", [3]))).body == b"b1"
    assert cache.invalidate_checks([99]) == 0
    assert cache.invalidate_prefix("b") == 1
    assert (await cache.get_or_build("b", builder("b", [3]))).body == b"b2"


async def test_a_build_that_raced_an_invalidation_is_served_but_not_kept() -> None:
    cache = PublicCache()
    release = asyncio.Event()

    async def slow() -> Built:
        await release.wait()
        return Built(b"stale", "text/plain", checks=[7])

    task = asyncio.create_task(cache.get_or_build("k", slow))
    await asyncio.sleep(0)
    cache.invalidate_checks([7])  # the check changed while the page was being built
    release.set()
    assert (await task).body == b"stale"
    assert cache.get("k") is None


async def test_a_build_is_kept_when_only_other_checks_changed_meanwhile() -> None:
    cache = PublicCache()
    release = asyncio.Event()

    async def slow() -> Built:
        await release.wait()
        return Built(b"fresh", "text/plain", checks=[7])

    task = asyncio.create_task(cache.get_or_build("page:a:html", slow))
    await asyncio.sleep(0)
    cache.invalidate_checks([8, 9])  # the rest of the fleet moves on
    cache.invalidate_prefix("page:b:")  # another page is edited
    release.set()
    assert (await task).body == b"fresh"
    assert cache.get("page:a:html") is not None
    # And an edit of the page itself while it builds is not lost.
    release.clear()
    cache.invalidate_prefix("page:a:")
    task = asyncio.create_task(cache.get_or_build("page:a:html", slow))
    await asyncio.sleep(0)
    cache.invalidate_prefix("page:a:")
    release.set()
    await task
    assert cache.get("page:a:html") is None


async def test_big_bodies_are_gzipped_once_with_their_own_validator() -> None:
    cache = PublicCache()
    body = b"<li class=ok></li>" * 1000

    async def build() -> Built:
        return Built(body, "text/html")

    entry = await cache.get_or_build("big", build)
    assert entry.gzipped is not None and gzip.decompress(entry.gzipped) == body
    assert entry.gzip_etag != entry.etag and entry.gzip_etag.startswith('"')

    async def small() -> Built:
        return Built(b"<svg/>", "image/svg+xml")

    assert (await cache.get_or_build("small", small)).gzipped is None


async def test_entries_expire_and_the_oldest_go_first() -> None:
    cache = PublicCache(max_age=10.0, max_entries=2)

    async def build() -> Built:
        return Built(b"x", "text/plain")

    entry = await cache.get_or_build("one", build)
    assert cache.get("one", now=entry.built_at + 5) is not None
    assert cache.get("one", now=entry.built_at + 11) is None
    for key in ("a", "b", "c"):
        await cache.get_or_build(key, build)
    assert len(cache) == 2 and cache.get("a") is None


async def test_a_failed_build_reaches_every_waiter_and_keeps_nothing() -> None:
    cache = PublicCache()
    release = asyncio.Event()

    async def broken() -> Built:
        await release.wait()
        raise RuntimeError("database down")

    tasks = [asyncio.create_task(cache.get_or_build("k", broken)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    for task in tasks:
        with pytest.raises(RuntimeError):
            await task
    assert cache.get("k") is None


def test_what_a_client_accepts_and_has() -> None:
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.8, *;q=0.1")
    assert accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("deflate, br")
    assert not accepts_gzip(None)
    assert matches('"a", W/"b"', '"b"') and matches("*", '"x"')
    assert not matches('"a"', '"b"') and not matches(None, '"b"')
