"""`oidc` checks against a real OpenID Connect provider on loopback
(tests/oidc_provider.py): discovery, JWKS and a client-credentials token; an issuer
that does not match, a missing endpoint, wrong client credentials, a signing key about
to expire, the provider down, its TLS certificate about to expire (trustme); then
through the API, with the client secret masked and kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, wait_for
from oidc_provider import OidcProvider
from probe_servers import make_pki, server_context
from tocsin import Check, Engine, Status


def oidc(provider: OidcProvider, **options: Any) -> Check:
    return Check(id=1, type="oidc", url=provider.issuer, timeout=5, options=options)


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    p = OidcProvider()
    await p.start()
    yield p
    await p.stop()


async def test_a_provider_is_judged_as_its_clients_need_it(provider: OidcProvider) -> None:
    client = {"client_id": "monitor", "client_secret": "monitor-secret"}
    async with Engine(threads=1) as engine:
        r = await engine.run_once(oidc(provider, oidc_config=client))
        assert r.status is Status.UP, (r.error_kind, r.message)
        assert r.details["signing_keys"] == 1 and r.details["token"]["token_type"] == "Bearer"
        assert provider.tokens_issued == 1

        r = await engine.run_once(oidc(provider, oidc_config={**client, "client_secret": "x"}))
        assert (r.status, r.error_kind) == (Status.DOWN, "token_failed")
        assert "monitor-secret" not in repr((r.message, r.details))

        provider.issuer_override = "https://someone.else"
        r = await engine.run_once(oidc(provider))
        assert (r.status, r.error_kind) == (Status.DOWN, "issuer_mismatch")
        provider.issuer_override = None
        provider.hide = {"jwks_uri"}
        r = await engine.run_once(oidc(provider))
        assert (r.status, r.error_kind) == (Status.DOWN, "missing_endpoint")
        provider.hide = set()

        r = await engine.run_once(oidc(provider, tls_expiry_threshold_days=400))
        assert (r.status, r.error_kind) == (Status.DEGRADED, "key_expiring")

        await provider.stop()
        r = await engine.run_once(oidc(provider))
        assert (r.status, r.error_kind) == (Status.DOWN, "connect_refused")


async def test_the_issuers_certificate_is_judged(tmp_path: Path) -> None:
    pki = make_pki()
    p = OidcProvider(ssl_context=server_context(pki.expiring))
    await p.start()
    try:
        async with Engine(threads=1, extra_ca_pem=pki.ca_pem) as engine:
            trusted = oidc(p, ssl_verify=False)
            r = await engine.run_once(trusted)
            assert (r.status, r.error_kind) == (Status.DEGRADED, "cert_expiring"), r.message
            assert r.details["cert_days_left"] < 14
    finally:
        await p.stop()


async def test_oidc_checks_through_the_api(
    tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession, provider: OidcProvider
) -> None:
    server = Server(tmp_path_factory.mktemp("oidc") / "data")
    server.start()
    try:
        body = {
            "name": "sso",
            "type": "oidc",
            "url": provider.issuer,
            "interval": 1,
            "oidc_config": {"client_id": "monitor", "client_secret": "monitor-secret"},
        }
        code, check = await api(http, server, "POST", "/api/checks/", json=body)
        assert code == 200, check
        assert check["oidc_config"]["client_secret"] == "******"

        async def up() -> Any:
            _, c = await api(http, server, "GET", f"/api/checks/{check['id']}")
            return c if c["status"] == "UP" else None

        await wait_for(up)
        code, again = await api(http, server, "PUT", f"/api/checks/{check['id']}", json=check)
        assert code == 200, again
        before = provider.tokens_issued
        await wait_for(lambda: _issued(provider, before))
        code, err = await api(http, server, "POST", "/api/checks/", json={**body, "url": "ftp://x"})
        assert code == 422 and err["detail"][0]["loc"][-1] == "url", err
        assert "monitor-secret" not in server.log.read_text()
    finally:
        server.kill()


async def _issued(provider: OidcProvider, before: int) -> bool:
    return provider.tokens_issued > before + 1
