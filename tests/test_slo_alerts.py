"""SLO alerts end to end, on both backends at once: a check of a real HTTP target with an
SLO; the target goes down, the check goes DOWN, and when the minute's rollup is written
the SLO's budget is exhausted and it burns far faster than its threshold — each crossing
reaches the check's webhook channel (a real receiver) once, whatever the number of
evaluation passes, is on the SLO's timeline and in the live event stream. The servers
evaluate every half second."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from helpers import Server, Target, api, call, other_org_user, wait_for
from paging_helpers import Receiver
from pgcluster import PgCluster
from workflow_helpers import loc

EVAL = {"TOCSIN_SLO_EVAL_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    db = f"t_slo_{uuid.uuid4().hex[:8]}"
    out: dict[str, Server] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in EVAL.items():
            mp.setenv(name, value)
        for backend in ("sqlite", "postgresql"):
            s = Server(tmp_path_factory.mktemp(f"slo-{backend}") / "data")
            if backend == "postgresql":
                s.start("--database", cluster.create_database(db))
            else:
                s.start()
            out[backend] = s
    yield out
    for s in out.values():
        s.kill()
    cluster.drop_database(db)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    runner = await r.start()
    yield r
    await runner.cleanup()


async def watched_check(
    http: aiohttp.ClientSession, server: Server, target: Target, receiver: Receiver, name: str
) -> dict[str, Any]:
    code, check = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        json={"name": name, "type": "uptime", "url": target.url, "interval": 1, "timeout": 1},
    )
    assert code == 200, check
    code, channel = await api(
        http,
        server,
        "POST",
        "/api/notification-channels/",
        json={"name": name, "channel_type": "webhook", "config": {"url": receiver.url(name)}},
    )
    assert code == 201, channel
    code, linked = await api(
        http,
        server,
        "PUT",
        f"/api/checks/{check['id']}/notification-channels",
        json={"channel_ids": [channel["id"]]},
    )
    assert code == 200, linked
    code, slo = await api(
        http,
        server,
        "POST",
        f"/api/checks/{check['id']}/slo",
        json={
            "target_percentage": 99.0,
            "window_days": 1,
            "notify_on_budget_warn": False,
            "notify_on_budget_exhausted": True,
            "burn_rate_alert_enabled": True,
            "burn_rate_threshold": 2,
            "burn_rate_window_minutes": 5,
        },
    )
    assert code in (200, 201), slo
    return check


def slo_messages(receiver: Receiver, name: str) -> list[str]:
    return [
        hit["event"] for hit in receiver.of(name) if str(hit.get("event", "")).startswith("slo.")
    ]


async def test_slo_crossings_are_told_once_on_both_backends(
    servers: dict[str, Server],
    http: aiohttp.ClientSession,
    target: Target,
    receiver: Receiver,
    sse: Any,
) -> None:
    checks = {
        b: await watched_check(http, s, target, receiver, f"slo-{b}") for b, s in servers.items()
    }
    for backend, server in servers.items():

        async def up(server: Server = server, backend: str = backend) -> bool:
            code, c = await api(http, server, "GET", f"/api/checks/{checks[backend]['id']}")
            return bool(code == 200 and c["status"] == "UP")

        await wait_for(up)

    async with sse(servers["sqlite"], "?types=slo.alert") as stream:
        await target.stop()
        # The first DOWN minute is written when it closes (rollups are per minute).
        for backend in servers:
            await wait_for(
                lambda b=backend: _told(
                    receiver, f"slo-{b}", {"slo.budget_exhausted", "slo.burn_rate"}
                ),
                timeout=150,
            )
        live = await stream.wait(lambda e: e["event"] == "slo.alert", timeout=10)
        assert live["data"]["check_id"] == checks["sqlite"]["id"]
        assert live["data"]["kind"] in ("budget_exhausted", "burn_rate")

    # Several more passes: nothing is told twice while the states hold.
    await asyncio.sleep(3)
    for backend, server in servers.items():
        told = slo_messages(receiver, f"slo-{backend}")
        assert sorted(told) == ["slo.budget_exhausted", "slo.burn_rate"], (backend, told)
        code, events = await api(
            http, server, "GET", f"/api/checks/{checks[backend]['id']}/slo/events"
        )
        assert code == 200, events
        assert sorted(e["kind"] for e in events) == ["budget_exhausted", "burn_rate"], events
        burn = next(e for e in events if e["kind"] == "burn_rate")
        assert burn["detail"]["burn_rate"] is None or burn["detail"]["burn_rate"] >= 2
        assert burn["detail"]["error_budget_remaining_pct"] <= 0
        # The SLO's own answer agrees.
        code, answer = await api(http, server, "GET", f"/api/checks/{checks[backend]['id']}/slo")
        assert code == 200 and answer["slo"]["budget_exhausted"] is True, answer
        # Another organisation does not see the timeline.
        outsider, _ = await other_org_user(server)
        code, _ = await call(
            http, server, "GET", f"/api/checks/{checks[backend]['id']}/slo/events", outsider
        )
        assert code == 404
    await target.start()


async def _told(receiver: Receiver, name: str, wanted: set[str]) -> bool:
    return wanted <= set(slo_messages(receiver, name))


async def test_slo_events_need_a_check_of_the_caller(
    servers: dict[str, Server], http: aiohttp.ClientSession
) -> None:
    code, err = await api(http, servers["sqlite"], "GET", "/api/checks/999999/slo/events")
    assert code == 404, err
    code, err = await api(http, servers["sqlite"], "GET", "/api/checks/1/slo/events?limit=0")
    assert code in (404, 422), err
    if code == 422:
        assert loc(err)[-1] == "limit"
