"""The result writer between the engine and the store: engine output (results,
transitions, rollups) reaches the store's tiers; while the database is away results
wait in a bounded buffer whose overflow drops only the oldest raw results."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pgcluster import PgCluster
from tocsin import Check, Engine
from tocsin.encryption import SecretBox
from tocsin.ingest import ResultWriter
from tocsin.models import Result, Rollup, Status, StatusChange
from tocsin.store.postgres import PostgresStore
from tocsin.store.sqlite import SqliteStore

NOW = 1_790_000_000.0


async def test_engine_results_transitions_and_rollups_reach_every_tier(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db", SecretBox.generate())
    await store.open()
    try:
        org = (await store.create_organization("o"))["id"]
        ids = [
            (
                await store.create_check(
                    org, {"name": f"c{i}", "type": "noop", "interval": 1, "timeout": 1}
                )
            )["id"]
            for i in range(3)
        ]
        writer = ResultWriter(store, flush_interval=0.05)
        async with Engine(rollup_span=0.5) as engine:
            engine.add_listener(writer.on_batch)
            engine.add_rollup_listener(writer.on_rollups)
            writer.start()
            engine.upsert([Check(id=i, type="noop", interval=1) for i in ids])
            await asyncio.sleep(3.5)
        await writer.close()
        assert writer.dropped == 0 and writer.pending == 0
        for check_id in ids:
            results = await store.list_results([org], check_id, limit=100, before=None)
            assert len(results) >= 3
            async with store._read() as c:
                changes = await c.fetch(
                    "SELECT current FROM status_changes WHERE check_id = ? ORDER BY id", check_id
                )
            # Stopping the engine is not a verdict: no PAUSED transition is recorded.
            assert [ch["current"] for ch in changes] == ["UP"]
            row = await store.get_check([org], check_id)
            assert row is not None and row["status"] == "UP"
            for tier in ("minute", "hour", "day"):
                buckets = await store.list_rollups([org], check_id, tier, since_ms=0)
                assert buckets, tier
                # Runs in the closed buckets never exceed the results stored.
                assert 1 <= sum(b.runs_up for b in buckets) <= len(results), tier
    finally:
        await store.close()


async def test_results_wait_while_the_database_is_away_and_overflow_drops_the_oldest(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    store = PostgresStore(pg_url, SecretBox.generate(), connect_timeout=1.0)
    await store.open()
    org = (await store.create_organization("o"))["id"]
    check = (
        await store.create_check(org, {"name": "c", "type": "noop", "interval": 1, "timeout": 1})
    )["id"]
    writer = ResultWriter(store, flush_interval=0.05, batch_size=100, max_buffered=1_000)
    writer.start()
    try:
        pg_cluster.stop()
        try:
            for k in range(15):
                writer.on_batch(
                    [Result(check, Status.UP, NOW + k * 100 + i, 1.0) for i in range(100)],
                    [StatusChange(check, Status.UNKNOWN, Status.UP, NOW + k)],
                )
                writer.on_rollups([Rollup(check, k * 60_000, 60_000, 1, 0, 0, 0, 0, 0, b"\0" * 4)])
                await asyncio.sleep(0.05)
            assert writer.dropped == 500
            assert writer.stats()["buffered_results"] == 1_000
            assert writer.stats()["outage_seconds"] is not None
        finally:
            pg_cluster.start()
        await writer.close(give_up_after=30)
        kept = await store.list_results([org], check, limit=2_000, before=None)
        # The newest 1,000 survive, in order; every transition and rollup is kept.
        assert sorted(r["started_at"] for r in kept) == [NOW + t for t in range(500, 1_500)]
        async with store._read() as c:
            assert await c.fetchval("SELECT COUNT(*) FROM status_changes") == 15
        minutes = await store.list_rollups([org], check, "minute", since_ms=0)
        assert [m.start_ms for m in minutes] == [k * 60_000 for k in range(15)]
    finally:
        await store.close()
