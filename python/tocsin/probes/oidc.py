"""The `oidc` probe: an OpenID Connect provider, as its clients depend on it.

1. The discovery document (`{issuer}/.well-known/openid-configuration`) is fetched and
   validated: its `issuer` is the check's URL, and the endpoints clients need are there
   (`authorization_endpoint`, `token_endpoint`, `jwks_uri`).
2. The JWKS is fetched: at least one usable signing key (RSA, EC or OKP, not for
   encryption only). A key whose X.509 certificate (`x5c`) expires within
   `tls_expiry_threshold_days` makes the check DEGRADED; an expired one DOWN.
3. With `oidc_config` holding `client_id` and `client_secret`, a client-credentials
   token is obtained from the token endpoint (HTTP Basic client authentication, then
   the form fields if refused).
4. The issuer's TLS certificate, over https, is judged like the keys' (days left).

Error kinds: `discovery_failed`, `issuer_mismatch`, `missing_endpoint`, `jwks_failed`,
`no_signing_key`, `key_expired`, `key_expiring`, `token_failed`, `cert_expiring`, and
the HTTP ones. See docs/probes-and-verdicts.md."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
import time
import urllib.parse
from typing import Any

import aiohttp
from cryptography import x509

from tocsin.models import Check, ProbeOutcome, Status
from tocsin.probes import default_registry
from tocsin.probes.http import _classify, _session

MAX_DOCUMENT = 1 << 20
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
SIGNING_KTY = ("RSA", "EC", "OKP")


class Failed(Exception):
    def __init__(self, kind: str, message: str, status: Status = Status.DOWN) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


async def _get_json(url: str, verify: bool, wait_s: float, kind: str) -> Any:
    """The JSON document at `url`."""
    try:
        async with _session().get(
            url,
            ssl=verify,
            timeout=aiohttp.ClientTimeout(total=wait_s),
            headers={"Accept": "application/json"},
        ) as resp:
            raw = await resp.content.read(MAX_DOCUMENT)
            if resp.status != 200:
                raise Failed(kind, f"{url} answered {resp.status}")
    except TimeoutError:
        raise Failed("timeout", f"{url}: no answer in time") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        code, message = _classify(exc)
        raise Failed(code, message) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise Failed(kind, f"{url} did not answer JSON") from None


async def _cert_days(url: str, wait_s: float) -> float | None:
    """Days until the certificate an https `url` presents expires (read on a handshake
    of its own: whether it is trusted is the requests' to judge)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                parts.hostname, parts.port or 443, ssl=ctx, server_hostname=parts.hostname
            ),
            wait_s,
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return None  # the requests report why
    try:
        obj = writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
    finally:
        writer.close()
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400


def _key_days(jwk: dict[str, Any]) -> float | None:
    chain = jwk.get("x5c")
    if not isinstance(chain, list) or not chain:
        return None
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
    except (ValueError, TypeError):
        return None
    return (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400


async def _token(
    endpoint: str, config: dict[str, Any], verify: bool, wait_s: float
) -> dict[str, Any]:
    client_id = str(config.get("client_id") or "")
    secret = str(config.get("client_secret") or "")
    form = {"grant_type": "client_credentials"}
    if config.get("scope"):
        form["scope"] = str(config["scope"])
    if config.get("audience"):
        form["audience"] = str(config["audience"])
    # RFC 6749 2.3.1: the id and secret form-encoded, then HTTP Basic.
    basic = base64.b64encode(
        f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}".encode()
    ).decode()
    attempts: list[tuple[dict[str, str], dict[str, str]]] = [
        ({**form}, {"Authorization": f"Basic {basic}"}),
        ({**form, "client_id": client_id, "client_secret": secret}, {}),
    ]
    last = ""
    for data, headers in attempts:
        try:
            async with _session().post(
                endpoint,
                data=data,
                headers=headers,
                ssl=verify,
                timeout=aiohttp.ClientTimeout(total=wait_s),
            ) as resp:
                raw = await resp.content.read(MAX_DOCUMENT)
                status = resp.status
        except TimeoutError:
            raise Failed("timeout", "the token endpoint did not answer in time") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            code, message = _classify(exc)
            raise Failed(code, message) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return {"token_type": body.get("token_type"), "expires_in": body.get("expires_in")}
        error = body.get("error") if isinstance(body, dict) else None
        last = f"{status} {error or ''}".strip()
        if status not in (400, 401):
            break
    raise Failed("token_failed", f"no client-credentials token: {last}")


async def oidc_probe(check: Check) -> ProbeOutcome:
    o = check.options
    issuer = str(check.url or o.get("url") or "").rstrip("/")
    verify = o.get("ssl_verify", True) is not False
    threshold = float(o.get("tls_expiry_threshold_days") or 14)
    deadline = time.monotonic() + check.timeout
    start = time.perf_counter()
    details: dict[str, Any] = {"issuer": issuer}
    warnings: list[tuple[str, str]] = []

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    try:
        if not issuer:
            raise Failed("invalid_config", "the check has no issuer URL")
        discovery = await _get_json(
            f"{issuer}/.well-known/openid-configuration", verify, left(), "discovery_failed"
        )
        if not isinstance(discovery, dict):
            raise Failed("discovery_failed", "the discovery document is not an object")
        if str(discovery.get("issuer", "")).rstrip("/") != issuer:
            raise Failed("issuer_mismatch", f"the document's issuer is {discovery.get('issuer')!r}")
        missing = [e for e in REQUIRED_ENDPOINTS if not discovery.get(e)]
        if missing:
            raise Failed("missing_endpoint", f"the discovery document lacks {', '.join(missing)}")
        cert_days = await _cert_days(issuer, left())
        if cert_days is not None:
            details["cert_days_left"] = round(cert_days, 2)
            if cert_days < threshold:
                warnings.append(
                    ("cert_expiring", f"the certificate expires in {cert_days:.1f} days")
                )

        jwks = await _get_json(str(discovery["jwks_uri"]), verify, left(), "jwks_failed")
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list):
            raise Failed("jwks_failed", "the JWKS has no `keys` list")
        usable = [
            k
            for k in keys
            if isinstance(k, dict) and k.get("kty") in SIGNING_KTY and k.get("use", "sig") == "sig"
        ]
        details["keys"] = len(keys)
        details["signing_keys"] = len(usable)
        if not usable:
            raise Failed("no_signing_key", "the JWKS holds no usable signing key")
        key_days = [d for d in (_key_days(k) for k in usable) if d is not None]
        if key_days:
            soonest = min(key_days)
            details["key_days_left"] = round(soonest, 2)
            if all(d <= 0 for d in key_days):
                raise Failed("key_expired", "every signing key's certificate has expired")
            if soonest < threshold:
                warnings.append(("key_expiring", f"a signing key expires in {soonest:.1f} days"))

        config = o.get("oidc_config") or {}
        if isinstance(config, dict) and config.get("client_id") and config.get("client_secret"):
            details["token"] = await _token(
                str(discovery["token_endpoint"]), config, verify, left()
            )
    except Failed as exc:
        return ProbeOutcome(
            exc.status,
            exc.kind,
            str(exc)[:500],
            latency_ms=(time.perf_counter() - start) * 1e3,
            details=details,
        )
    latency_ms = (time.perf_counter() - start) * 1e3
    if warnings:
        kind, message = warnings[0]
        return ProbeOutcome(Status.DEGRADED, kind, message, latency_ms=latency_ms, details=details)
    return ProbeOutcome(Status.UP, latency_ms=latency_ms, details=details)


default_registry.register("oidc", oidc_probe)
