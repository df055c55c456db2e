"""Nothing accepted is lost: a writer killed in the middle of a batch loses at most that
batch and leaves the database consistent; a PostgreSQL outage while probes run loses no
result; a clean shutdown writes everything."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from helpers import Server, Target, wait_for
from pgcluster import PgCluster
from tocsin.encryption import SecretBox
from tocsin.store.postgres import PostgresStore
from tocsin.store.sql import SqlStore
from tocsin.store.sqlite import SqliteStore

BATCH = 2_000

WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from tocsin.encryption import SecretBox
    from tocsin.models import Result, Status
    from tocsin.store import open_store

    async def main(database, data_dir):
        store = open_store(database, __import__("pathlib").Path(data_dir), SecretBox.generate())
        await store.open()
        org = await store.create_organization("o")
        check = (await store.create_check(org["id"], {
            "name": "c", "type": "uptime", "url": "http://127.0.0.1/",
            "interval": 60, "timeout": 5}))["id"]
        print("check", check, flush=True)
        t = time.time()
        for k in range(1_000_000):
            batch = [Result(check, Status.UP, t + k + i / BATCH_SIZE, 1.0, message=f"b{k}")
                     for i in range(BATCH_SIZE)]
            await store.write_batch(batch, [])
            print("committed", k, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
).replace("BATCH_SIZE", str(BATCH))


async def open_backend(backend: str, database: str) -> SqlStore:
    if backend == "sqlite":
        s: SqlStore = SqliteStore(Path(database.removeprefix("sqlite:///")), SecretBox.generate())
    else:
        s = PostgresStore(database, SecretBox.generate())
    await s.open()
    return s


def run_and_kill(database: str, data_dir: Path) -> tuple[int, int]:
    """Run the writer, let a few batches land, then SIGKILL it while the next is in
    flight. Returns (check id, last batch it reported committed)."""
    committed = -1
    check_id = -1
    deadline = time.monotonic() + 60
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, database, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while committed < 5 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            word, value = line.split()
            if word == "check":
                check_id = int(value)
            else:
                committed = int(value)
        time.sleep(0.013)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # Lines printed before the kill landed are committed too.
        for line in proc.stdout.read().splitlines():
            committed = max(committed, int(line.split()[1]))
        assert committed >= 5 and check_id > 0, proc.stderr.read()
    return check_id, committed


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_writer_killed_mid_batch_loses_at_most_that_batch(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        database = f"sqlite:///{tmp_path}/crash.db"
    else:
        database = request.getfixturevalue("pg_url")
    check_id, committed = await asyncio.to_thread(run_and_kill, database, tmp_path)

    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "crash.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = await open_backend(backend, database)
    try:
        per_batch: Counter[str] = Counter()
        before = None
        while True:
            page = await store.list_results([1], check_id, limit=500, before=before)
            per_batch.update(r["message"] for r in page)
            if len(page) < 500:
                break
            before = page[-1]["id"]
        batches = sorted(int(m[1:]) for m in per_batch)
        # Every committed batch is whole; at most the one in flight (committed just before
        # the kill, unreported) follows; none is partial.
        assert batches[: committed + 1] == list(range(committed + 1))
        assert len(batches) - (committed + 1) in (0, 1)
        assert set(per_batch.values()) == {BATCH}
        # The check's latest result agrees with the results stored.
        check = await store.get_check([1], check_id)
        assert check is not None
        newest = (await store.list_results([1], check_id, limit=1, before=None))[0]
        assert check["last_checked_at"] == newest["started_at"]
    finally:
        await store.close()


async def test_results_wait_out_a_postgresql_outage_and_none_is_lost(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str, target: Target
) -> None:
    server = Server(tmp_path / "data")
    server.start("--database", pg_url)
    try:
        async with aiohttp.ClientSession() as http:
            ids = []
            for i in range(3):
                async with http.post(
                    server.base + "/api/checks/",
                    headers=server.headers,
                    json={"name": f"c{i}", "url": target.url, "interval": 1, "timeout": 2},
                ) as resp:
                    assert resp.status == 200
                    ids.append((await resp.json())["id"])

            async def results_flowing() -> bool:
                async with http.get(
                    f"{server.base}/api/checks/{ids[0]}/logs?limit=3", headers=server.headers
                ) as resp:
                    return resp.status == 200 and len(await resp.json()) >= 3

            await wait_for(results_flowing, timeout=20)
            pg_cluster.stop()
            outage_start = time.time()
            try:
                # The server keeps probing; its API answers 503 meanwhile, not a trace.
                await asyncio.sleep(5)
                async with http.get(
                    f"{server.base}/api/checks/{ids[0]}", headers=server.headers
                ) as resp:
                    assert resp.status == 503, await resp.text()
                    assert "detail" in await resp.json()
                await asyncio.sleep(25)
            finally:
                pg_cluster.start()
            outage_end = time.time()
            await asyncio.sleep(8)  # the writer backs off at most 5 s between tries
        assert server.stop() == 0
    finally:
        server.kill()

    conn = await asyncpg.connect(pg_url)
    try:
        for check_id in ids:
            rows = await conn.fetch(
                "SELECT due_at FROM results WHERE check_id = $1 ORDER BY due_at", check_id
            )
            due = [r["due_at"] for r in rows]
            # The schedule is drift-free (due = phase + k s): every second from the first
            # result to the last is there exactly once, across the outage.
            steps = Counter(round(b - a, 3) for a, b in itertools.pairwise(due))
            assert set(steps) == {1.0}, steps
            assert due[0] < outage_start - 1 and due[-1] > outage_end + 1
        log = (tmp_path / "serve.log").read_text()
        assert "database unavailable, buffering results" in log
        assert "database back after" in log
        assert "Traceback" not in log
        assert "dropped the oldest" not in log
    finally:
        await conn.close()
