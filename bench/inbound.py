"""Inbound events and escalation: `tocsin serve` on SQLite taking alerts from 1,000
integration keys while its engine probes 10,000 TCP checks, then firing 100,000 pending
escalation steps on the timing wheel.

    python bench/inbound.py [--duration 20] [--connections 64] [--incidents 100000]
                            [--spread 60] [--json]

Setup: a temporary data directory; one start of `tocsin serve` creates the database, the
admin and its token; the admin gets a webhook contact method (a loopback sink that
answers 200) and 1,000 integration keys are created through the API; with the server
stopped, 10,000 `tcp` checks at a `--check-interval` (30 s) go straight into the store,
probing a loopback listener; then the server starts again with the API's rate limits off
and the per-key inbound limit raised (TOCSIN_INBOUND_RATE=100000).

Events: wrk (Debian's package), one thread, `--connections` keep-alive connections,
`--duration` seconds of `POST /api/events/ingest` with a Lua script: 70 % triggers on
10,000 distinct dedup keys (each dedup key bound to one of the 1,000 keys), 20 % repeats
of a trigger this connection sent, 10 % resolves of one. Each answer comes after the
event is durable (group commit). Afterwards (server stopped, writer flushed) the events
are counted in the store: stored events against 2xx answers (the difference is at most
the requests still in flight when wrk stopped), and applied-once: the sum of the inbound
incidents' `event_count` must equal the stored triggers.

Escalation: with the server stopped, `--incidents` open incidents are written straight
into the store under a one-step policy that pages the admin's webhook, their steps due
over `--spread` seconds starting 20 s after the next start; the server re-arms them all
from the store at start-up (as after any restart). Afterwards the `escalated` timeline
events are read: lateness = event time - due time (p50, p99, max), steps fired of those
due, and the server's RSS before the first step and after the last.

Targets (issue 16, 2 cores) are printed next to the figures; nothing is asserted. With
--json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp

from api import Serve, ensure_wrk, tcp_target, wrk
from common import emit_json, machine
from tocsin.encryption import SecretBox
from tocsin.store.sqlite import SqliteStore

KEYS = 1_000
DEDUP_KEYS = 10_000
CHECKS = 10_000
TARGETS = {"events_per_s": 10_000.0, "p99_ms": 50.0, "escalation_lateness_max_s": 1.0}

EVENTS_LUA = """
local keys = {{{keys}}}
local recent = {{}}
local n = 0
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
local function body(action, d)
  local key = keys[(d % #keys) + 1]
  return '{{"routing_key":"' .. key .. '","event_action":"' .. action ..
    '","dedup_key":"d' .. d .. '","payload":{{"summary":"bench alert ' .. d ..
    '","severity":"critical","source":"bench"}}}}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local r = math.random()
  local d
  local action = "trigger"
  if r < 0.7 or n == 0 then
    d = math.random(0, {dedup} - 1)
    n = n + 1
    recent[((n - 1) % 64) + 1] = d
  else
    d = recent[math.random(1, math.min(n, 64))]
    if r >= 0.9 then action = "resolve" end
  end
  return wrk.format(nil, "/api/events/ingest", nil, body(action, d))
end
"""


class Sink(BaseHTTPRequestHandler):
    """The pages' webhook: answers 200 to everything (keep-alive, as a real receiver)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def sink() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def token(data_dir: Path) -> str:
    creds = (data_dir / "initial-credentials").read_text()
    return dict(line.split("=", 1) for line in creds.split())["token"]


async def setup_api(base: str, tok: str, sink_port: int) -> tuple[list[str], int]:
    """The admin's webhook contact method, a policy paging them, 1,000 keys: (keys,
    policy id)."""
    headers = {"Authorization": f"Bearer {tok}"}
    async with aiohttp.ClientSession(base_url=base, headers=headers) as http:
        async with http.get("/api/organizations/") as r:
            org = (await r.json())[0]["id"]
        async with http.get("/api/profile") as r:
            me = await r.json()
        async with http.post(
            "/api/profile/contact-methods",
            json={"kind": "webhook", "value": f"http://127.0.0.1:{sink_port}/page"},
        ) as r:
            assert r.status == 201, await r.text()
        async with http.post(
            f"/api/organizations/{org}/escalation-policies",
            json={
                "name": "bench",
                "steps": [{"delay_minutes": 60, "targets": [{"type": "user", "id": me["id"]}]}],
            },
        ) as r:
            assert r.status == 201, await r.text()
            policy = (await r.json())["id"]
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> str:
            async with (
                sem,
                http.post(
                    f"/api/organizations/{org}/integration-keys", json={"name": f"key {i}"}
                ) as r,
            ):
                assert r.status == 201, await r.text()
                return str((await r.json())["key"])

        keys = await asyncio.gather(*(one(i) for i in range(KEYS)))
    return list(keys), int(policy)


async def store_checks(data_dir: Path, tcp_port: int, interval: int) -> None:
    store = SqliteStore(data_dir / "tocsin.db", SecretBox.from_environment(data_dir))
    await store.open()
    try:
        for i in range(CHECKS):
            await store.create_check(
                1,
                {
                    "name": f"tcp {i}",
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "port": tcp_port,
                    "interval": interval,
                    "timeout": 5,
                },
            )
    finally:
        await store.close()


async def store_incidents(
    data_dir: Path, n: int, policy: int, first_due: float, spread: float
) -> dict[int, float]:
    """`n` open inbound incidents with step 1 due over `spread` s: {id: due}."""
    store = SqliteStore(data_dir / "tocsin.db", SecretBox.from_environment(data_dir))
    await store.open()
    due_of: dict[int, float] = {}
    try:
        chunk = 2_000
        for lo in range(0, n, chunk):
            ops = []
            for i in range(lo, min(n, lo + chunk)):
                due = first_due + spread * i / n
                ops.append(
                    {
                        "org_id": 1,
                        "incident_id": None,
                        "fields": {
                            "kind": "inbound",
                            "title": f"escalation bench {i}",
                            "started_at": due,
                            "escalation_policy_id": policy,
                            "escalation_step": 0,
                            "escalation_round": 0,
                            "escalation_due_at": due,
                        },
                    }
                )
            for row, op in zip(await store.write_incident_batch(ops), ops, strict=True):
                assert row is not None
                due_of[int(row["id"])] = float(op["fields"]["escalation_due_at"])
    finally:
        await store.close()
    return due_of


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def count_events(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = con.execute("SELECT COUNT(*) FROM inbound_events").fetchone()[0]
        triggers = con.execute(
            "SELECT COUNT(*) FROM inbound_events WHERE action = 'trigger'"
        ).fetchone()[0]
        counted = con.execute(
            "SELECT COALESCE(SUM(event_count), 0) FROM incidents WHERE kind = 'inbound'"
            " AND title LIKE 'bench alert %'"
        ).fetchone()[0]
        incidents = con.execute(
            "SELECT COUNT(*) FROM incidents WHERE kind = 'inbound' AND title LIKE 'bench alert %'"
        ).fetchone()[0]
    finally:
        con.close()
    return {
        "stored_events": int(stored),
        "stored_triggers": int(triggers),
        "sum_event_count": int(counted),
        "incidents": int(incidents),
    }


def escalation_lateness(db: Path, due_of: dict[int, float]) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT incident_id, at FROM incident_events WHERE kind = 'escalated'"
        ).fetchall()
    finally:
        con.close()
    late: list[float] = []
    seen: dict[int, int] = {}
    for incident_id, at in rows:
        due = due_of.get(int(incident_id))
        if due is None:
            continue
        seen[int(incident_id)] = seen.get(int(incident_id), 0) + 1
        late.append(float(at) - due)
    return {
        "steps_due": len(due_of),
        "steps_fired": len(seen),
        "fired_twice": sum(1 for n in seen.values() if n > 1),
        "lateness_p50_ms": round(quantile(late, 0.5) * 1000, 1),
        "lateness_p99_ms": round(quantile(late, 0.99) * 1000, 1),
        "lateness_max_ms": round(max(late) * 1000, 1) if late else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=20, help="seconds of events")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--check-interval", type=int, default=30, help="the TCP checks' interval")
    p.add_argument("--incidents", type=int, default=100_000, help="pending escalation steps")
    p.add_argument("--spread", type=float, default=120.0, help="seconds the steps fall due over")
    p.add_argument("--skip-events", action="store_true", help="only the escalation part")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    ensure_wrk()
    os.environ.setdefault("TOCSIN_INBOUND_RATE", "100000")
    os.environ.setdefault("TOCSIN_INBOUND_BURST", "100000")
    out: dict[str, Any] = {"machine": machine(), "targets": TARGETS}
    with (
        tempfile.TemporaryDirectory(prefix="tocsin-inbound-") as tmp,
        tcp_target() as tcp_port,
        sink() as sink_port,
    ):
        data = Path(tmp) / "data"
        data.mkdir()
        db = data / "tocsin.db"
        serve = Serve(data)
        try:
            serve.start()
            base = f"http://127.0.0.1:{serve.port}"
            keys, policy = asyncio.run(setup_api(base, token(data), sink_port))
            serve.stop()
            asyncio.run(store_checks(data, tcp_port, args.check_interval))
            script = Path(tmp) / "events.lua"
            script.write_text(
                EVENTS_LUA.format(keys=",".join(f'"{k}"' for k in keys), dedup=DEDUP_KEYS)
            )

            serve.start()
            time.sleep(3)  # the checks load and start probing
            seconds = 1 if args.skip_events else args.duration
            run = wrk("events", base + "/api/events/ingest", args.connections, seconds, script)
            serve.stop()
            counted = count_events(db)
            answered = run["requests"] - run["non_2xx"]
            out["events"] = {
                **run,
                **counted,
                "answered_2xx": answered,
                "stored_minus_answered": counted["stored_events"] - answered,
                "applied_once": counted["sum_event_count"] == counted["stored_triggers"],
                "checks": CHECKS,
                "check_interval_s": args.check_interval,
            }

            # Written relative to 0, then moved to 20 s after the next start (writing them
            # takes a while).
            due_of = asyncio.run(store_incidents(data, args.incidents, policy, 0.0, args.spread))
            first_due = time.time() + 20
            con = sqlite3.connect(db)
            with con:
                con.execute(
                    "UPDATE incidents SET escalation_due_at = escalation_due_at + ?,"
                    " started_at = started_at + ? WHERE escalation_due_at IS NOT NULL",
                    (first_due, first_due),
                )
            con.close()
            due_of = {k: v + first_due for k, v in due_of.items()}
            serve.start()
            assert serve.proc is not None
            wait = first_due - time.time() - 1
            if wait > 0:
                time.sleep(wait)
            rss_before = rss_kib(serve.proc.pid)
            time.sleep(max(0.0, first_due + args.spread + 5 - time.time()))
            rss_after = rss_kib(serve.proc.pid)
            serve.stop()
            out["escalation"] = {
                **escalation_lateness(db, due_of),
                "spread_s": args.spread,
                "rss_before_mib": round(rss_before / 1024, 1),
                "rss_after_mib": round(rss_after / 1024, 1),
                "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
            }
        finally:
            serve.stop()  # also when something above failed: never leave it running

    e, s = out["events"], out["escalation"]
    print(
        f"inbound events: {KEYS} keys, wrk -t1 -c{args.connections} -d{args.duration}s,"
        f" engine probing {CHECKS} TCP checks every {args.check_interval} s"
    )
    print(
        f"  {e['requests_per_s']:.0f} events/s (target ≥ {TARGETS['events_per_s']:.0f}),"
        f" p50 {e['latency_p50_ms']} ms, p99 {e['latency_p99_ms']} ms"
        f" (target ≤ {TARGETS['p99_ms']:.0f}); non-2xx {e['non_2xx']},"
        f" socket errors {e['socket_errors']}"
    )
    print(
        f"  stored {e['stored_events']} events for {e['answered_2xx']} answered"
        f" (+{e['stored_minus_answered']} in flight at the end);"
        f" applied once: {e['applied_once']} ({e['sum_event_count']} counted for"
        f" {e['stored_triggers']} triggers, {e['incidents']} incidents)"
    )
    print(
        f"escalation: {s['steps_fired']} of {s['steps_due']} steps fired over"
        f" {args.spread:.0f} s (twice: {s['fired_twice']}); lateness p50"
        f" {s['lateness_p50_ms']} ms, p99 {s['lateness_p99_ms']} ms, max"
        f" {s['lateness_max_ms']} ms (target ≤ 1000); RSS {s['rss_before_mib']} →"
        f" {s['rss_after_mib']} MiB"
    )
    if args.json:
        emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
