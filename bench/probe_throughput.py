"""Probe throughput: N HTTP probes, each on a new connection, through the real engine.

    python bench/probe_throughput.py [--target URL] [--n N] [--concurrency C]
                                     [--mode native|python|both] [--json]
    python bench/probe_throughput.py --checks K --interval S --duration D [--json]
    python bench/probe_throughput.py --type database|api_scenario --checks K --interval S
                                     --duration D [--json]

Burst mode (default) prints probes/s, probes per CPU-second of this process (the whole
tocsin process: native threads and Python), p50/p99 latency and errors. Without
--target it starts nginx (Debian's package; installed with apt when missing and run as
root) on loopback serving a small static page, and measures `wrk -H "Connection:
close"` against the same page in the same run as the limit of this machine.

Sustained mode (--checks) schedules K native HTTP checks at interval S for D seconds
and reports the achieved rate, missed runs and dispatch lateness while probing.

With --type, K checks of that plugin type run beside the K native HTTP checks in the
same engine for the same D seconds, each reported on its own (missed runs, lateness),
with the probe CPU per run of the whole process: `database` against a throwaway Redis
(`GET` of a key, compared), `api_scenario` two steps against the nginx page (status and
body assertions, a value extracted by regex and used by the second step).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common import cpu_seconds, emit_json, expected_runs, machine, percentile
from tocsin import Check, Engine, Result, Status

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        root {dir}/www;
        location / {{ index index.html; }}
    }}
}}
"""

PAGE = "<!doctype html><title>tocsin bench</title><p>ok</p>\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_packages(*pkgs: tuple[str, str]) -> None:
    """Install Debian packages (command, package) that are missing, as root."""
    missing = [pkg for cmd, pkg in pkgs if shutil.which(cmd) is None and not Path(cmd).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"probe_throughput: please install {' '.join(missing)} (apt) or pass --target")
    print(f"installing {' '.join(missing)} with apt-get …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        timeout=600,
    )


