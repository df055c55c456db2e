"""REST API throughput: `tocsin serve` on SQLite driven by wrk on loopback, while its
engine probes 1,000 TCP checks every 10 s.

    python bench/api.py [--duration 10] [--connections 64] [--json]

Setup: a temporary data directory; one start of `tocsin serve` creates the database,
the admin and its token; with the server stopped, 10,000 checks go straight into the
store (1,000 active `tcp` checks at a 10 s interval against a TCP listener this program
opens on loopback, one heartbeat check for the pings, the rest paused `uptime` checks),
then the server starts again with rate limits off (TOCSIN_RATE_LIMIT_PER_TOKEN=0,
TOCSIN_RATE_LIMIT_PER_ADDRESS=0).

wrk (Debian's package; installed with apt when missing and run as root), one thread,
keep-alive, `--connections` connections, `--duration` seconds each, one after another:
- `GET /api/checks/{id}` with the token, a random id of the 10,000 per request;
- `GET /api/checks/?limit=100` with the token;
- `POST /api/ping/{uuid}` (empty body), no credentials;
- `GET /api/no-such-route` with the token (a 404): the cost of the HTTP server, the
  framework, the input guard and rate limiting alone, the ceiling of any route in this
  process (authentication is skipped for a path that matches no route, so the token is
  not looked up: an authenticated 404 of a missing check costs more, see bench/micro).
Each row: requests/s, latency p50/p99 (wrk --latency), socket errors and non-2xx answers.

Engine: the engine's counters are not exposed over HTTP, so after the runs the server is
stopped (its writer flushes) and the stored results of the TCP checks are counted
against the runs due on their schedule grid while wrk ran: missed runs = due - stored.
The server's own count of results written and dropped comes from its log.

Targets (issue 6, on a 2-core machine) are printed next to the figures; nothing is
asserted. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import emit_json, expected_runs, machine
from tocsin.encryption import SecretBox
from tocsin.store.sqlite import SqliteStore

TOTAL_CHECKS = 10_000
TCP_CHECKS = 1_000
TCP_INTERVAL_S = 10
TARGETS = {"pings_per_s": 15_000.0, "check_reads_per_s": 8_000.0, "p99_ms": 20.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> None:
    """Install Debian's wrk when missing (as root)."""
    if shutil.which("wrk") is not None:
        return
    if os.geteuid() != 0:
        sys.exit("api: please install wrk (apt-get install wrk)")
    print("installing wrk with apt-get …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        env=env,
        timeout=600,
    )


@contextlib.contextmanager
def tcp_target() -> Iterator[int]:
    """A loopback listener that accepts and closes: what the TCP checks probe."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=accept, name="tcp-target", daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


class Serve:
    """`tocsin serve` as a child process with rate limits off."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = data_dir.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        env = {
            **os.environ,
            "TOCSIN_RATE_LIMIT_PER_TOKEN": "0",
            "TOCSIN_RATE_LIMIT_PER_ADDRESS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tocsin.cli",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"tocsin serve exited early:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        sys.exit(f"tocsin serve did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


async def store_checks(data_dir: Path, tcp_port: int) -> tuple[list[int], list[int], str]:
    """All checks, straight into the store: (all ids, TCP check ids, heartbeat uuid)."""
    store = SqliteStore(data_dir / "tocsin.db", SecretBox.from_environment(data_dir))
    await store.open()
    try:
        ids, tcp_ids = [], []
        hb = await store.create_check(
            1,
            {
                "name": "bench heartbeat",
                "type": "heartbeat",
                "interval": 3600,
                "timeout": 60,
                "grace_period": 3600,
                "config": {"grace_period": 3600},
            },
        )
        ids.append(int(hb["id"]))
        for i in range(TCP_CHECKS):
            row = await store.create_check(
                1,
                {
                    "name": f"tcp {i}",
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "port": tcp_port,
                    "interval": TCP_INTERVAL_S,
                    "timeout": 5,
                },
            )
            ids.append(int(row["id"]))
            tcp_ids.append(int(row["id"]))
        for i in range(TOTAL_CHECKS - len(ids)):
            row = await store.create_check(
                1,
                {
                    "name": f"paused {i}",
                    "type": "uptime",
                    "url": f"http://127.0.0.1:9/{i}",
                    "interval": 60,
                    "timeout": 5,
                    "is_active": False,
                },
            )
            ids.append(int(row["id"]))
        return ids, tcp_ids, str(hb["uuid"])
    finally:
        await store.close()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str, unit: str) -> float:
    return round(float(value) * _UNITS[unit], 3)


