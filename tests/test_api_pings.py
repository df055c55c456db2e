"""Heartbeat pings over real HTTP: public by uuid, tiny plain-text answers, success /
start / fail / log / exit codes drive the check UP and DOWN, a missed ping makes it
LATE and then DOWN, bodies are capped at 100 KB."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest

from helpers import Server, wait_for
from tocsin.encryption import SecretBox
from tocsin.store.sqlite import SqliteStore

INTERVAL = 2
GRACE = 2


async def api(http: aiohttp.ClientSession, server: Server, method: str, path: str) -> Any:
    async with http.request(method, server.base + path, headers=server.headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def ping(
    http: aiohttp.ClientSession, server: Server, path: str, method: str = "GET", **kw: Any
) -> tuple[int, str, str]:
    """A ping with no credentials at all: (status, content type, text)."""
    async with http.request(method, server.base + "/api/ping/" + path, **kw) as resp:
        return resp.status, resp.content_type, await resp.text()


async def heartbeat_checks(
    http: aiohttp.ClientSession, server: Server, *names: str
) -> list[dict[str, Any]]:
    """Heartbeat checks (interval 2 s, grace 2 s) through the API, or, while the API
    does not create them yet, written into the store and loaded by a restart."""
    body = {"type": "heartbeat", "interval": INTERVAL, "timeout": 1, "grace_period": GRACE}
    made = []
    for name in names:
        async with http.post(
            server.base + "/api/checks/", headers=server.headers, json={"name": name, **body}
        ) as resp:
            if resp.status != 200:
                assert resp.status == 422
                break
            made.append(await resp.json())
    else:
        return made
    assert not made
    server.stop()
    store = SqliteStore(server.data_dir / "tocsin.db", SecretBox.from_environment(server.data_dir))
    await store.open()
    try:
        for name in names:
            # grace_period in the config too: the engine reads it from the options.
            row = await store.create_check(
                1, {"name": name, **body, "config": {"grace_period": GRACE}}
            )
            made.append(row)
    finally:
        await store.close()
    server.start()
    return made


async def status_of(http: aiohttp.ClientSession, server: Server, cid: int) -> str:
    return str((await api(http, server, "GET", f"/api/checks/{cid}"))["status"])


async def becomes(
    http: aiohttp.ClientSession, server: Server, cid: int, want: str, timeout: float = 10
) -> None:
    async def reached() -> bool:
        return await status_of(http, server, cid) == want

    await wait_for(reached, timeout=timeout, interval=0.05)


@pytest.mark.both_backends
async def test_pings_drive_a_heartbeat_check_up_late_and_down(
    server: Server, http: aiohttp.ClientSession
) -> None:
    (check,) = await heartbeat_checks(http, server, "backup")
    cid, uuid = check["id"], check["uuid"]
    assert await status_of(http, server, cid) == "UNKNOWN"

    assert await ping(http, server, uuid) == (200, "text/plain", "OK")
    await becomes(http, server, cid, "UP")
    # No ping within the interval: LATE, then DOWN once the grace period is over too.
    await becomes(http, server, cid, "LATE", timeout=INTERVAL + 3)
    await becomes(http, server, cid, "DOWN", timeout=GRACE + 3)

    assert (await ping(http, server, f"{uuid}/0", "POST"))[0] == 200
    await becomes(http, server, cid, "UP")
    assert (await ping(http, server, f"{uuid}/fail/"))[0] == 200
    await becomes(http, server, cid, "DOWN")
    async with http.head(server.base + f"/api/ping/{uuid}") as resp:
        assert resp.status == 200 and await resp.read() == b""
    await becomes(http, server, cid, "UP")
    assert (await ping(http, server, f"{uuid}/3", "HEAD"))[0] == 200
    await becomes(http, server, cid, "DOWN")
    logs = await api(http, server, "GET", f"/api/checks/{cid}/logs?limit=1")
    assert logs[0]["error_kind"] == "exit_code" and "code 3" in logs[0]["message"]

    # `start` opens a run that the next success with the same rid measures; `log`
    # only records.
    assert (await ping(http, server, f"{uuid}/start?rid=run-1"))[0] == 200
    await asyncio.sleep(0.3)
    code, _, _ = await ping(http, server, f"{uuid}/log?rid=run-1", "POST", data=b"step 1 of 2 done")
    assert code == 200
    assert await status_of(http, server, cid) == "DOWN"
    assert (await ping(http, server, f"{uuid}?rid=run-1", "POST", data=b"all done"))[0] == 200
    await becomes(http, server, cid, "UP")
    logs = await api(http, server, "GET", f"/api/checks/{cid}/logs?limit=1")
    assert logs[0]["status"] == "UP" and logs[0]["latency_ms"] >= 300


@pytest.mark.both_backends
async def test_ping_answers_are_plain_text_and_need_no_token(
    server: Server, http: aiohttp.ClientSession
) -> None:
    hb, other = await heartbeat_checks(http, server, "cron job", "other job")
    uuid = hb["uuid"]
    async with http.post(
        server.base + "/api/checks/",
        headers=server.headers,
        json={"name": "web", "type": "uptime", "url": "http://127.0.0.1:9/", "interval": 60},
    ) as resp:
        assert resp.status == 200
        web = await resp.json()

    assert await ping(http, server, "00000000-0000-4000-8000-000000000000") == (
        404,
        "text/plain",
        "not found",
    )
    assert (await ping(http, server, "not-a-uuid"))[0] == 404
    assert (await ping(http, server, uuid.upper()))[0] == 200
    assert await ping(http, server, web["uuid"]) == (409, "text/plain", "not a heartbeat check")
    assert (await ping(http, server, f"{uuid}/256"))[0] == 400
    assert (await ping(http, server, f"{uuid}/99999999999999999999"))[0] == 400
    assert (await ping(http, server, f"{uuid}/-1"))[0] == 404
    assert (await ping(http, server, f"{uuid}/restart"))[0] == 404
    assert (await ping(http, server, f"{uuid}/255"))[0] == 200
    assert (await ping(http, server, f"{uuid}?rid=" + "r" * 201))[0] == 400
    await becomes(http, server, hb["id"], "DOWN")

    # Up to 100 KB of body is accepted; one byte more is refused and changes nothing.
    code, ctype, text = await ping(
        http, server, f"{uuid}/0", "POST", data=io.BytesIO(b"x" * 100 * 1024)
    )
    assert (code, ctype, text) == (200, "text/plain", "OK")
    await becomes(http, server, hb["id"], "UP")
    code, ctype, _ = await ping(
        http, server, f"{uuid}/fail", "POST", data=io.BytesIO(b"x" * (100 * 1024 + 1))
    )
    assert (code, ctype) == (413, "text/plain")
    await asyncio.sleep(0.5)
    assert await status_of(http, server, hb["id"]) == "UP"
    # The other check never heard a thing.
    assert await status_of(http, server, other["id"]) == "UNKNOWN"

    # A deleted check's uuid is unknown at once, even though it was just pinged.
    assert (await ping(http, server, other["uuid"]))[0] == 200
    async with http.delete(
        server.base + f"/api/checks/{other['id']}", headers=server.headers
    ) as resp:
        assert resp.status == 204
    assert (await ping(http, server, other["uuid"]))[0] == 404
    assert (await ping(http, server, uuid))[0] == 200
