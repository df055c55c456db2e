"""Public status pages under load: one page of 500 components with 90 days of history,
served by `tocsin serve` on SQLite while its engine probes 10,000 other checks.

    python bench/status_pages.py [--duration 10] [--connections 64] [--json]

Setup: a temporary data directory; one start of `tocsin serve` creates the database,
the admin and its token; with the server stopped, the checks go straight into the store:
500 component checks (`tcp` every 60 s against a loopback listener this program opens;
5 of them against a closed port, so the page shows an outage) and 10,000 other `tcp`
checks every 60 s (167 probes/s), with 90 days of day rollups and a few incidents for
the components. The server starts again with rate limits off and the operational
metrics on (`--operational-metrics-token`); the page is created through the API, and
the measurements start after one interval (the first round of runs: every check's first
result is a transition, which drops the cached documents that show it).

Measured, one after another:
- uncached HTML: `--uncached` times (default 200) an edit of the page (PUT, which drops
  its cached documents) then `GET /status/{slug}`, timing the GET alone: p50/p99/max
  (the closed days of the bars and the unchanged component blocks are kept between
  builds; the first build after start, which makes them, is timed on its own);
- wrk (Debian's package; one thread, keep-alive, `--connections` connections,
  `--duration` seconds each, `Accept-Encoding: gzip` as browsers send) on the cached
  HTML page, the page's JSON, a status badge,
  the HTML page with `If-None-Match` (304s), and the API's floor route (an
  authenticated 404: uvicorn, Falcon, auth and rate limiting with no handler), whose
  rate the cached routes are compared with;
- database sessions the server began during each cached run, from its own counters
  (`tocsin_store_reads_total` on `/metrics`) read before and after, per request;
- the engine: after the runs the server is stopped and the stored results of the
  10,000 checks are counted against the runs due on their schedule grid meanwhile.

Targets (issue 15) are printed beside the figures; nothing is asserted. With --json the
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from api import Serve, engine_runs, ensure_wrk, free_port, tcp_target, writer_counts, wrk
from common import emit_json, machine, percentile
from tocsin.encryption import SecretBox
from tocsin.models import Rollup
from tocsin.store.sqlite import SqliteStore

COMPONENTS = 500
DOWN_COMPONENTS = 5
OTHER_CHECKS = 10_000
INTERVAL_S = 60
DAYS = 90
DAY_MS = 86_400_000
TARGETS = {"html_uncached_p99_ms": 50.0, "cached_vs_floor": 0.5, "db_per_cached_request": 0}


def _sketch(n: int) -> bytes:
    # The rollup latency sketch: zero count, then (bucket, count) pairs (figures.py).
    return struct.pack("<I", 0) + struct.pack("<hI", 40, n)


async def seed(data_dir: Path, port: int, closed_port: int) -> tuple[list[int], list[int]]:
    """The checks, their rollups and incidents, straight into the store: (component ids,
    other ids)."""
    store = SqliteStore(data_dir / "tocsin.db", SecretBox.from_environment(data_dir))
    await store.open()
    try:
        components: list[int] = []
        for i in range(COMPONENTS):
            row = await store.create_check(
                1,
                {
                    "name": f"component-{i:03d}",
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "port": closed_port if i < DOWN_COMPONENTS else port,
                    "interval": INTERVAL_S,
                    "timeout": 5,
                },
            )
            components.append(int(row["id"]))
        others: list[int] = []
        for i in range(OTHER_CHECKS):
            row = await store.create_check(
                1,
                {
                    "name": f"other-{i}",
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "interval": INTERVAL_S,
                    "timeout": 5,
                },
            )
            others.append(int(row["id"]))
        today = int(time.time() * 1000) // DAY_MS * DAY_MS
        rng = random.Random(15)
        batch: list[Rollup] = []
        for cid in components:
            for d in range(1, DAYS + 1):
                start = today - d * DAY_MS
                bad = rng.random() < 0.03
                batch.append(
                    Rollup(
                        check_id=cid,
                        start_ms=start,
                        span_ms=60_000,
                        runs_up=1440 - (30 if bad else 0),
                        runs_down=30 if bad else 0,
                        runs_degraded=0,
                        downtime_ms=1_800_000 if bad else 0,
                        excluded_ms=0,
                        incidents=1 if bad else 0,
                        sketch=_sketch(1440),
                    )
                )
                if bad:
                    await store.insert(
                        "incidents",
                        1,
                        {
                            "check_id": cid,
                            "status": "RESOLVED",
                            "title": f"component-{cid} is DOWN",
                            "started_at": start / 1000 + 3600,
                            "resolved_at": start / 1000 + 5400,
                        },
                    )
            if len(batch) >= 9_000:
                await store.write_batch([], [], batch)
                batch = []
        if batch:
            await store.write_batch([], [], batch)
        return components, others
    finally:
        await store.close()


HTTP = requests.Session()


def request(
    method: str, url: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a kept-alive connection: (status, headers, body)."""
    resp = HTTP.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    if resp.status_code >= 400:
        raise SystemExit(f"{method} {url} answered {resp.status_code}: {resp.text[:500]}")
    return resp.status_code, dict(resp.headers), resp.content