def wrk(
    name: str,
    url: str,
    connections: int,
    seconds: int,
    script: Path | None = None,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def latency(q: str) -> float | None:
        m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", lat.get(q, ""))
        return _ms(m.group(1), m.group(2)) if m else None

    return {
        "route": name,
        "requests": int(total.group(1)) if total else 0,
        "requests_per_s": round(float(rate.group(1)), 1) if rate else 0.0,
        "latency_p50_ms": latency("50"),
        "latency_p99_ms": latency("99"),
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def engine_runs(
    db: Path, tcp_ids: list[int], lo_ms: int, hi_ms: int, interval_s: int = TCP_INTERVAL_S
) -> dict[str, Any]:
    """Stored runs of the TCP checks due in (lo, hi] against their schedule grid."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT check_id, due_at, status FROM results WHERE due_at > ? AND due_at <= ?"
            " AND check_id BETWEEN ? AND ?",
            (lo_ms / 1000 - 1, hi_ms / 1000 + 1, min(tcp_ids), max(tcp_ids)),
        ).fetchall()
    finally:
        con.close()
    ids = set(tcp_ids)
    seen: dict[tuple[int, int], int] = {}
    not_up = 0
    for check_id, due_at, status in rows:
        due = round(due_at * 1000)
        if check_id in ids and lo_ms < due <= hi_ms:
            seen[(check_id, due)] = seen.get((check_id, due), 0) + 1
            not_up += status != "UP"
    expected = expected_runs(sorted(ids), interval_s * 1000, lo_ms, hi_ms)
    return {
        "tcp_checks": len(ids),
        "interval_s": interval_s,
        "window_s": round((hi_ms - lo_ms) / 1000, 1),
        "expected_runs": expected,
        "stored_runs": len(seen),
        "missed_runs": expected - len(seen),
        "duplicate_runs": sum(n - 1 for n in seen.values()),
        "not_up": not_up,
    }


def writer_counts(log: Path) -> dict[str, int] | None:
    found = re.findall(r"stopped; (\d+) results written, (\d+) dropped", log.read_text())
    if not found:
        return None
    written, dropped = found[-1]
    return {"results_written": int(written), "results_dropped": int(dropped)}


PING_LUA = 'wrk.method = "POST"\nwrk.body = ""\n'
CHECK_LUA = """
local ids = {{{ids}}}
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/checks/" .. ids[math.random(#ids)])
end
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds of wrk per route")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument(
        "--routes",
        type=lambda v: v.split(","),
        default=["read", "list", "ping", "floor"],
        help="which of read,list,ping,floor to run (comma-separated; default all)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.routes or not set(args.routes) <= {"read", "list", "ping", "floor"}:
        p.error("--routes takes read, list, ping and floor, comma-separated")
    if not 1 <= args.duration <= 600 or not 1 <= args.connections <= 10_000:
        p.error("--duration must be 1..600 and --connections 1..10000")
    ensure_wrk()

    with tempfile.TemporaryDirectory(prefix="tocsin-bench-api-") as tmp, tcp_target() as port:
        data_dir = Path(tmp, "data")
        server = Serve(data_dir)
        server.start()  # first start: database, admin, token
        server.stop()
        creds = (data_dir / "initial-credentials").read_text()
        token = dict(line.split("=", 1) for line in creds.split())["token"]

        t0 = time.perf_counter()
        ids, tcp_ids, ping_uuid = asyncio.run(store_checks(data_dir, port))
        create_s = time.perf_counter() - t0
        print(f"stored {len(ids)} checks in {create_s:.1f} s", file=sys.stderr)

        check_lua = Path(tmp, "check.lua")
        check_lua.write_text(CHECK_LUA.format(ids=",".join(map(str, ids))))
        ping_lua = Path(tmp, "ping.lua")
        ping_lua.write_text(PING_LUA)
        auth = f"Authorization: Bearer {token}"
        base = f"http://127.0.0.1:{server.port}"

        server.start()
        try:
            # Let the first round of TCP runs (spread over the interval) settle in.
            time.sleep(2)
            lo_ms = int(time.time() * 1000)
            runs = {
                "read": lambda: wrk(
                    "GET /api/checks/{id}",
                    base + "/",
                    args.connections,
                    args.duration,
                    check_lua,
                    (auth,),
                ),
                "list": lambda: wrk(
                    "GET /api/checks/?limit=100",
                    base + "/api/checks/?limit=100",
                    args.connections,
                    args.duration,
                    headers=(auth,),
                ),
                "ping": lambda: wrk(
                    "POST /api/ping/{uuid}",
                    f"{base}/api/ping/{ping_uuid}",
                    args.connections,
                    args.duration,
                    ping_lua,
                ),
                # The floor: an authenticated request for no route (404) costs what
                # uvicorn, Falcon, auth and rate limiting cost, with no handler at all.
                "floor": lambda: wrk(
                    "GET /api/no-such-route (404)",
                    base + "/api/no-such-route",
                    args.connections,
                    args.duration,
                    headers=(auth,),
                ),
            }
            rows = [runs[name]() for name in args.routes]
            hi_ms = int(time.time() * 1000)
            time.sleep(3)  # runs due before the end finish and reach the writer
        finally:
            server.stop()
        engine = engine_runs(data_dir / "tocsin.db", tcp_ids, lo_ms, hi_ms)
        writer = writer_counts(server.log)

    report: dict[str, Any] = {
        "bench": "api",
        "machine": machine(),
        "checks_stored": len(ids),
        "connections": args.connections,
        "duration_s": args.duration,
        "routes": rows,
        "engine": engine,
        "server_writer": writer,
        "targets": TARGETS,
    }
    print(
        f"tocsin serve (SQLite, {len(ids)} checks; engine: {TCP_CHECKS} tcp checks every"
        f" {TCP_INTERVAL_S} s), wrk -t1 -c{args.connections} -d{args.duration}s, keep-alive,"
        f" rate limits off ({machine()})"
    )
    keys = ["requests", "requests_per_s", "latency_p50_ms", "latency_p99_ms"]
    keys += ["socket_errors", "non_2xx"]
    print(f"{'route':<30}" + "".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(f"{r['route']:<30}" + "".join(f"{r[k]!s:>16}" for k in keys))
    print(
        f"targets: pings >= {TARGETS['pings_per_s']:,.0f}/s, check reads >="
        f" {TARGETS['check_reads_per_s']:,.0f}/s, p99 <= {TARGETS['p99_ms']:g} ms"
    )
    print(
        f"engine while wrk ran ({engine['window_s']} s): {engine['stored_runs']} of"
        f" {engine['expected_runs']} due TCP runs stored, missed {engine['missed_runs']},"
        f" duplicates {engine['duplicate_runs']}, not UP {engine['not_up']}"
    )
    if writer is not None:
        print(
            f"server writer over its whole run: {writer['results_written']} results written,"
            f" {writer['results_dropped']} dropped"
        )
    if args.json:
        emit_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
