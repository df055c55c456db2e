"""Native probes through the engine, against real servers on loopback."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import tocsin
from helpers import free_port
from probe_servers import (
    BIG_TXT,
    DnsServer,
    EchoTcp,
    EchoUdp,
    HttpApp,
    Pki,
    Site,
    make_pki,
    server_context,
)
from tocsin import Check, Engine, Status


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
async def engine(pki: Pki) -> AsyncIterator[Engine]:
    async with Engine(extra_ca_pem=pki.ca_pem, threads=2) as e:
        yield e


@pytest.fixture
async def http_app() -> HttpApp:
    return HttpApp()


@pytest.fixture
async def site(http_app: HttpApp) -> AsyncIterator[Site]:
    s = Site(http_app)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def tls_sites(pki: Pki, http_app: HttpApp) -> AsyncIterator[dict[str, Site]]:
    sites = {
        name: Site(http_app, server_context(getattr(pki, name)))
        for name in ("valid", "expired", "expiring", "wrong_host", "untrusted")
    }
    for s in sites.values():
        await s.start()
    yield sites
    for s in sites.values():
        await s.stop()


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer()
    server.start()
    yield server
    server.stop()


def http(url: str, **options: Any) -> Check:
    timeout = options.pop("timeout", 5)
    return Check(id=1, type="uptime", url=url, timeout=timeout, options=options)


# -- HTTP ---------------------------------------------------------------------------


async def test_http_up_with_its_timing_split_and_details(engine: Engine, site: Site) -> None:
    r = await engine.run_once(http(site.url("/")))
    assert (r.status, r.status_code, r.error_kind) == (Status.UP, 200, None)
    assert r.timings is not None
    assert r.timings.dns_ms is None  # an IP literal needs no lookup
    assert r.timings.connect_ms is not None and r.timings.first_byte_ms is not None
    assert r.timings.tls_ms is None
    assert r.details["address"] == f"127.0.0.1:{site.port}"
    assert r.details["bytes_read"] == len("Hello from the tocsin test server")
    # By name: the system resolver is used and timed.
    r = await engine.run_once(http(site.url("/", host="localhost")))
    assert r.status is Status.UP
    assert r.timings is not None and r.timings.dns_ms is not None


async def test_expected_status_codes(engine: Engine, site: Site) -> None:
    r = await engine.run_once(http(site.url("/status/503")))
    assert (r.status, r.error_kind, r.status_code) == (Status.DOWN, "http_status", 503)
    r = await engine.run_once(http(site.url("/status/503"), expected_status_codes=[503]))
    assert (r.status, r.status_code) == (Status.UP, 503)
    r = await engine.run_once(http(site.url("/status/204")))
    assert r.status is Status.UP


async def test_redirects_are_followed_up_to_ten_hops(engine: Engine, site: Site) -> None:
    r = await engine.run_once(http(site.url("/redirect/3")))
    assert (r.status, r.status_code) == (Status.UP, 200)
    assert r.details["redirects"] == 3
    assert r.details["final_url"] == site.url("/")
    r = await engine.run_once(http(site.url("/redirect/3"), http_follow_redirects=False))
    assert (r.status, r.status_code, r.details["redirects"]) == (Status.UP, 302, 0)
    r = await engine.run_once(http(site.url("/loop")))
    assert (r.status, r.error_kind) == (Status.DOWN, "too_many_redirects")
    assert r.details["redirects"] == 10


async def test_a_response_slower_than_the_timeout_is_a_timeout(engine: Engine, site: Site) -> None:
    r = await engine.run_once(http(site.url("/slow?s=10"), timeout=1))
    assert (r.status, r.error_kind) == (Status.DOWN, "timeout")


async def test_a_slow_response_above_the_threshold_is_degraded(engine: Engine, site: Site) -> None:
    r = await engine.run_once(http(site.url("/slow?s=0.3"), degraded_threshold_ms=100))
    assert (r.status, r.error_kind) == (Status.DEGRADED, "slow_response")
    r = await engine.run_once(http(site.url("/"), degraded_threshold_ms=5_000))
    assert r.status is Status.UP


async def test_the_body_is_read_up_to_one_mebibyte(engine: Engine, site: Site) -> None:
    r = await engine.run_once(http(site.url("/big"), timeout=10))
    assert r.status is Status.UP
    assert r.details["bytes_read"] == 1 << 20


@pytest.mark.parametrize(
    ("mode", "text", "case_sensitive", "status"),
    [
        ("contains", "tocsin test", True, Status.UP),
        ("contains", "TOCSIN TEST", True, Status.DOWN),
        ("contains", "TOCSIN TEST", False, Status.UP),
        ("not_contains", "error", True, Status.UP),
        ("not_contains", "Hello", True, Status.DOWN),
        ("regex", r"^Hello from \w+", True, Status.UP),
        ("regex", r"^hello FROM", False, Status.UP),
        ("regex", r"\d{5}", True, Status.DOWN),
    ],
)
async def test_content_match_modes(
    engine: Engine, site: Site, mode: str, text: str, case_sensitive: bool, status: Status
) -> None:
    r = await engine.run_once(
        http(
            site.url("/"),
            content_match_enabled=True,
            content_match_type=mode,
            content_match_text=text,
            content_match_case_sensitive=case_sensitive,
        )
    )
    assert r.status is status
    if status is Status.DOWN:
        assert r.error_kind == "content_mismatch"


async def test_method_headers_body_and_auth_reach_the_server(
    engine: Engine, site: Site, http_app: HttpApp
) -> None:
    r = await engine.run_once(
        http(
            site.url("/echo"),
            http_method="POST",
            http_headers={"X-Probe": "yes"},
            http_body='{"ping": 1}',
            http_body_type="json",
            auth_method="basic",
            auth_username="user",
            auth_password="s3cret",
        )
    )
    assert r.status is Status.UP
    await engine.run_once(
        http(site.url("/echo"), auth_method="bearer", auth_bearer_token="tok-123")
    )
    basic, bearer = http_app.seen
    assert basic["method"] == "POST"
    assert basic["body"] == b'{"ping": 1}'
    assert basic["content_type"] == "application/json"
    assert basic["authorization"] == "Basic dXNlcjpzM2NyZXQ="
    assert basic["x_probe"] == "yes"
    assert bearer["authorization"] == "Bearer tok-123"


async def test_refused_and_unresolvable_targets(engine: Engine) -> None:
    r = await engine.run_once(http(f"http://127.0.0.1:{free_port()}/"))
    assert (r.status, r.error_kind) == (Status.DOWN, "connect_refused")
    r = await engine.run_once(http("http://no-such-host.invalid/"))
    assert (r.status, r.error_kind) == (Status.DOWN, "dns_error")


async def test_bad_settings_are_refused_with_the_field(engine: Engine) -> None:
    cases = [
        (http("ftp://x/"), "url"),
        (http("http://x/", http_body_type="xml"), "http_body_type"),
        (http("http://x/", auth_method="bearer"), "auth_bearer_token"),
        (Check(id=1, type="tcp", host="127.0.0.1"), "port"),
        (
            Check(id=1, type="dns", host="a.test", options={"dns_record_type": "ZZZ"}),
            "dns_record_type",
        ),
        (Check(id=1, type="icmp", host="127.0.0.1", options={"ping_count": 0}), "ping_count"),
    ]
    for check, field in cases:
        with pytest.raises(tocsin.InvalidCheckError) as info:
            engine.upsert([check])
        assert info.value.field == field, check
    assert engine.stats()["checks"] == 0


# -- HTTPS and TLS --------------------------------------------------------------------


async def test_https_certificates(engine: Engine, tls_sites: dict[str, Site]) -> None:
    r = await engine.run_once(http(tls_sites["valid"].url("/")))
    assert r.status is Status.UP, r.message
    assert r.timings is not None and r.timings.tls_ms is not None
    assert r.details["cert_days_left"] > 300
    expected = {
        "expired": "cert_expired",
        "wrong_host": "cert_hostname",
        "untrusted": "tls_error",
    }
    for name, kind in expected.items():
        r = await engine.run_once(http(tls_sites[name].url("/")))
        assert (r.status, r.error_kind) == (Status.DOWN, kind), (name, r.message)
    r = await engine.run_once(http(tls_sites["untrusted"].url("/"), ssl_verify=False))
    assert r.status is Status.UP
    r = await engine.run_once(http(tls_sites["expiring"].url("/")))
    assert (r.status, r.details["cert_days_left"]) == (Status.UP, 3)


def tls(site: Site, **options: Any) -> Check:
    return Check(id=1, type="tls", host="127.0.0.1", port=site.port, timeout=5, options=options)


async def test_tls_probe_validates_and_reports_expiry(
    engine: Engine, tls_sites: dict[str, Site]
) -> None:
    r = await engine.run_once(tls(tls_sites["valid"]))
    assert r.status is Status.UP
    assert r.details["cert_days_left"] > 300
    assert r.details["tls_version"].startswith("TLSv1_")
    r = await engine.run_once(tls(tls_sites["expiring"]))
    assert (r.status, r.error_kind, r.details["cert_days_left"]) == (
        Status.DEGRADED,
        "cert_expiring",
        3,
    )
    r = await engine.run_once(tls(tls_sites["expiring"], tls_expiry_threshold_days=2))
    assert r.status is Status.UP
    r = await engine.run_once(tls(tls_sites["expired"]))
    assert (r.status, r.error_kind) == (Status.DOWN, "cert_expired")
    r = await engine.run_once(tls(tls_sites["expired"], ssl_verify=False))
    assert (r.status, r.error_kind) == (Status.DOWN, "cert_expired")
    r = await engine.run_once(tls(tls_sites["wrong_host"]))
    assert (r.status, r.error_kind) == (Status.DOWN, "cert_hostname")
    r = await engine.run_once(tls(tls_sites["untrusted"]))
    assert (r.status, r.error_kind) == (Status.DOWN, "tls_error")


# -- TCP and UDP ----------------------------------------------------------------------


async def test_tcp_connect_send_and_expect(engine: Engine) -> None:
    server = EchoTcp()
    await server.start()
    try:
        base = {"id": 1, "type": "tcp", "host": "127.0.0.1", "port": server.port, "timeout": 3}
        r = await engine.run_once(Check(**base))
        assert r.status is Status.UP
        r = await engine.run_once(
            Check(**base, options={"payload": "ping-123", "expected_response": "ping-123"})
        )
        assert r.status is Status.UP
        assert r.details["bytes_read"] >= len("ping-123")
        r = await engine.run_once(Check(**base, options={"expected_response": "SSH-2.0"}))
        assert (r.status, r.error_kind) == (Status.DOWN, "content_mismatch")
    finally:
        await server.stop()
    r = await engine.run_once(Check(id=1, type="tcp", host="127.0.0.1", port=free_port()))
    assert (r.status, r.error_kind) == (Status.DOWN, "connect_refused")


async def test_udp_payload_and_reply(engine: Engine) -> None:
    server = EchoUdp()
    await server.start()
    try:
        base = {"id": 1, "type": "udp", "host": "127.0.0.1", "port": server.port, "timeout": 2}
        r = await engine.run_once(
            Check(**base, options={"payload": "hello", "expected_response": "pong:hello"})
        )
        assert r.status is Status.UP, r.message
        r = await engine.run_once(
            Check(**base, options={"payload": "hello", "expected_response": "other"})
        )
        assert (r.status, r.error_kind) == (Status.DOWN, "content_mismatch")
    finally:
        await server.stop()
    # Nothing listens: loopback answers port unreachable.
    r = await engine.run_once(
        Check(
            id=1,
            type="udp",
            host="127.0.0.1",
            port=free_port(),
            timeout=2,
            options={"payload": "x"},
        )
    )
    assert (r.status, r.error_kind) == (Status.DOWN, "connect_refused")


# -- DNS ------------------------------------------------------------------------------


def dns_check(server: DnsServer, name: str, rtype: str, **options: Any) -> Check:
    return Check(
        id=1,
        type="dns",
        host=name,
        timeout=3,
        options={"dns_server": server.address, "dns_record_type": rtype, **options},
    )


@pytest.mark.parametrize(
    ("rtype", "answer"),
    [
        ("A", "192.0.2.10"),
        ("AAAA", "2001:db8::10"),
        ("CNAME", "target.example.test"),
        ("MX", "10 mail.example.test"),
        ("NS", "ns1.example.test"),
        ("TXT", "v=spf1 -all"),
        ("SOA", "ns1.example.test. hostmaster.example.test. 2026112301 3600 600 86400 60"),
        ("SRV", "10 5 5060 sip.example.test"),
        ("CAA", '0 issue "letsencrypt.org"'),
    ],
)
async def test_dns_record_types(engine: Engine, dns: DnsServer, rtype: str, answer: str) -> None:
    r = await engine.run_once(dns_check(dns, "www.example.test", rtype))
    assert r.status is Status.UP, r.message
    assert any(a.rstrip(".") == answer.rstrip(".") for a in r.details["answers"]), r.details
    r = await engine.run_once(dns_check(dns, "www.example.test", rtype, dns_expected_value=answer))
    assert r.status is Status.UP, (r.message, r.details)


async def test_dns_expectations_errors_and_tcp_fallback(engine: Engine, dns: DnsServer) -> None:
    r = await engine.run_once(
        dns_check(dns, "www.example.test", "A", dns_expected_ips=["192.0.2.11"])
    )
    assert r.status is Status.UP
    r = await engine.run_once(
        dns_check(dns, "www.example.test", "A", dns_expected_ips=["198.51.100.1"])
    )
    assert (r.status, r.error_kind) == (Status.DOWN, "content_mismatch")
    r = await engine.run_once(
        dns_check(dns, "www.example.test", "MX", dns_expected_value="20 other.example.test")
    )
    assert (r.status, r.error_kind) == (Status.DOWN, "content_mismatch")
    r = await engine.run_once(dns_check(dns, "missing.example.test", "A"))
    assert (r.status, r.error_kind, r.details["rcode"]) == (Status.DOWN, "dns_error", "NXDOMAIN")
    r = await engine.run_once(dns_check(dns, "big.example.test", "TXT"))
    assert r.status is Status.UP, r.message
    assert r.details["tcp_fallback"] is True
    assert sorted(r.details["answers"]) == sorted(BIG_TXT)


# -- ICMP -----------------------------------------------------------------------------


def icmp_allowed() -> bool:
    if os.geteuid() == 0:
        return True
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = (int(x) for x in f.read().split())
    return any(low <= g <= high for g in (os.getegid(), *os.getgroups()))


async def test_icmp_to_loopback(engine: Engine) -> None:
    r = await engine.run_once(
        Check(id=1, type="icmp", host="127.0.0.1", timeout=5, options={"ping_count": 3})
    )
    if not icmp_allowed():
        assert r.error_kind == "permission_denied"
        return
    assert r.status is Status.UP, r.message
    d = r.details
    assert (d["sent"], d["received"], d["loss_pct"]) == (3, 3, 0.0)
    assert d["rtt_min_ms"] <= d["rtt_avg_ms"] <= d["rtt_max_ms"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_icmp_without_permission_names_what_is_missing() -> None:
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = (int(x) for x in f.read().split())
    if low <= 65534 <= high:
        pytest.skip("unprivileged ping sockets are allowed for nobody here")
    # pytest's tmp_path is private to root; nobody needs a readable script.
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="tocsin-icmp-"))
    script = tmp_path / "ping.py"
    script.write_text(
        "import asyncio, tocsin\n"
        "async def main():\n"
        "    async with tocsin.Engine(threads=1) as e:\n"
        "        r = await e.run_once(tocsin.Check(id=1, type='icmp', host='127.0.0.1'))\n"
        "        print(r.error_kind, '|', r.message)\n"
        "asyncio.run(main())\n"
    )
    os.chmod(tmp_path, 0o755)  # noqa: S103  (nobody must read the script)
    os.chmod(script, 0o644)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    shutil.rmtree(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("permission_denied |"), proc.stdout
    assert "ping_group_range" in proc.stdout and "CAP_NET_RAW" in proc.stdout


# -- limits and fairness --------------------------------------------------------------


async def test_the_global_cap_bounds_probes_in_flight(
    pki: Pki, site: Site, http_app: HttpApp
) -> None:
    async with Engine(max_in_flight=2, threads=2) as engine:
        results = await engine.run_many(
            [Check(id=i, type="uptime", url=site.url("/slow?s=0.3"), timeout=10) for i in range(6)]
        )
    assert all(r.status is Status.UP for r in results)
    assert http_app.max_active == 2


async def test_the_per_host_cap_bounds_probes_to_one_host(site: Site, http_app: HttpApp) -> None:
    async with Engine(max_per_host=1, threads=2) as engine:
        results = await engine.run_many(
            [Check(id=i, type="uptime", url=site.url("/slow?s=0.2"), timeout=10) for i in range(4)]
        )
    assert [r.status for r in results] == [Status.UP] * 4
    assert http_app.max_active == 1


async def test_a_hung_target_does_not_disturb_other_checks_schedules(
    engine: Engine, site: Site
) -> None:
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(100)  # accepts connections, never answers
    try:
        port = hung.getsockname()[1]
        events = engine.events()
        engine.upsert(
            [
                Check(id=1, type="uptime", url=f"http://127.0.0.1:{port}/", interval=1, timeout=3),
                Check(id=2, type="uptime", url=site.url("/"), interval=1, timeout=3),
            ]
        )
        dues: dict[int, list[float]] = {1: [], 2: []}
        kinds: list[str | None] = []

        async def collect() -> None:
            async for e in events:
                if isinstance(e, tocsin.Result):
                    assert e.due_at is not None
                    dues[e.check_id].append(e.due_at)
                    if e.check_id == 1:
                        kinds.append(e.error_kind)
                    if len(dues[1]) >= 3:
                        return

        await asyncio.wait_for(collect(), 30)
        assert set(kinds) == {"timeout"}
        # Check 2 ran at every second of its grid while check 1 hung: no gap, no repeat.
        fast = sorted(dues[2])
        gaps = {round(b - a, 3) for a, b in itertools.pairwise(fast)}
        assert gaps == {1.0}, fast
        assert len(fast) >= 5
    finally:
        hung.close()
