"""Agents feeding one server: result rows accepted and stored per second, and the time
from a probe's end on an agent to the check's verdict changing on the server.

    python bench/agents.py [--agents 8] [--duration 10] [--batch 5000]
                           [--backend sqlite|postgres] [--json]

Setup: a temporary data directory and `tocsin serve` on loopback (rate limits off,
heartbeats every second); with `--backend postgres` a throwaway cluster (tests/
pgcluster.py: fsync, synchronous_commit and full_page_writes off) holds the database.
`--agents` agents register with one-time tokens made through the API, and `--checks`
checks (60 s interval, 4,000 by default) are assigned to them round-robin (written
straight into the store with the server stopped, then it starts again). A batch's rows
cycle through its agent's checks, so each batch updates that many latest-result rows.

Throughput: each agent sends signed msgpack batches of `--batch` result rows with
increasing sequence numbers, one after another (the next once the last is
acknowledged: acknowledged = committed), for `--duration` seconds; the batches are
encoded before the clock starts, so the figure is the server's (the senders share the
machine's CPUs with it). Rows/s = acknowledged rows / elapsed. Afterwards the stored
rows are counted in the database and must equal the acknowledged ones.

Latency: two real `tocsin agent` processes run one 1 s check each against a local HTTP
target that flips between 200 and 500 every 3 s. The server's `status.change` events
(SSE, `?types=status.change`) are read; latency = arrival of the event - the
transition's `at` (the probe's end on the agent, same machine clock). Measured once on
a quiet server (`--quiet` s), while the throughput load runs (saturated: every sender
always has a batch in flight), and under a steady load of `--steady-rate` rows/s for
`--steady` s (20,000 and 20 by default). With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import emit_json, machine, percentile
from tocsin.agent import wire
from tocsin.security import hash_token
from tocsin.store import open_store

TARGET_ROWS = 50_000
TARGET_P99 = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flipper:
    """An HTTP target that answers 200, then 500, alternating every `period` s."""

    def __init__(self, period: float = 3.0) -> None:
        self.port = free_port()
        self.period = period
        self.t0 = time.monotonic()
        self._runner: web.AppRunner | None = None

    async def _root(self, request: web.Request) -> web.Response:
        up = int((time.monotonic() - self.t0) / self.period) % 2 == 0
        return web.Response(status=200 if up else 500, text="x")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._root)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def database(backend: str) -> AsyncIterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    from pgcluster import PgCluster, new_base_dir

    base = new_base_dir()
    try:
        cluster = PgCluster(base)
        cluster.start()
        try:
            yield cluster.create_database("agents_bench")
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Serve:
    def __init__(self, data_dir: Path, database: str | None) -> None:
        self.data_dir, self.database = data_dir, database
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        env = {
            **os.environ,
            "TOCSIN_RATE_LIMIT_PER_TOKEN": "0",
            "TOCSIN_RATE_LIMIT_PER_ADDRESS": "0",
            "TOCSIN_AGENT_HEARTBEAT_INTERVAL": "1",
        }
        cmd = [sys.executable, "-m", "tocsin.cli", "--log-level", "WARNING", "serve"]
        cmd += ["--data-dir", str(self.data_dir), "--port", str(self.port)]
        if self.database:
            cmd += ["--database", self.database]
        log = open(self.data_dir.parent / "serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tocsin serve did not start") from None
                time.sleep(0.05)
        creds = (self.data_dir / "initial-credentials").read_text()
        self.token = dict(line.split("=", 1) for line in creds.split())["token"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
            self.proc = None


async def call(http: aiohttp.ClientSession, srv: Serve, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {srv.token}"}
    async with http.request(method, srv.base + path, headers=headers, **kw) as resp:
        body = await resp.json(content_type=None)
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {body}")
        return body


async def register(http: aiohttp.ClientSession, srv: Serve, name: str) -> dict[str, Any]:
    token = (await call(http, srv, "POST", "/api/organizations/1/agent-tokens", json={}))["token"]
    async with http.post(
        f"{srv.base}/api/agents/register", json={"token": token, "name": name}
    ) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 201, answer
        return answer


def spawn_agent(srv: Serve, token: str, adir: Path) -> subprocess.Popen[bytes]:
    log = open(adir.parent / f"{adir.name}.log", "ab")  # noqa: SIM115
    cmd = [sys.executable, "-m", "tocsin.cli", "--log-level", "WARNING", "agent"]
    cmd += ["--server", srv.base, "--token", token, "--data-dir", str(adir)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def agent_id(adir: Path) -> int:
    """The agent's id once it has registered."""
    path = adir / "agent.json"
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{adir.name} did not register")
        time.sleep(0.05)
    return int(json.loads(path.read_text())["agent_id"])


