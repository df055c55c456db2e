"""The agents part of the store on both backends: one-time registration, credentials,
exactly-once batches (concurrent duplicates included), assignments and their version,
the offline sweep and per-source results."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from store_helpers import store
from tocsin.agent import wire
from tocsin.store.base import NotFoundError
from tocsin.store.sql import SqlStore

__all__ = ["store"]  # the fixture

T0 = float(int(time.time()) - 3600)


def check_fields(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "uptime", "interval": 60, "timeout": 5, "url": "http://x/", **kw}


async def token(store: SqlStore, org_id: int, value: str, **kw: Any) -> None:
    await store.insert(
        "agent_registration_tokens",
        org_id,
        {"name": "t", "token_hash": value, "prefix": value[:8], **kw},
    )


async def test_registration_tokens_are_single_use_and_expire(store: SqlStore) -> None:
    org = (await store.create_organization("a"))["id"]
    now = time.time()
    await token(store, org, "h1", expires_at=now + 60)
    await token(store, org, "h2", expires_at=now - 1)
    await token(store, org, "h3", location="EU-PL")
    fields = {"name": "n", "credential_hash": "c1", "version": "v"}
    # Concurrent uses of one token: exactly one agent.
    got = await asyncio.gather(
        *(store.register_agent("h1", {**fields, "credential_hash": f"c{i}"}, now) for i in range(4))
    )
    made = [a for a in got if a is not None]
    assert len(made) == 1 and made[0]["kind"] == "private" and made[0]["organization_id"] == org
    assert await store.register_agent("h2", {**fields, "credential_hash": "x"}, now) is None
    assert await store.register_agent("nope", {**fields, "credential_hash": "y"}, now) is None
    # The token's location binds: the agent cannot claim another one.
    geo = await store.register_agent(
        "h3", {**fields, "credential_hash": "g", "location": "US-NY"}, now
    )
    assert geo is not None and geo["kind"] == "geo" and geo["location"] == "EU-PL"
    assert [g["code"] for g in await store.list_geo_locations()] == ["EU-PL"]
    found = await store.agent_by_credential("g")
    assert found is not None and found["id"] == geo["id"]
    await store.update("agents", [org], geo["id"], {"revoked_at": now})
    assert await store.agent_by_credential("g") is None


async def test_batches_are_stored_exactly_once(store: SqlStore) -> None:
    org = (await store.create_organization("a"))["id"]
    other = (await store.create_organization("b"))["id"]
    await token(store, org, "h")
    agent = await store.register_agent("h", {"name": "n", "credential_hash": "c"}, time.time())
    assert agent is not None
    mine = await store.create_check(org, check_fields("c", assigned_agent_ids=[agent["id"]]))
    unassigned = await store.create_check(org, check_fields("u"))
    theirs = await store.create_check(
        other, check_fields("c", assigned_agent_ids=[agent["id"]], geo_monitoring_enabled=True)
    )

    def batch(n: int, t0: float, extra: int | None = None) -> list[tuple[Any, ...]]:
        rows = [[mine["id"], "UP", t0 + i, 1.5, *[None] * 9] for i in range(n)]
        if extra is not None:
            rows.append([extra, "UP", t0, 1.0, *[None] * 9])
        return wire.Batch(1, f"agent:{agent['id']}", rows).store_rows(org)

    # The same batch sent concurrently (a retry racing the original) is stored once.
    first = await asyncio.gather(
        *(store.accept_agent_batch(org, agent["id"], 1, batch(3, T0)) for _ in range(3))
    )
    assert sorted(first) == [False, False, True]
    assert not await store.accept_agent_batch(org, agent["id"], 1, batch(3, T0))
    # A batch naming a check the agent does not run (another organisation's, even one
    # that lists the agent's id, or one of its own organisation not assigned to it) is
    # refused whole: nothing stored, the sequence number not used up.
    for extra in (theirs["id"], unassigned["id"], 10**9):
        with pytest.raises(NotFoundError) as err:
            await store.accept_agent_batch(org, agent["id"], 2, batch(2, T0 + 50, extra))
        assert err.value.field == "results"
    assert len(await store.source_results([org], mine["id"], 0.0)) == 3
    assert await store.source_results([other], theirs["id"], 0.0) == []
    assert await store.source_results([org], unassigned["id"], 0.0) == []
    assert (await store.get("agents", [org], agent["id"]) or {})["last_batch_seq"] == 1
    assert await store.accept_agent_batch(org, agent["id"], 2, batch(2, T0 + 100))
    rows = await store.source_results([org], mine["id"], 0.0)
    assert [r["started_at"] - T0 for r in rows] == [0.0, 1.0, 2.0, 100.0, 101.0]
    assert {r["source"] for r in rows} == {f"agent:{agent['id']}"}
    assert await store.check_sources([org], mine["id"]) == {f"agent:{agent['id']}": "UP"}
    # A revoked agent's batches are refused.
    await store.update("agents", [org], agent["id"], {"revoked_at": time.time()})
    assert not await store.accept_agent_batch(org, agent["id"], 3, batch(1, T0 + 200))


async def test_assignments_version_and_offline_sweep(store: SqlStore) -> None:
    org = (await store.create_organization("a"))["id"]
    now = time.time()
    for h in ("h1", "h2"):
        await token(store, org, h, location="US" if h == "h2" else None)
    a = await store.register_agent("h1", {"name": "a", "credential_hash": "c1"}, now - 100)
    g = await store.register_agent("h2", {"name": "g", "credential_hash": "c2"}, now)
    assert a is not None and g is not None
    v0 = await store.assignment_version(org)
    c1 = await store.create_check(org, check_fields("one", assigned_agent_ids=[a["id"]]))
    await store.create_check(org, check_fields("geo", geo_monitoring_enabled=True))
    await store.create_check(org, check_fields("central"))
    await store.create_check(
        org, check_fields("paused", assigned_agent_ids=[a["id"]], is_active=False)
    )
    v1 = await store.assignment_version(org)
    assert v1 != v0 and await store.assignment_version(org) == v1
    assert [c["name"] for c in await store.agent_checks(org, a["id"], False)] == ["one"]
    assert [c["name"] for c in await store.agent_checks(org, g["id"], True)] == ["geo"]
    await store.update_check([org], c1["id"], {"assigned_agent_ids": []})
    assert await store.assignment_version(org) != v1
    assert await store.agent_checks(org, a["id"], False) == []
    gone = await store.mark_agents_offline(now - 50)
    assert [r["id"] for r in gone] == [a["id"]]
    assert await store.mark_agents_offline(now - 50) == []