def store_reads(base: str, token: str) -> int | None:
    """The server's count of database sessions begun (reads), from its own metrics."""
    try:
        _, _, body = request("GET", base + "/metrics", token)
    except (requests.RequestException, SystemExit):  # no operational metrics: no figure
        return None
    m = re.search(r"^tocsin_store_reads_total(?:\{[^}]*\})? ([\d.e+]+)$", body.decode(), re.M)
    return int(float(m.group(1))) if m else None


def uncached(base: str, token: str, page_id: int, slug: str, times: int) -> dict[str, Any]:
    """Edit the page (dropping its cached documents), then time one GET of its HTML."""
    took: list[float] = []
    for i in range(times):
        request("PUT", f"{base}/api/status-pages/{page_id}", token, {"description": f"run {i}"})
        t0 = time.perf_counter()
        status, _, body = request("GET", f"{base}/status/{slug}", token)
        took.append((time.perf_counter() - t0) * 1000)
        if status != 200 or b"component-" not in body:
            raise SystemExit(f"status page answered {status}")
    took.sort()
    return {
        "requests": times,
        "p50_ms": round(statistics.median(took), 2),
        "p99_ms": round(percentile(took, 0.99), 2),
        "max_ms": round(took[-1], 2),
        "bytes": len(body),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds of wrk per route")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--uncached", type=int, default=200, help="timed uncached page builds")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 1 <= args.connections <= 10_000:
        p.error("--duration must be 1..600 and --connections 1..10000")
    if not 1 <= args.uncached <= 10_000:
        p.error("--uncached must be 1..10000")
    ensure_wrk()

    with tempfile.TemporaryDirectory(prefix="tocsin-bench-status-") as tmp, tcp_target() as port:
        data_dir = Path(tmp, "data")
        server = Serve(data_dir)
        server.start()  # first start: database, admin, token
        server.stop()
        creds = (data_dir / "initial-credentials").read_text()
        token = dict(line.split("=", 1) for line in creds.split())["token"]
        t0 = time.perf_counter()
        # A port nothing listens on: those components are DOWN.
        components, others = asyncio.run(seed(data_dir, port, free_port()))
        print(
            f"stored {len(components) + len(others)} checks and {DAYS} days of rollups"
            f" in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        metrics_token = secrets.token_urlsafe(24)
        base = f"http://127.0.0.1:{server.port}"
        auth = f"Authorization: Bearer {token}"
        rows: list[dict[str, Any]] = []
        server.start("--operational-metrics-token", metrics_token)
        try:
            _, _, body = request(
                "POST",
                f"{base}/api/status-pages/",
                token,
                {"name": "Bench status", "slug": "bench", "check_ids": components},
            )
            page = json.loads(body)
            _, _, body = request("GET", f"{base}/api/checks/{components[-1]}", token)
            badge_uuid = json.loads(body)["uuid"]
            # The first round of runs spreads over the interval: every check's first
            # result is a transition (UNKNOWN to UP), which drops the pages showing it.
            # Measure the steady state after it.
            print(f"waiting {INTERVAL_S + 5} s for the first round of runs", file=sys.stderr)
            time.sleep(INTERVAL_S + 5)
            # The first build after start also reads and renders every component's closed
            # days (kept for the next builds: statuspages/history.py).
            t0 = time.perf_counter()
            request("GET", f"{base}/status/bench", token)
            first_ms = round((time.perf_counter() - t0) * 1000, 2)
            cold = uncached(base, token, int(page["id"]), "bench", args.uncached)
            cold["first_build_ms"] = first_ms
            _, headers, _ = request("GET", f"{base}/status/bench", token)
            etag = headers.get("ETag") or headers.get("etag") or ""
            lo_ms = int(time.time() * 1000)
            gz = "Accept-Encoding: gzip"  # as every browser sends
            runs = [
                ("GET /status/{slug} (cached)", f"{base}/status/bench", (gz,)),
                ("GET public/{slug} JSON", f"{base}/api/status-pages/public/bench", (gz,)),
                ("GET /api/badges/{uuid}", f"{base}/api/badges/{badge_uuid}", (gz,)),
                (
                    "GET /status/{slug} If-None-Match",
                    f"{base}/status/bench",
                    (gz, f"If-None-Match: {etag}"),
                ),
                ("GET /api/no-such-route (floor)", f"{base}/api/no-such-route", (auth,)),
            ]
            for name, url, headers_ in runs:
                before = store_reads(base, metrics_token)
                row = wrk(name, url, args.connections, args.duration, headers=headers_)
                after = store_reads(base, metrics_token)
                if before is not None and after is not None:
                    # Two of them are the metrics reads themselves, if those read at all.
                    row["db_sessions"] = after - before
                    row["db_per_request"] = round((after - before) / max(row["requests"], 1), 5)
                rows.append(row)
            hi_ms = int(time.time() * 1000)
            time.sleep(3)
        finally:
            server.stop()
        engine = engine_runs(data_dir / "tocsin.db", others, lo_ms, hi_ms, INTERVAL_S)
        writer = writer_counts(server.log)

    floor = rows[-1]["requests_per_s"] or 1.0
    for row in rows[:-1]:
        row["vs_floor"] = round(row["requests_per_s"] / floor, 2)
    report: dict[str, Any] = {
        "bench": "status_pages",
        "machine": machine(),
        "components": COMPONENTS,
        "other_checks": OTHER_CHECKS,
        "days": DAYS,
        "connections": args.connections,
        "duration_s": args.duration,
        "html_uncached": cold,
        "routes": rows,
        "engine": engine,
        "server_writer": writer,
        "targets": TARGETS,
    }
    print(
        f"tocsin serve (SQLite; a page of {COMPONENTS} components, {DAYS} days; engine:"
        f" {OTHER_CHECKS + COMPONENTS} tcp checks every {INTERVAL_S} s), wrk -t1"
        f" -c{args.connections} -d{args.duration}s, keep-alive, rate limits off ({machine()})"
    )
    print(
        f"uncached HTML page ({cold['bytes']:,} bytes), {cold['requests']} builds:"
        f" p50 {cold['p50_ms']} ms, p99 {cold['p99_ms']} ms, max {cold['max_ms']} ms"
        f" (target p99 <= {TARGETS['html_uncached_p99_ms']:g} ms); the first build after"
        f" start (closed days read too): {cold['first_build_ms']} ms"
    )
    keys = ["requests_per_s", "latency_p50_ms", "latency_p99_ms", "non_2xx", "socket_errors"]
    keys += ["vs_floor", "db_per_request"]
    print(f"{'route':<34}" + "".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(f"{r['route']:<34}" + "".join(f"{r.get(k, '-')!s:>16}" for k in keys))
    print(
        f"targets: cached routes >= {TARGETS['cached_vs_floor']:g} x the floor's rate,"
        " 0 database sessions per cached request"
    )
    print(
        f"engine while wrk ran ({engine['window_s']} s): {engine['stored_runs']} of"
        f" {engine['expected_runs']} due runs of the {OTHER_CHECKS} other checks stored,"
        f" missed {engine['missed_runs']}, duplicates {engine['duplicate_runs']}"
    )
    if args.json:
        emit_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