async def store_checks(data_dir: Path, db: str | None, agent_ids: list[int], n: int) -> list[int]:
    store = open_store(db, data_dir)
    await store.open(migrate=False)
    try:
        ids = []
        for i in range(n):
            fields = {
                "name": f"c{i}",
                "type": "uptime",
                "url": "http://127.0.0.1:9/",
                "interval": 60,
                "timeout": 5,
                "assigned_agent_ids": [agent_ids[i % len(agent_ids)]],
            }
            ids.append(int((await store.create_check(1, fields))["id"]))
        return ids
    finally:
        await store.close()


async def sender(
    http: aiohttp.ClientSession,
    srv: Serve,
    cred: str,
    bodies: Iterator[bytes],
    stop_at: float,
    every: float = 0.0,
) -> int:
    """Send batches one after another (the next once the last is acknowledged), or one
    every `every` seconds, until `stop_at`; returns the rows acknowledged."""
    key = wire.signing_key(hash_token(cred))
    headers = {"Authorization": f"Bearer {cred}", "Content-Type": wire.MSGPACK}
    acked = 0
    next_at = time.monotonic()
    for body in bodies:
        if time.monotonic() >= stop_at:
            break
        sig = {wire.SIGNATURE_HEADER: wire.sign(key, body)}
        async with http.post(
            f"{srv.base}/api/agents/results", data=body, headers={**headers, **sig}
        ) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"batch refused: {resp.status} {answer}")
            acked += answer["accepted"]
        if every:
            next_at += every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return acked


async def watch_changes(
    http: aiohttp.ClientSession, srv: Serve, ids: set[int], out: list[float]
) -> None:
    """Collect latencies; a stream the server drops (a subscriber that falls behind the
    flood of `log.append` events is cut off) is opened again at once."""
    headers = {"Authorization": f"Bearer {srv.token}"}
    timeout = aiohttp.ClientTimeout(total=None)
    url = f"{srv.base}/api/events?types=status.change"
    while True:
        async with http.get(url, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"/api/events: {resp.status} {await resp.text()}")
            event = ""
            while True:
                raw = await resp.content.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\n")
                arrived = time.time()
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "status.change":
                    data = json.loads(line[6:])
                    if data["check_id"] in ids and data["current"] in ("UP", "DOWN"):
                        at = dt.datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
                        out.append(arrived - at.timestamp())


