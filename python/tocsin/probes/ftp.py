"""The `ftp` probe: log in to an FTP server (plain, FTPS explicit with AUTH TLS, FTPS
implicit) with aioftp, or to an SFTP server with asyncssh, and optionally look at one
path: it must exist, and may be required to be at least `ftp_min_size_bytes` large and
modified within `ftp_max_age_minutes`. Over TLS the server's certificate is validated
(unless `ssl_verify` is false) and its expiry judged against
`tls_expiry_threshold_days` (DEGRADED within it).

Error kinds: `dns_error`, `connect_refused`, `connect_timeout`, `connect_error`,
`tls_error`, `cert_expiring`, `auth_failed`, `path_not_found`, `file_too_small`,
`file_too_old`, `protocol_error`. See docs/probes-and-verdicts.md."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import socket
import ssl
import time
from typing import Any

import aioftp
import asyncssh
from cryptography import x509

from tocsin.models import Check, ProbeOutcome, Status
from tocsin.probes import default_registry

DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "ftps_implicit": 990, "sftp": 22}


class Failed(Exception):
    def __init__(self, kind: str, message: str, status: Status = Status.DOWN) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def _connection(exc: BaseException) -> Failed:
    if isinstance(exc, socket.gaierror):
        return Failed("dns_error", f"cannot resolve the host: {exc}")
    if isinstance(exc, ssl.SSLError):
        return Failed("tls_error", str(exc))
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ):
        return Failed("connect_refused", "connection refused")
    if isinstance(exc, TimeoutError):
        return Failed("connect_timeout", "timed out")
    return Failed("connect_error", f"{type(exc).__name__}: {exc}")


def _tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _cert_days(der: bytes | None) -> float | None:
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400


def _judge_file(o: dict[str, Any], size: int | None, modified: float | None) -> dict[str, Any]:
    details: dict[str, Any] = {"size": size}
    if modified is not None:
        details["modified_at"] = dt.datetime.fromtimestamp(modified, dt.UTC).isoformat()
    min_size = int(o.get("ftp_min_size_bytes") or 0)
    if min_size and (size is None or size < min_size):
        raise Failed("file_too_small", f"{o['ftp_path']} is {size} bytes, less than {min_size}")
    max_age = float(o.get("ftp_max_age_minutes") or 0)
    if max_age and modified is not None:
        age = (time.time() - modified) / 60
        details["age_minutes"] = round(age, 1)
        if age > max_age:
            raise Failed("file_too_old", f"{o['ftp_path']} was modified {age:.0f} min ago")
    return details


def _mlst_time(value: Any) -> float | None:
    if not isinstance(value, str) or len(value) < 14:
        return None
    try:
        return dt.datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


async def _ftp(o: dict[str, Any], host: str, port: int, wait_s: float) -> dict[str, Any]:
    protocol = o.get("ftp_protocol") or "ftp"
    verify = o.get("ssl_verify", True) is not False
    ctx = _tls_context(verify) if protocol in ("ftps", "ftps_implicit") else None
    client = aioftp.Client(
        socket_timeout=wait_s,
        connection_timeout=wait_s,
        path_timeout=wait_s,
        ssl=ctx if protocol == "ftps_implicit" else None,
    )
    details: dict[str, Any] = {"protocol": protocol}
    try:
        try:
            await client.connect(host, port)
            if protocol == "ftps":
                await client.upgrade_to_tls(ctx)
        except aioftp.StatusCodeError as exc:
            raise Failed("protocol_error", f"the server refused: {exc}") from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise _connection(exc) from None
        if ctx is not None:
            transport = client.stream.writer.transport if client.stream else None
            obj = transport.get_extra_info("ssl_object") if transport is not None else None
            days = _cert_days(obj.getpeercert(binary_form=True)) if obj is not None else None
            if days is not None:
                details["cert_days_left"] = round(days, 2)
        try:
            await client.login(
                o.get("ftp_username") or o.get("auth_username") or "anonymous",
                o.get("ftp_password") or o.get("auth_password") or "anon@",
            )
        except aioftp.StatusCodeError as exc:
            raise Failed("auth_failed", f"login refused: {exc}") from None
        path = o.get("ftp_path") or ""
        if path:
            try:
                info = await client.stat(path)
            except aioftp.StatusCodeError:
                raise Failed("path_not_found", f"{path} does not exist") from None
            size = int(info["size"]) if str(info.get("size", "")).isdigit() else None
            details.update(_judge_file(o, size, _mlst_time(info.get("modify"))))
        return details
    except (OSError, TimeoutError) as exc:
        raise _connection(exc) from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.quit(), 1.0)
        client.close()


async def _sftp(o: dict[str, Any], host: str, port: int, wait_s: float) -> dict[str, Any]:
    details: dict[str, Any] = {"protocol": "sftp"}
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port,
                username=o.get("ftp_username") or o.get("auth_username") or None,
                password=o.get("ftp_password") or o.get("auth_password") or None,
                # The host key is not pinned (no known_hosts): the check watches the
                # service, and a password is sent only inside the encrypted channel.
                known_hosts=None,
                client_keys=None,
                agent_path=None,
            ),
            wait_s,
        )
    except asyncssh.PermissionDenied as exc:
        raise Failed("auth_failed", f"login refused: {exc.reason}") from None
    except asyncssh.Error as exc:
        raise Failed("protocol_error", f"{type(exc).__name__}: {exc}") from None
    except (OSError, TimeoutError) as exc:
        raise _connection(exc) from None
    try:
        details["server_version"] = conn.get_extra_info("server_version")
        path = o.get("ftp_path") or ""
        if path:
            async with conn.start_sftp_client() as sftp:
                try:
                    attrs = await sftp.stat(path)
                except asyncssh.SFTPNoSuchFile:
                    raise Failed("path_not_found", f"{path} does not exist") from None
                except asyncssh.SFTPError as exc:
                    raise Failed("protocol_error", str(exc)) from None
                details.update(_judge_file(o, attrs.size, attrs.mtime))
        return details
    finally:
        conn.close()


async def ftp_probe(check: Check) -> ProbeOutcome:
    o = check.options
    protocol = o.get("ftp_protocol") or "ftp"
    host = check.host or ""
    port = check.port or DEFAULT_PORTS.get(protocol, 21)
    start = time.perf_counter()
    wait_s = max(0.5, check.timeout * 0.9)
    try:
        if protocol not in DEFAULT_PORTS:
            raise Failed("invalid_config", f"unknown ftp_protocol {protocol!r}")
        run = _sftp if protocol == "sftp" else _ftp
        details = await asyncio.wait_for(run(o, host, port, wait_s), check.timeout)
    except Failed as exc:
        return ProbeOutcome(
            exc.status, exc.kind, str(exc)[:500], latency_ms=(time.perf_counter() - start) * 1e3
        )
    except TimeoutError:
        return ProbeOutcome.down("timeout", f"no answer within {check.timeout} s")
    latency_ms = (time.perf_counter() - start) * 1e3
    days = details.get("cert_days_left")
    threshold = float(o.get("tls_expiry_threshold_days") or 14)
    if days is not None and days < threshold:
        return ProbeOutcome(
            Status.DEGRADED,
            "cert_expiring",
            f"the certificate expires in {days:.1f} days",
            latency_ms=latency_ms,
            details=details,
        )
    return ProbeOutcome(Status.UP, latency_ms=latency_ms, details=details)


default_registry.register("ftp", ftp_probe)
