"""Notification burst: 10,000 incidents across 1,000 checks, each check with its own signed
webhook channel, delivered through the real outbox while the engine keeps probing.

    python bench/notify.py [--checks 1000] [--incidents 10000] [--interval 1] [--json]

What runs, in this process, as in `tocsin serve`: a SQLite store (a file in a temporary
directory), the engine probing every check (`noop` probes at --interval), the incident
manager fed through its engine-listener entry point (`on_batch`) with every transition
queued at once, and the outbox worker (aiohttp) delivering. Each check goes DOWN and
back UP incidents/checks times in a row, so there are --incidents incidents, each with
two transitions (opened, resolved): 2 x --incidents deliveries. The receiver runs in a
separate process (as a real receiver would), verifies every HMAC signature and counts
each delivery id.

Reported: deliveries per second and the time from queueing the transitions until the
receiver got the last one (and until the store marked it delivered); lost (expected
minus distinct received) and duplicated deliveries; the engine's missed runs and
dispatch lateness p99 during the burst. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import multiprocessing
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from common import cpu_seconds, emit_json, expected_runs, percentile
from tocsin import Check, Engine, Result
from tocsin.encryption import SecretBox
from tocsin.events import EventHub
from tocsin.incidents import IncidentManager
from tocsin.models import Status, StatusChange
from tocsin.notify.router import Router
from tocsin.notify.worker import Outbox, Settings
from tocsin.store.sqlite import SqliteStore

SECRET = "bench-secret"  # noqa: S105  signs webhooks to the local receiver only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _receiver(port: int, ready: Any) -> None:
    """The receiving service, in its own process: checks signatures, counts ids."""
    seen: dict[str, int] = {}
    stats = {"bad": 0, "first": 0.0, "last": 0.0}

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Tocsin-Timestamp", "")
        mac = hmac.new(SECRET.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Tocsin-Signature", ""), "sha256=" + mac):
            stats["bad"] += 1
            return web.Response(status=401)
        key = request.headers["X-Tocsin-Delivery"]
        seen[key] = seen.get(key, 0) + 1
        now = time.time()
        stats["first"] = stats["first"] or now
        stats["last"] = now
        return web.Response(text="ok")

    async def report(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "distinct": len(seen),
                "received": sum(seen.values()),
                "bad_signatures": stats["bad"],
                "first": stats["first"],
                "last": stats["last"],
            }
        )

    app = web.Application()
    app.router.add_post("/hook/{n}", hook)
    app.router.add_get("/stats", report)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def run(checks: int, incidents: int, interval: float, give_up_s: float) -> dict[str, Any]:
    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_receiver, args=(port, ready), daemon=True)
    proc.start()
    if not ready.wait(30):
        raise RuntimeError("the receiver did not start")
    tmp = tempfile.TemporaryDirectory()
    store = SqliteStore(Path(tmp.name) / "bench.db", SecretBox.generate())
    await store.open()
    try:
        org = int((await store.create_organization("bench"))["id"])
        ids = []
        for n in range(checks):
            row = await store.create_check(
                org, {"name": f"svc-{n}", "type": "noop", "interval": 60, "timeout": 1}
            )
            ch = await store.insert(
                "notification_channels",
                org,
                {
                    "name": f"hook-{n}",
                    "channel_type": "webhook",
                    "config": {"url": f"http://127.0.0.1:{port}/hook/{n}", "secret": SECRET},
                },
            )
            await store.link("check_channels", org, row["id"], ch["id"])
            ids.append(int(row["id"]))

        runs: list[tuple[int, int, int]] = []

        def on_results(results: Sequence[Result], _changes: Sequence[Any]) -> None:
            for r in results:
                if r.due_at is not None:
                    runs.append((r.check_id, round(r.due_at * 1000), round(r.started_at * 1e6)))

        async with Engine() as engine:
            engine.add_listener(on_results)
            engine.upsert(
                [
                    Check(id=i, type="noop", interval=interval, timeout=1, name=f"svc-{i}")
                    for i in ids
                ]
            )
            manager = IncidentManager(store, engine, EventHub())
            router = Router(store, engine)
            manager.router = router
            outbox = Outbox(store, router, Settings())
            await manager.directory.learn(ids)
            manager.start()
            outbox.start()
            await asyncio.sleep(max(2 * interval, 1.0))  # the engine settles (first runs)

            rounds = max(1, incidents // checks)
            changes: list[StatusChange] = []
            for _ in range(rounds):
                at = time.time()
                down = {"central": Status.DOWN}
                up = {"central": Status.UP}
                changes += [
                    StatusChange(i, Status.UP, Status.DOWN, at, "bench outage", down) for i in ids
                ]
                changes += [StatusChange(i, Status.DOWN, Status.UP, at, None, up) for i in ids]
            expected = 2 * rounds * len(ids)
            cpu0 = cpu_seconds()
            main0 = time.thread_time()
            t0 = time.time()
            start_ms = int(t0 * 1000) + 1
            # As the engine hands transitions over: one batch, all at once.
            manager.on_batch([], changes)

            async with aiohttp.ClientSession() as http:

                async def stats() -> dict[str, Any]:
                    async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
                        return dict(await resp.json())

                incidents_done_at = None
                delivered_at = None
                deadline = time.monotonic() + give_up_s
                while time.monotonic() < deadline:
                    if incidents_done_at is None and manager.pending == 0:
                        incidents_done_at = time.time()
                    done = await store.count(
                        "notification_deliveries", [org], where={"status": "delivered"}
                    )
                    if done >= expected:
                        delivered_at = time.time()
                        break
                    await asyncio.sleep(0.25)
                end_ms = int(time.time() * 1000)
                await asyncio.sleep(1.0)  # anything sent twice would arrive now
                got = await stats()
            cpu = cpu_seconds() - cpu0
            main_cpu = time.thread_time() - main0
            await outbox.close()
            await manager.close()
        incidents_total = await store.count("incidents", [org])
        statuses = {
            s: await store.count("notification_deliveries", [org], where={"status": s})
            for s in ("pending", "sending", "delivered", "failed")
        }
    finally:
        await store.close()
        proc.kill()
        proc.join()
        tmp.cleanup()

    lo, hi = start_ms, end_ms
    interval_ms = round(interval * 1000)
    seen = {(c, d) for c, d, _ in runs if lo < d <= hi}
    lateness = sorted((s - d * 1000) / 1000 for c, d, s in runs if lo < d <= hi)
    last_received = got["last"] - t0 if got["last"] else None
    return {
        "checks": len(ids),
        "incidents": incidents_total,
        "deliveries_expected": expected,
        "delivered_in_store": statuses["delivered"],
        "other_statuses": {k: v for k, v in statuses.items() if k != "delivered"},
        "received_distinct": got["distinct"],
        "received_total": got["received"],
        "lost": expected - got["distinct"],
        "duplicated": got["received"] - got["distinct"],
        "bad_signatures": got["bad_signatures"],
        "incidents_written_s": None
        if incidents_done_at is None
        else round(incidents_done_at - t0, 3),
        "last_received_s": None if last_received is None else round(last_received, 3),
        "all_marked_delivered_s": None if delivered_at is None else round(delivered_at - t0, 3),
        "deliveries_per_s": round(got["distinct"] / last_received, 1) if last_received else None,
        "engine_interval_s": interval,
        "engine_expected_runs": expected_runs(ids, interval_ms, lo, hi),
        "engine_missed_runs": expected_runs(ids, interval_ms, lo, hi) - len(seen),
        "engine_lateness_p99_ms": round(percentile(lateness, 0.99), 3),
        "engine_lateness_max_ms": round(lateness[-1], 3) if lateness else None,
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_event_loop_thread": round(main_cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checks", type=int, default=1000)
    p.add_argument("--incidents", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=1.0, help="engine probe interval (s)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after (s)")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner, loop_name = asyncio.run, "asyncio"
    r = runner(run(args.checks, args.incidents, args.interval, args.timeout))
    print(
        f"notify burst: {r['checks']} checks with a webhook channel each, {r['incidents']}"
        f" incidents ({r['deliveries_expected']} deliveries: opened + resolved), SQLite,"
        f" {loop_name}, {platform.machine()}"
    )
    for key, value in r.items():
        print(f"  {key:28} {value}")
    if args.json:
        emit_json({"bench": "notify", "loop": loop_name, **r})
    ok = r["lost"] == 0 and r["duplicated"] == 0 and r["bad_signatures"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
