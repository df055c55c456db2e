"""`GET /api/events` (Server-Sent Events) over real HTTP: engine output arrives as
`status.change` and `log.append` for the caller's organisations only, `Last-Event-ID`
resumes, heartbeats flow, slow clients are dropped and gone clients cleaned up."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from helpers import (
    EventStream,
    Server,
    Target,
    api,
    create_check,
    free_port,
    is_event,
    other_org_user,
    wait_for,
)
from tocsin.api.app import create_app
from tocsin.encryption import SecretBox
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.server import bootstrap
from tocsin.services import Services
from tocsin.store.sqlite import SqliteStore

# -- over a `tocsin serve` process ----------------------------------------------------------


async def test_events_need_a_token(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(server.base + "/api/events") as resp:
        assert resp.status == 401
        assert "detail" in await resp.json()


async def test_checks_going_up_and_down_stream_status_changes_and_results(
    server: Server, target: Target, http: aiohttp.ClientSession, sse: Any
) -> None:
    async with sse(server, "?heartbeat=1") as stream:
        check = await create_check(http, server, target.url)
        cid = check["id"]
        up = await stream.wait(is_event("status.change", check_id=cid, current="UP"))
        assert up["data"]["previous"] == "UNKNOWN"
        assert up["data"]["at"].endswith("Z")
        result = await stream.wait(is_event("log.append", check_id=cid))
        assert result["data"]["status"] == "UP"
        assert result["data"]["latency_ms"] >= 0
        assert result["data"]["error_kind"] is None
        await target.stop()
        down = await stream.wait(is_event("status.change", check_id=cid, current="DOWN"))
        assert down["data"]["previous"] == "UP"
        assert down["data"]["reason"] == "connect_refused"
        failed = [
            e
            for e in stream.seen
            if e.get("event") == "log.append" and e["data"]["status"] == "DOWN"
        ]
        assert failed and failed[0]["data"]["error_kind"] == "connect_refused"
        ids = [int(e["id"]) for e in stream.seen if "id" in e]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_last_event_id_resumes_with_only_later_events(
    server: Server, target: Target, http: aiohttp.ClientSession, sse: Any
) -> None:
    async with sse(server) as stream:
        check = await create_check(http, server, target.url)
        cid = check["id"]
        up = await stream.wait(is_event("status.change", check_id=cid, current="UP"))
        mark = int(up["id"])
        await stream.wait(lambda e: int(e["id"]) > mark + 1)

    for how in ({"headers": {"Last-Event-ID": str(mark)}}, {"query": f"?last_event_id={mark}"}):
        async with sse(server, how.get("query", ""), headers=how.get("headers", {})) as again:
            first = await again.wait(lambda e: True)
            # Replayed from the history: the very next event, nothing at or before the mark.
            assert int(first["id"]) == mark + 1
            await again.wait(lambda e: int(e["id"]) > mark + 3)
            assert all(int(e["id"]) > mark for e in again.seen if "id" in e)

    # From the start of the history: the transition is replayed.
    async with sse(server, "?last_event_id=0") as replay:
        await replay.wait(is_event("status.change", check_id=cid, current="UP"), timeout=5)


async def test_heartbeats_keep_an_idle_stream_alive(server: Server, sse: Any) -> None:
    async with sse(server, "?heartbeat=1") as stream:
        started = time.monotonic()
        assert await stream.next(5) == {"comment": "ping"}
        assert await stream.next(5) == {"comment": "ping"}
        assert 1.5 <= time.monotonic() - started < 5


async def test_a_type_filter_passes_only_those_events(
    server: Server, target: Target, http: aiohttp.ClientSession, sse: Any
) -> None:
    async with sse(server, "?types=status.change&heartbeat=1") as stream:
        check = await create_check(http, server, target.url)
        await stream.wait(is_event("status.change", check_id=check["id"], current="UP"))
        await asyncio.sleep(2.5)  # a couple more results, which must not come through
        await stream.next(3)
        assert {e["event"] for e in stream.seen if "event" in e} == {"status.change"}


@pytest.mark.both_backends
async def test_another_organisation_sees_none_of_the_events(
    server: Server, target: Target, http: aiohttp.ClientSession, sse: Any
) -> None:
    token, _ = await other_org_user(server)
    async with (
        sse(server, "?heartbeat=1") as mine,
        sse(server, "?heartbeat=1&last_event_id=0", token=token) as theirs,
    ):
        check = await create_check(http, server, target.url)
        await mine.wait(is_event("status.change", check_id=check["id"], current="UP"))
        await mine.wait(is_event("log.append", check_id=check["id"]))
        # Two heartbeats later, still nothing but heartbeats on the other stream.
        for _ in range(2):
            while (event := await theirs.next(5)) is not None and "comment" not in event:
                pass
        assert [e for e in theirs.seen if "event" in e] == []


async def test_bad_stream_parameters_are_refused(
    server: Server, http: aiohttp.ClientSession
) -> None:
    cases = [
        ("?heartbeat=0", ["query", "heartbeat"]),
        ("?heartbeat=61", ["query", "heartbeat"]),
        ("?heartbeat=soon", ["query", "heartbeat"]),
        ("?last_event_id=-1", ["query", "last_event_id"]),
        ("?types=status.change,gossip", ["query", "types"]),
    ]
    for query, loc in cases:
        code, body = await api(http, server, "GET", "/api/events" + query)
        assert code == 422, (query, body)
        assert body["detail"][0]["loc"] == loc
    code, body = await api(http, server, "GET", "/api/events", headers={"Last-Event-ID": "x"})
    assert code == 422 and body["detail"][0]["loc"] == ["header", "Last-Event-ID"]


# -- in-process: the hub's side of slow and vanished clients -------------------------------


class InProcess:
    def __init__(self, ctx: Services, base: str, token: str) -> None:
        self.ctx, self.base, self.token = ctx, base, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[InProcess]:
    """The real app (all routes, real SQLite store and engine) served by uvicorn in the
    test's own loop, with a small per-client queue so a slow client is easy to make."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = SqliteStore(data_dir / "tocsin.db", SecretBox.from_environment(data_dir))
    await store.open()
    await bootstrap(store, data_dir)
    creds = (data_dir / "initial-credentials").read_text()
    token = dict(line.split("=", 1) for line in creds.split())["token"]
    engine = Engine()
    ctx = Services.build(store, data_dir, engine=engine, events=EventHub(queue_size=5))
    port = free_port()
    config = uvicorn.Config(
        create_app(ctx),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: _started(server), timeout=10, interval=0.02)
    try:
        yield InProcess(ctx, f"http://127.0.0.1:{port}", token)
    finally:
        ctx.close_streams()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()
        await engine.close()
        await store.close()


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


