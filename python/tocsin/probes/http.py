"""The reference probe plugin, `http_aiohttp`: one HTTP GET with a fresh connection,
the status code checked against the expected codes (200-399 when none are given).
The built-in `uptime` type is the native probe; this one shows how a plugin is written
and is the Python path the throughput benchmark compares against."""

from __future__ import annotations

import asyncio
import errno
import ssl
import time

import aiohttp

from tocsin.models import Check, ProbeOutcome
from tocsin.probes import default_registry

BODY_LIMIT = 1 << 20

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        # PERF: force_close gives a new connection per probe, which is what a monitor
        # must measure (DNS, connect and TLS every time), without a session per probe.
        connector = aiohttp.TCPConnector(force_close=True, limit=0, ttl_dns_cache=None)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": "tocsin"},
            auto_decompress=True,
        )
        _sessions[loop] = session
    return session


async def close_session() -> None:
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


def expected(check: Check, code: int) -> bool:
    codes = check.options.get("expected_status_codes") or []
    if codes:
        return code in codes
    return 200 <= code <= 399


def _classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error", str(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls_error", str(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return "connect_refused", str(exc)
        return "connect_error", str(exc)
    if isinstance(exc, ssl.SSLError):
        return "tls_error", str(exc)
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid_url", f"invalid URL: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return "protocol_error", f"{type(exc).__name__}: {exc}"
    return "probe_error", f"{type(exc).__name__}: {exc}"


async def http_probe(check: Check) -> ProbeOutcome:
    if not check.url:
        return ProbeOutcome.down("invalid_url", "check has no url")
    start = time.perf_counter()
    try:
        async with _session().get(check.url, allow_redirects=True, max_redirects=10) as resp:
            await resp.content.read(BODY_LIMIT)
            code = resp.status
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        kind, message = _classify(exc)
        return ProbeOutcome.down(kind, message, latency_ms=(time.perf_counter() - start) * 1e3)
    latency_ms = (time.perf_counter() - start) * 1e3
    if not expected(check, code):
        return ProbeOutcome.down(
            "http_status", f"unexpected status {code}", status_code=code, latency_ms=latency_ms
        )
    return ProbeOutcome.up(status_code=code, latency_ms=latency_ms)


default_registry.register("http_aiohttp", http_probe)
default_registry.on_close(close_session)