async def run(args: argparse.Namespace, data_dir: Path, db: str | None) -> dict[str, Any]:
    srv = Serve(data_dir, db)
    srv.start()
    flipper = Flipper()
    await flipper.start()
    agents: list[subprocess.Popen[bytes]] = []
    try:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            regs = [await register(http, srv, f"bench-{i}") for i in range(args.agents)]
            # Many checks: straight into the store with the server stopped (the API
            # would take minutes), then the server starts again and loads them.
            srv.stop()
            check_ids = await store_checks(data_dir, db, [r["agent_id"] for r in regs], args.checks)
            srv.start()
            # Latency agents: real processes, one flipping check each.
            lat_ids = set()
            for i in range(2):
                token = (
                    await call(http, srv, "POST", "/api/organizations/1/agent-tokens", json={})
                )["token"]
                adir = data_dir.parent / f"agent-{i}"
                agents.append(spawn_agent(srv, token, adir))
                aid = await asyncio.to_thread(agent_id, adir)
                body = {
                    "name": f"flip{i}",
                    "type": "uptime",
                    "url": f"http://127.0.0.1:{flipper.port}/",
                    "interval": 1,
                    "timeout": 2,
                    "assigned_agent_ids": [aid],
                }
                lat_ids.add((await call(http, srv, "POST", "/api/checks", json=body))["id"])

            print("quiet latency phase", file=sys.stderr)
            quiet: list[float] = []
            watcher = asyncio.create_task(watch_changes(http, srv, lat_ids, quiet))
            await asyncio.sleep(args.quiet)
            if watcher.done():
                print(f"event watcher failed: {watcher.exception()!r}", file=sys.stderr)
            watcher.cancel()

            print("encoding batches", file=sys.stderr)
            # Throughput: pre-encoded batches, one sender per agent.
            now = time.time()
            rows_needed = args.duration * 150_000 + args.steady * args.steady_rate
            per_agent = int(rows_needed / args.batch / args.agents) + 2
            bodies: list[list[bytes]] = []
            for a in range(len(regs)):
                mine = [c for i, c in enumerate(check_ids) if i % len(regs) == a]
                agent_bodies = []
                for seq in range(1, per_agent + 1):
                    tail = [1.25, None, None, None, 200, None, 0.1, None, 0.9, None]
                    rows = [
                        [mine[j % len(mine)], "UP", now - 30 + (seq * args.batch + j) * 1e-6, *tail]
                        for j in range(args.batch)
                    ]
                    agent_bodies.append(wire.encode(seq, rows))
                bodies.append(agent_bodies)
            print("encoded the batches; loading", file=sys.stderr)
            loaded: list[float] = []
            feeds = [iter(b) for b in bodies]
            watcher = asyncio.create_task(watch_changes(http, srv, lat_ids, loaded))
            t0 = time.monotonic()
            stop_at = t0 + args.duration
            acked = await asyncio.gather(
                *(
                    sender(http, srv, reg["credential"], feed, stop_at)
                    for reg, feed in zip(regs, feeds, strict=True)
                )
            )
            elapsed = time.monotonic() - t0
            await asyncio.sleep(3.0)
            watcher.cancel()
            print("steady load", file=sys.stderr)
            steady: list[float] = []
            watcher = asyncio.create_task(watch_changes(http, srv, lat_ids, steady))
            every = args.batch * args.agents / args.steady_rate
            stop_at = time.monotonic() + args.steady
            acked += await asyncio.gather(
                *(
                    sender(http, srv, reg["credential"], feed, stop_at, every)
                    for reg, feed in zip(regs, feeds, strict=True)
                )
            )
            await asyncio.sleep(3.0)
            watcher.cancel()
    finally:
        for p in agents:
            p.send_signal(signal.SIGTERM)
        for p in agents:
            p.wait(timeout=30)
        srv.stop()
        await flipper.stop()
    store = open_store(db, data_dir)
    await store.open(migrate=False)
    try:
        stored = 0
        for cid in check_ids:
            stored += len(await store.source_results([1], cid, 0.0))
    finally:
        await store.close()
    total = sum(acked[: len(regs)])
    quiet.sort()
    loaded.sort()
    steady.sort()
    return {
        "backend": args.backend,
        "agents": args.agents,
        "batch_rows": args.batch,
        "duration_s": round(elapsed, 2),
        "rows_acked": total,
        "rows_acked_all": sum(acked),
        "rows_stored": stored,
        "rows_per_s": round(total / elapsed),
        "latency_quiet_n": len(quiet),
        "latency_quiet_p50_s": round(percentile(quiet, 0.5), 3),
        "latency_quiet_p99_s": round(percentile(quiet, 0.99), 3),
        "latency_loaded_n": len(loaded),
        "latency_loaded_p50_s": round(percentile(loaded, 0.5), 3),
        "latency_loaded_p99_s": round(percentile(loaded, 0.99), 3),
        "steady_rows_per_s": args.steady_rate,
        "latency_steady_n": len(steady),
        "latency_steady_p50_s": round(percentile(steady, 0.5), 3),
        "latency_steady_p99_s": round(percentile(steady, 0.99), 3),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--quiet", type=float, default=20.0, help="seconds of quiet latency")
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--checks", type=int, default=4_000, help="checks shared by the agents")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--steady", type=float, default=20.0, help="seconds of steady load")
    p.add_argument("--steady-rate", type=float, default=20_000, help="rows/s of the steady load")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= 200 or not 1 <= args.batch <= wire.MAX_ROWS:
        p.error("--agents 1-200, --batch 1-50000")

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="tocsin-agents-bench-") as d:
            async with database(args.backend) as db:
                return await run(args, Path(d) / "data", db)

    r = asyncio.run(go())
    print(
        f"{r['backend']}: {r['agents']} agents, batches of {r['batch_rows']} rows:"
        f" {r['rows_per_s']:,} rows/s accepted and stored (target >= {TARGET_ROWS:,});"
        f" acked in all {r['rows_acked_all']:,}, stored {r['rows_stored']:,}"
    )
    print(
        f"probe end -> verdict change: quiet p50 {r['latency_quiet_p50_s']} s"
        f" p99 {r['latency_quiet_p99_s']} s (n={r['latency_quiet_n']});"
        f" at {r['steady_rows_per_s']:,.0f} rows/s p50 {r['latency_steady_p50_s']} s"
        f" p99 {r['latency_steady_p99_s']} s (n={r['latency_steady_n']});"
        f" saturated p50 {r['latency_loaded_p50_s']} s p99 {r['latency_loaded_p99_s']} s"
        f" (n={r['latency_loaded_n']}); target p99 <= {TARGET_P99} s"
    )
    print(r["machine"])
    if args.json:
        emit_json(r)
    return 0 if r["rows_acked_all"] == r["rows_stored"] else 1


if __name__ == "__main__":
    sys.exit(main())
