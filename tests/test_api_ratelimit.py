"""Rate limits over real HTTP: per token for authenticated routes and per client
address for pings, 429 with `Retry-After`, recovery after the wait, limits set by
environment (0 = off); and the token buckets' bounded memory."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server
from tocsin.api.ratelimit import (
    ENV_PER_ADDRESS,
    ENV_PER_TOKEN,
    FAILED_AUTH_BURST,
    TokenBuckets,
)

FAILED_AUTH_BURST_INT = int(FAILED_AUTH_BURST)


def limited_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_token: str, per_address: str
) -> Server:
    # The child process inherits the environment at start.
    monkeypatch.setenv(ENV_PER_TOKEN, per_token)
    monkeypatch.setenv(ENV_PER_ADDRESS, per_address)
    s = Server(tmp_path / "data")
    s.start()
    return s


@pytest.fixture
def slow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """2 requests/s per token (burst 8) and per address (burst 10)."""
    s = limited_server(tmp_path, monkeypatch, "2", "2")
    yield s
    s.kill()


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str, str, str | None]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.text(), resp.headers.get("Retry-After")


async def burst(
    http: aiohttp.ClientSession, url: str, n: int, headers: dict[str, str] | None = None
) -> list[tuple[int, str, str, str | None]]:
    return list(await asyncio.gather(*(get(http, url, headers) for _ in range(n))))


def refusals(answers: list[tuple[int, str, str, str | None]]) -> list[Any]:
    return [a for a in answers if a[0] == 429]


async def test_a_token_over_its_limit_gets_429_with_retry_after_and_recovers(
    slow_server: Server, http: aiohttp.ClientSession
) -> None:
    server = slow_server
    async with http.post(
        server.base + "/api/users/me/tokens", headers=server.headers, json={"name": "other"}
    ) as resp:
        assert resp.status == 201
        other = {"Authorization": f"Bearer {(await resp.json())['token']}"}

    answers = await burst(http, server.base + "/api/users/me", 30, server.headers)
    refused = refusals(answers)
    assert refused, answers
    allowed = [a for a in answers if a[0] == 200]
    assert 1 <= len(allowed) <= 15  # burst 8 (one spent above), plus what refills meanwhile
    assert len(allowed) + len(refused) == len(answers)
    for _, ctype, text, retry_after in refused:
        assert ctype == "application/json" and json.loads(text) == {"detail": "Too many requests"}
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1

    # Another token of the same user, from the same address, has its own budget.
    assert (await get(http, server.base + "/api/users/me", other))[0] == 200

    await asyncio.sleep(int(refused[0][3] or 1) + 0.2)
    assert (await get(http, server.base + "/api/users/me", server.headers))[0] == 200


async def test_pings_are_limited_per_client_address_in_plain_text(
    slow_server: Server, http: aiohttp.ClientSession
) -> None:
    server = slow_server
    async with http.post(
        server.base + "/api/checks/",
        headers=server.headers,
        json={"name": "cron", "type": "heartbeat", "interval": 60, "grace_period": 60},
    ) as resp:
        assert resp.status == 200, await resp.text()
        ping_url = f"{server.base}/api/ping/{(await resp.json())['uuid']}"

    answers = await burst(http, ping_url, 30)
    refused = refusals(answers)
    assert refused and len(refused) < 30, answers
    assert all(a[0] in (200, 429) for a in answers)
    for _, ctype, text, retry_after in refused:
        assert ctype == "text/plain" and "too many requests" in text.lower()
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1

    # Pings have a budget apart from the token's: the API still answers this address.
    assert (await get(http, server.base + "/api/users/me", server.headers))[0] == 200
    # Another client address is not affected (Linux routes all of 127/8 to loopback).
    conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=conn) as elsewhere:
        status, ctype, _, _ = await get(elsewhere, ping_url)
        assert (status, ctype) == (200, "text/plain")
    # An unknown uuid costs the same budget: guessing is limited too.
    guesses = await burst(http, f"{server.base}/api/ping/{uuid.uuid4()}", 6)
    assert refusals(guesses), guesses

    await asyncio.sleep(int(refused[0][3] or 1) + 0.2)
    assert (await get(http, ping_url))[0] == 200


async def test_guessing_tokens_is_limited_per_address_even_on_the_default_limits(
    server: Server, http: aiohttp.ClientSession
) -> None:
    # Default limits: failures are not requests within budget, so without a bucket of
    # their own a guesser would get 100 tries a second.
    bad = {"Authorization": "Bearer pat_" + "x" * 40}
    answers = [await get(http, server.base + "/api/users/me", bad) for _ in range(30)]
    codes = [a[0] for a in answers]
    assert codes[:FAILED_AUTH_BURST_INT] == [401] * FAILED_AUTH_BURST_INT, codes
    assert set(codes[FAILED_AUTH_BURST_INT:]) <= {401, 429} and 429 in codes, codes
    refused = refusals(answers)
    assert all(a[3] is not None and int(a[3]) >= 1 for a in refused)
    assert all(a[1] == "application/json" and "detail" in a[2] for a in refused)
    # While the address is blocked, even a good token from it waits: no lookups at all.
    assert (await get(http, server.base + "/api/users/me", server.headers))[0] == 429
    # Requests without credentials (public pings, the login form) are not blocked, and
    # another address is not affected.
    assert (await get(http, f"{server.base}/api/ping/{uuid.uuid4()}"))[0] == 404
    conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=conn) as elsewhere:
        assert (await get(elsewhere, server.base + "/api/users/me", server.headers))[0] == 200
    await asyncio.sleep(int(refused[0][3] or 1) + 0.2)
    assert (await get(http, server.base + "/api/users/me", server.headers))[0] == 200


async def test_inbound_events_spend_the_keys_budget_not_the_addresss_and_bad_keys_are_throttled(
    slow_server: Server, http: aiohttp.ClientSession
) -> None:
    server = slow_server
    async with http.get(server.base + "/api/organizations/", headers=server.headers) as resp:
        org = (await resp.json())[0]["id"]
    async with http.post(
        f"{server.base}/api/organizations/{org}/integration-keys",
        headers=server.headers,
        json={"name": "am"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        key = (await resp.json())["key"]

    async def send(routing_key: str, n: int) -> int:
        body = {
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": f"d{n}",
            "payload": {"summary": "disk full", "source": "srv01"},
        }
        async with http.post(server.base + "/api/events/ingest", json=body) as resp:
            return resp.status

    # 30 events from one address on a 2/s per-address limit: all taken.
    assert [await send(key, n) for n in range(30)] == [200] * 30
    # Unknown keys count as failed authentication of the address.
    wrong = "ik_" + "x" * 32
    codes = [await send(wrong, n) for n in range(30)]
    assert codes[:FAILED_AUTH_BURST_INT] == [404] * FAILED_AUTH_BURST_INT, codes
    assert set(codes[FAILED_AUTH_BURST_INT:]) <= {404, 429} and 429 in codes, codes
    body = {"routing_key": wrong, "event_action": "resolve", "dedup_key": "d1"}
    async with http.post(server.base + "/api/events/ingest", json=body) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert await resp.json() == {"detail": "Too many requests"}
    # A dead key configured somewhere never holds back the address's live key.
    assert [await send(key, n) for n in range(5)] == [200] * 5


async def test_a_limit_of_zero_turns_rate_limiting_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    server = limited_server(tmp_path, monkeypatch, "0", "0")
    try:
        answers = await burst(http, server.base + "/api/users/me", 100, server.headers)
        assert [a[0] for a in answers] == [200] * 100
        pings = await burst(http, f"{server.base}/api/ping/{uuid.uuid4()}", 100)
        assert [a[0] for a in pings] == [404] * 100
    finally:
        server.kill()


def test_buckets_refill_at_the_rate_and_say_how_long_to_wait() -> None:
    now = [0.0]
    buckets = TokenBuckets(2.0, 3.0, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == 1  # needs 0.5 s for the next request: rounded up
    assert buckets.take("b") == 0
    now[0] = 0.5
    assert buckets.take("a") == 0
    assert buckets.take("a") == 1
    slow = TokenBuckets(0.1, 1.0, clock=lambda: now[0])
    assert slow.take("a") == 0
    assert slow.take("a") == 10


def test_a_group_spends_its_size_and_one_larger_than_the_burst_passes_on_a_full_bucket() -> None:
    now = [0.0]
    events = TokenBuckets(10.0, 20.0, clock=lambda: now[0])
    assert events.take("key", 15) == 0
    assert events.take("key", 10) == 1  # 5 left, 10 needed: 0.5 s, rounded up
    now[0] += 1.5  # 20 again (the burst)
    assert events.take("key", 50) == 0  # larger than the burst: passes on a full bucket
    assert events.take("key", 1) == 4  # 30 below zero: 3.1 s until one is back
    now[0] += 5.0
    assert events.take("key", 1) == 0


def test_buckets_forget_idle_callers_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(10.0, 10.0, max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        buckets.take(i)
    assert len(buckets) == 100
    # A full bucket is the same as a new one: idle callers drain away as others come.
    now[0] = 5.0
    for _ in range(10):
        buckets.take("busy")
    assert len(buckets) == 100 - 2 * 10  # two idle ones dropped per request
    for _ in range(50):
        buckets.take("busy")
    assert len(buckets) == 1
    # An evicted caller comes back with a full bucket, never a fresh debt.
    assert buckets.take(5) == 0