async def _open(http: aiohttp.ClientSession, app: InProcess, query: str = "") -> EventStream:
    resp = await http.get(
        app.base + "/api/events" + query,
        headers=app.headers,
        timeout=aiohttp.ClientTimeout(total=None),
    )
    assert resp.status == 200
    stream = EventStream(resp)
    assert await stream.next(5) == {"comment": "connected"}
    return stream


async def test_a_client_too_slow_for_its_queue_is_dropped_and_can_resume(
    app_server: InProcess, http: aiohttp.ClientSession
) -> None:
    hub = app_server.ctx.events
    stream = await _open(http, app_server)
    assert hub.subscribers == 1
    # More events at once than the client's queue holds (5): it overflows.
    for i in range(20):
        hub.publish(1, "check.update", {"check_id": i})
    assert hub.subscribers == 0
    got = []
    while (event := await stream.next(5)) is not None:
        got.append(event)
    # What was queued is delivered, then the stream ends.
    assert [e["data"]["check_id"] for e in got] == [0, 1, 2, 3, 4]
    stream.resp.close()
    # The client resumes from the last event it saw and gets the rest (history).
    again = await _open(http, app_server, f"?last_event_id={got[-1]['id']}")
    rest = [await again.next(5) for _ in range(5)]
    assert [e["data"]["check_id"] for e in rest if e] == [5, 6, 7, 8, 9]
    again.resp.close()


async def test_a_client_that_goes_away_is_unsubscribed(
    app_server: InProcess, http: aiohttp.ClientSession
) -> None:
    hub = app_server.ctx.events
    stream = await _open(http, app_server, "?heartbeat=1")
    assert hub.subscribers == 1
    stream.resp.close()

    async def gone() -> bool:
        return hub.subscribers == 0

    # Noticed at the next heartbeat at the latest.
    await wait_for(gone, timeout=5)


async def test_close_streams_ends_every_open_stream(
    app_server: InProcess, http: aiohttp.ClientSession
) -> None:
    streams = [await _open(http, app_server) for _ in range(3)]
    assert app_server.ctx.close_streams() == 3
    for stream in streams:
        assert await stream.next(5) is None
        stream.resp.close()
    assert app_server.ctx.events.subscribers == 0