@contextlib.contextmanager
def nginx(workers: int) -> Iterator[str]:
    ensure_packages(("/usr/sbin/nginx", "nginx-light"))
    with tempfile.TemporaryDirectory(prefix="tocsin-nginx-") as d:
        port = free_port()
        # nginx's workers run unprivileged and must read the page.
        os.chmod(d, 0o755)  # noqa: S103
        Path(d, "www").mkdir(mode=0o755)
        Path(d, "www", "index.html").write_text(PAGE)
        os.chmod(Path(d, "www", "index.html"), 0o644)
        conf = Path(d, "nginx.conf")
        conf.write_text(NGINX_CONF.format(dir=d, port=port, workers=workers))
        proc = subprocess.Popen(
            ["/usr/sbin/nginx", "-c", str(conf), "-e", f"{d}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                time.sleep(0.05)
            else:
                sys.exit(f"nginx did not start: {Path(d, 'error.log').read_text()}")
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    ensure_packages(("wrk", "wrk"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-H", "Connection: close", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": round(rate, 1),
        # wrk's own CPU: what a minimal C client pays per new connection on this machine.
        "requests_per_cpu_s": round(rate * seconds / cpu, 1) if cpu else None,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def summarise(name: str, results: Sequence[Result], wall: float, cpu: float) -> dict[str, Any]:
    latencies = sorted(r.latency_ms for r in results)
    errors = [r for r in results if r.status is not Status.UP]
    kinds: dict[str, int] = {}
    for r in errors:
        kinds[r.error_kind or "?"] = kinds.get(r.error_kind or "?", 0) + 1
    return {
        "mode": name,
        "probes": len(results),
        "seconds": round(wall, 3),
        "probes_per_s": round(len(results) / wall, 1),
        "cpu_seconds": round(cpu, 3),
        "probes_per_cpu_s": round(len(results) / cpu, 1) if cpu else None,
        "latency_p50_ms": round(percentile(latencies, 0.5), 3),
        "latency_p99_ms": round(percentile(latencies, 0.99), 3),
        "errors": len(errors),
        "error_kinds": kinds,
    }


async def burst(url: str, n: int, concurrency: int, mode: str) -> dict[str, Any]:
    probe_type = "uptime" if mode == "native" else "http_aiohttp"
    checks = [Check(id=i, type=probe_type, url=url, timeout=10) for i in range(1, n + 1)]
    async with Engine(max_in_flight=concurrency, max_per_host=concurrency) as engine:
        # Warm-up: resolve, fill caches, start threads; not measured.
        await engine.run_many(checks[: min(200, n)])
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        results = await engine.run_many(checks)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return summarise(mode, results, wall, cpu)


def plugin_checks(
    kind: str, url: str, first_id: int, k: int, interval: float, port: int
) -> list[Check]:
    """K checks of a plugin type (`--type`), against the local servers."""
    if kind == "database":
        options: dict[str, Any] = {
            "db_type": "redis",
            "db_host": "127.0.0.1",
            "db_port": port,
            "db_query": "GET bench:depth",
            "db_expected_result": "< 10",
        }
    else:
        options = {
            "api_scenario_steps": [
                {
                    "url": url,
                    "extract": [{"var": "word", "from": "regex", "pattern": "<p>(\\w+)</p>"}],
                    "assertions": [
                        {"type": "status", "value": 200},
                        {"type": "body", "op": "contains", "value": "tocsin bench"},
                    ],
                },
                {"url": url + "?w={{word}}", "assertions": [{"type": "status", "in": [200]}]},
            ]
        }
    return [
        Check(id=first_id + i, type=kind, interval=interval, timeout=5, options=options)
        for i in range(k)
    ]


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    ensure_packages(("redis-server", "redis-server"))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-redis-") as d:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", d, "--maxclients", "20000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            subprocess.run(
                ["redis-cli", "-p", str(port), "SET", "bench:depth", "7"],
                check=True,
                capture_output=True,
            )
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _row(
    name: str, seen: dict[tuple[int, int], int], lateness: list[float], errors: int,
    ids: range, interval: float, duration: float, start_ms: int, end_ms: int,
) -> dict[str, Any]:  # fmt: skip
    window = {key: n for key, n in seen.items() if start_ms < key[1] <= end_ms}
    expected = expected_runs(ids, round(interval * 1000), start_ms, end_ms)
    late = sorted(lateness)
    return {
        "mode": name,
        "checks": len(ids),
        "interval_s": interval,
        "duration_s": duration,
        "expected_runs": expected,
        "completed_runs": len(window),
        "missed_runs": expected - len(window),
        "duplicate_runs": sum(n - 1 for n in window.values()),
        "achieved_per_s": round(len(window) / ((end_ms - start_ms) / 1000), 1),
        "errors": errors,
        "lateness_p50_ms": round(percentile(late, 0.5), 3),
        "lateness_p99_ms": round(percentile(late, 0.99), 3),
        "lateness_max_ms": round(late[-1], 3) if late else None,
    }


async def sustained(
    url: str,
    k: int,
    interval: float,
    duration: float,
    concurrency: int,
    plugin: str | None = None,
    port: int = 0,
) -> list[dict[str, Any]]:
    """K native HTTP checks (ids 1..K) and, with `plugin`, K checks of that type (ids
    K+1..2K), scheduled together; a row for each."""
    seen: dict[str, dict[tuple[int, int], int]] = {"native": {}, "plugin": {}}
    lateness: dict[str, list[float]] = {"native": [], "plugin": []}
    errors = {"native": 0, "plugin": 0}

    def on_batch(results: Sequence[Result], _changes: Sequence[Any]) -> None:
        for r in results:
            if r.due_at is None:
                continue
            which = "native" if r.check_id <= k else "plugin"
            due = round(r.due_at * 1000)
            key = (r.check_id, due)
            seen[which][key] = seen[which].get(key, 0) + 1
            lateness[which].append((r.started_at - r.due_at) * 1000)
            errors[which] += r.status is not Status.UP

    checks = [
        Check(id=i, type="uptime", url=url, interval=interval, timeout=5) for i in range(1, k + 1)
    ]
    if plugin:
        checks += plugin_checks(plugin, url, k + 1, k, interval, port)
    async with Engine(max_in_flight=concurrency, max_per_host=concurrency) as engine:
        engine.add_listener(on_batch)
        cpu0 = cpu_seconds()
        engine.upsert(checks)
        start_ms = int(time.time() * 1000) + 1
        await asyncio.sleep(duration)
        end_ms = int(time.time() * 1000)
        cpu = cpu_seconds() - cpu0
        # Keep running while the runs due before the end finish; only those count.
        await asyncio.sleep(min(5.0, interval + 2))
    rows = [
        _row("sustained native", seen["native"], lateness["native"], errors["native"],
             range(1, k + 1), interval, duration, start_ms, end_ms)
    ]  # fmt: skip
    if plugin:
        rows.append(
            _row(f"sustained {plugin}", seen["plugin"], lateness["plugin"], errors["plugin"],
                 range(k + 1, 2 * k + 1), interval, duration, start_ms, end_ms)
        )  # fmt: skip
    runs = sum(r["completed_runs"] for r in rows)
    for r in rows:
        r["cpu_seconds_all"] = round(cpu, 2)
        r["cpu_us_per_run_all"] = round(cpu / runs * 1e6, 1) if runs else None
    return rows


def table(rows: list[dict[str, Any]], keys: list[str]) -> None:
    width = max(len(k) for k in keys) + 2
    print(" " * width + "".join(f"{r.get('mode', ''):>26}" for r in rows))
    for k in keys:
        print(f"{k:<{width}}" + "".join(f"{r.get(k)!s:>26}" for r in rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", help="URL to probe (default: a local nginx)")
    p.add_argument("--n", type=int, default=20_000, help="probes in burst mode")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--mode", choices=["native", "python", "both"], default="both")
    p.add_argument("--checks", type=int, help="sustained mode: number of checks")
    p.add_argument(
        "--type",
        choices=["database", "api_scenario"],
        help="sustained mode: also K checks of this plugin type",
    )
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--wrk-seconds", type=int, default=10)
    p.add_argument("--nginx-workers", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.n <= 1_000_000 or not 0 < args.duration <= 600:
        p.error("--n must be 1..1000000 and --duration 0..600")
    if args.type and not args.checks:
        p.error("--type needs --checks (sustained mode)")

    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run

    with contextlib.ExitStack() as stack:
        url = args.target or stack.enter_context(nginx(args.nginx_workers))
        report: dict[str, Any] = {"bench": "probe_throughput", "machine": machine(), "target": url}
        if args.checks:
            port = stack.enter_context(redis_server()) if args.type == "database" else 0
            rows = run(
                sustained(
                    url, args.checks, args.interval, args.duration, args.concurrency,
                    args.type, port,
                )
            )  # fmt: skip
            report["sustained"] = rows[0]
            if args.type:
                report["plugin"] = rows[1]
            also = f" and {args.checks} {args.type} checks" if args.type else ""
            print(
                f"sustained: {args.checks} native HTTP checks{also} every {args.interval:g} s"
                f" for {args.duration:g} s against {url}"
            )
            table(rows, [k for k in rows[0] if k != "mode"])
        else:
            rows = []
            modes = ["native", "python"] if args.mode == "both" else [args.mode]
            for mode in modes:
                rows.append(run(burst(url, args.n, args.concurrency, mode)))
            report["burst"] = rows
            print(
                f"burst: {args.n} HTTP probes, new connection each, concurrency"
                f" {args.concurrency}, against {url} ({machine()})"
            )
            table(rows, [k for k in rows[0] if k != "mode"])
            if not args.target:
                limit = wrk(url, args.concurrency, args.wrk_seconds)
                report["wrk"] = limit
                ratio = rows[0]["probes_per_s"] / limit["requests_per_s"]
                report["native_vs_wrk"] = round(ratio, 3)
                print(
                    f"wrk -t1 -c{args.concurrency} -H 'Connection: close':"
                    f" {limit['requests_per_s']} req/s,"
                    f" {limit['requests_per_cpu_s']} req per CPU-second of wrk"
                    f" (socket errors {limit['socket_errors']});"
                    f" {modes[0]} reaches {ratio:.2f} of its rate"
                )
        if args.json:
            emit_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
