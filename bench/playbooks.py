"""Playbook burst: 10,000 incidents opening across 1,000 checks, each check with its own
two-step playbook (add a note, notify a channel), run to the end and delivered through
the real outbox.

    python bench/playbooks.py [--checks 1000] [--incidents 10000] [--json]

What runs, in this process, as in `tocsin serve`: a SQLite store (a file in a temporary
directory), the engine (the checks are registered, not probed: `noop` at a long
interval), the incident manager fed through its engine-listener entry point (`on_batch`)
with every transition queued at once, the playbook runner hearing of each opened
incident (`IncidentManager.on_change`, as `Services.build` wires it; also the router's
takeover hook), and the outbox worker (aiohttp) delivering. Check n has the tag `svc-n`
and playbook n (trigger `check_tag` on `svc-n`) adds a note and notifies webhook channel
n, which is not one of the check's own channels: the only deliveries are the playbooks'.
Each check goes DOWN and back UP incidents/checks times in a row, so there are
--incidents incidents and as many runs, notes and deliveries. The receiver runs in a
separate process (bench/notify.py's: it verifies every HMAC signature and counts each
delivery id).

Reported: the time from queueing the transitions until every run was recorded (run row
and timeline event) and until the receiver got the last delivery; runs, notes and
timeline events in the store; lost (expected minus distinct received) and duplicated
deliveries, duplicated runs. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from common import cpu_seconds, emit_json
from notify import SECRET, _free_port, _receiver
from tocsin import Check, Engine
from tocsin.encryption import SecretBox
from tocsin.events import EventHub
from tocsin.incidents import IncidentManager
from tocsin.models import Status, StatusChange
from tocsin.notify.router import Router
from tocsin.notify.worker import Outbox, Settings
from tocsin.store.sqlite import SqliteStore
from tocsin.workflow.playbooks import PlaybookRunner


async def _count_all(store: SqliteStore, kind: str, org: int, **where: Any) -> int:
    return await store.count(kind, [org], where=where or None)


async def run(checks: int, incidents: int, give_up_s: float) -> dict[str, Any]:
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
                org,
                {
                    "name": f"svc-{n}",
                    "type": "noop",
                    "interval": 3600,
                    "timeout": 1,
                    "tags": [f"svc-{n}"],
                },
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
            await store.insert(
                "playbooks",
                org,
                {
                    "name": f"playbook {n}",
                    "trigger_type": "check_tag",
                    "trigger_conditions": {"tags": [f"svc-{n}"], "match": "any"},
                    "steps": [
                        {"type": "add_note", "body": f"runbook of svc-{n}"},
                        {"type": "notify_channel", "channel_id": ch["id"]},
                    ],
                },
            )
            ids.append(int(row["id"]))

        async with Engine() as engine:
            engine.upsert(
                [Check(id=i, type="noop", interval=3600, timeout=1, name=f"svc-{i}") for i in ids]
            )
            events = EventHub()
            router = Router(store, engine)
            manager = IncidentManager(store, engine, events, router)
            outbox = Outbox(store, router, Settings())
            runner = PlaybookRunner(store, engine, events, router)
            manager.on_change.append(runner.watch)
            router.takeovers.append(runner.takeover)
            await manager.directory.learn(ids)
            manager.start()
            await runner.start()
            outbox.start()

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
            expected = rounds * len(ids)
            cpu0 = cpu_seconds()
            t0 = time.time()
            manager.on_batch([], changes)

            async with aiohttp.ClientSession() as http:

                async def stats() -> dict[str, Any]:
                    async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
                        return dict(await resp.json())

                incidents_done_at = runs_done_at = delivered_at = None
                deadline = time.monotonic() + give_up_s
                while time.monotonic() < deadline:
                    now = time.time()
                    if incidents_done_at is None and manager.pending == 0:
                        incidents_done_at = now
                    if runs_done_at is None and runner.runs_finished >= expected:
                        runs_done_at = now
                    if delivered_at is None:
                        got = await stats()
                        if got["distinct"] >= expected:
                            delivered_at = time.time()
                    if runs_done_at is not None and delivered_at is not None:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)  # anything run or sent twice would land now
                got = await stats()
            cpu = cpu_seconds() - cpu0
            await outbox.close()
            await runner.close()
            await manager.close()
        counts = {
            "incidents": await _count_all(store, "incidents", org),
            "runs": await _count_all(store, "playbook_runs", org),
            "runs_completed": await _count_all(store, "playbook_runs", org, status="completed"),
            "notes": await _count_all(store, "incident_notes", org),
            "deliveries_delivered": await _count_all(
                store, "notification_deliveries", org, status="delivered"
            ),
        }
        timeline_runs = 0
        async with store._read() as c:  # a count the generic store has no filter for
            timeline_runs = int(
                await c.fetchval("SELECT COUNT(*) FROM incident_events WHERE kind = 'playbook_run'")
            )
    finally:
        await store.close()
        proc.kill()
        proc.join()
        tmp.cleanup()

    def since(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    last_received = got["last"] - t0 if got["last"] else None
    return {
        "checks": len(ids),
        "playbooks": len(ids),
        "incidents": counts["incidents"],
        "runs_expected": expected,
        "runs_recorded": counts["runs"],
        "runs_completed": counts["runs_completed"],
        "timeline_run_events": timeline_runs,
        "notes": counts["notes"],
        "deliveries_delivered_in_store": counts["deliveries_delivered"],
        "received_distinct": got["distinct"],
        "received_total": got["received"],
        "lost": expected - got["distinct"],
        "duplicated": got["received"] - got["distinct"],
        "duplicated_runs": max(0, counts["runs"] - expected),
        "bad_signatures": got["bad_signatures"],
        "incidents_written_s": since(incidents_done_at),
        "all_runs_recorded_s": since(runs_done_at),
        "last_received_s": None if last_received is None else round(last_received, 3),
        "all_done_s": None
        if runs_done_at is None or delivered_at is None
        else round(max(runs_done_at, delivered_at) - t0, 3),
        "runs_per_s": round(expected / (runs_done_at - t0), 1) if runs_done_at else None,
        "cpu_seconds": round(cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checks", type=int, default=1000)
    p.add_argument("--incidents", type=int, default=10_000)
    p.add_argument("--quick", action="store_true", help="100 checks, 1,000 incidents")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args(argv)
    if args.quick:
        args.checks, args.incidents = 100, 1000
    try:
        import uvloop

        loop_runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        loop_runner, loop_name = asyncio.run, "asyncio"
    r = loop_runner(run(args.checks, args.incidents, args.timeout))
    print(
        f"playbook burst: {r['checks']} checks, one two-step playbook each (note + webhook"
        f" channel), {r['incidents']} incidents, SQLite, {loop_name}, {platform.machine()}"
    )
    for key, value in r.items():
        print(f"  {key:30} {value}")
    if args.json:
        emit_json({"bench": "playbooks", "loop": loop_name, **r})
    ok = (
        r["lost"] == 0
        and r["duplicated"] == 0
        and r["duplicated_runs"] == 0
        and r["runs_recorded"] == r["runs_expected"]
        and r["bad_signatures"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
