"""`tls` checks through the API: created with their settings validated (422 naming the
field), probed by the server's native TLS probe against real TLS servers on loopback
with trustme certificates (trusted through `--extra-ca-file`): UP for a valid
certificate, DEGRADED when it expires within the threshold, DOWN for an expired one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from helpers import Server, api, wait_for
from probe_servers import HttpApp, Pki, Site, make_pki, server_context


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def shared(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("tls-checks")
    ca = Path(base / "ca.pem")
    ca.write_text(pki.ca_pem)
    s = Server(base / "data")
    s.start("--extra-ca-file", str(ca))
    yield s
    s.kill()


@pytest_asyncio.fixture
async def sites(pki: Pki) -> AsyncIterator[dict[str, Site]]:
    app = HttpApp()
    out = {
        name: Site(app, server_context(getattr(pki, name)))
        for name in ("valid", "expiring", "expired")
    }
    for s in out.values():
        await s.start()
    yield out
    for s in out.values():
        await s.stop()


async def tls_check(http: aiohttp.ClientSession, server: Server, port: int, **kw: Any) -> Any:
    body = {"name": "cert", "type": "tls", "host": "localhost", "port": port, "interval": 1, **kw}
    code, check = await api(http, server, "POST", "/api/checks/", json=body)
    assert code == 200, check
    return check


async def status_of(http: aiohttp.ClientSession, server: Server, check_id: int, want: str) -> Any:
    async def reached() -> Any:
        code, check = await api(http, server, "GET", f"/api/checks/{check_id}")
        assert code == 200, check
        return check if check["status"] == want else None

    return await wait_for(reached)


async def test_tls_checks_judge_the_certificate(
    shared: Server, http: aiohttp.ClientSession, sites: dict[str, Site]
) -> None:
    valid = await tls_check(http, shared, sites["valid"].port)
    assert valid["tls_expiry_threshold_days"] == 14 and valid["tls_server_name"] == ""
    checked = await status_of(http, shared, valid["id"], "UP")
    assert checked["last_result"]["status"] == "UP"
    expiring = await tls_check(http, shared, sites["expiring"].port, tls_expiry_threshold_days=30)
    await status_of(http, shared, expiring["id"], "DEGRADED")
    expired = await tls_check(http, shared, sites["expired"].port)
    down = await status_of(http, shared, expired["id"], "DOWN")
    assert down["last_result"]["error_kind"], down


async def test_tls_settings_are_validated(shared: Server, http: aiohttp.ClientSession) -> None:
    for body, field in (
        ({"host": ""}, "host"),
        ({"host": "localhost", "port": 70000}, "port"),
        ({"host": "localhost", "tls_expiry_threshold_days": 5000}, "tls_expiry_threshold_days"),
        ({"host": "localhost", "ssl_verify": "no"}, "ssl_verify"),
    ):
        code, err = await api(
            http, shared, "POST", "/api/checks/", json={"name": "x", "type": "tls", **body}
        )
        assert code == 422, (body, err)
        assert err["detail"][0]["loc"][-1] == field, (body, err)
    # Port 0 (a client's zero value) is the default.
    code, check = await api(
        http,
        shared,
        "POST",
        "/api/checks/",
        json={"name": "x", "type": "tls", "host": "a.test", "port": 0},
    )
    assert code == 200 and check["port"] == 443, check
