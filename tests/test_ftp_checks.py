"""`ftp` checks against real servers on loopback (tests/ftp_servers.py): plain FTP,
explicit FTPS with a trustme certificate, and SFTP — logged in, a path that exists (with
its size and age judged), one that does not, wrong credentials, a server that is down,
an untrusted certificate; then through the API with the password masked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ftp_servers import PASSWORD, USER, Ftp, Sftp
from helpers import Server, api, free_port, wait_for
from probe_servers import Pki, make_pki
from tocsin import Check, Engine, Status


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def ftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ftp]:
    server = Ftp(tmp_path_factory.mktemp("ftp") / "root")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ftps(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Ftp]:
    server = Ftp(tmp_path_factory.mktemp("ftps") / "root", pki.expiring)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def sftp(tmp_path: Path) -> AsyncIterator[Sftp]:
    server = Sftp(tmp_path / "root")
    await server.start()
    yield server
    await server.stop()


def check(port: int, **options: Any) -> Check:
    return Check(
        id=1,
        type="ftp",
        host="127.0.0.1",
        port=port,
        timeout=5,
        options={"ftp_username": USER, "ftp_password": PASSWORD, **options},
    )


async def run(c: Check) -> tuple[Status, str | None, dict[str, Any]]:
    async with Engine(threads=1) as engine:
        r = await engine.run_once(c)
    return r.status, r.error_kind, r.details or {}


async def test_plain_ftp(ftp: Ftp) -> None:
    status, kind, details = await run(
        check(ftp.port, ftp_path="/backup.tar", ftp_min_size_bytes=1000)
    )
    assert (status, kind) == (Status.UP, None) and details["size"] == 1024
    assert (await run(check(ftp.port, ftp_path="/backup.tar", ftp_min_size_bytes=5000)))[
        1
    ] == "file_too_small"
    assert (await run(check(ftp.port, ftp_path="/old.log", ftp_max_age_minutes=60)))[
        1
    ] == "file_too_old"
    assert (await run(check(ftp.port, ftp_path="/missing.tar")))[1] == "path_not_found"
    assert (await run(check(ftp.port, ftp_password="wrong")))[1] == "auth_failed"
    assert (await run(check(free_port())))[1] == "connect_refused"


async def test_explicit_ftps_judges_the_certificate(ftps: Ftp) -> None:
    # The certificate is issued by the test CA (not trusted by the system) and expires
    # in 3 days: untrusted when verified, DEGRADED for its expiry when not.
    assert (await run(check(ftps.port, ftp_protocol="ftps")))[1] == "tls_error"
    status, kind, details = await run(
        check(ftps.port, ftp_protocol="ftps", ssl_verify=False, ftp_path="/backup.tar")
    )
    assert (status, kind) == (Status.DEGRADED, "cert_expiring"), details
    assert details["cert_days_left"] < 14 and details["size"] == 1024
    # Plain FTP against a server that demands TLS is refused at login.
    assert (await run(check(ftps.port)))[0] is Status.DOWN


async def test_sftp(sftp: Sftp) -> None:
    status, kind, details = await run(
        check(sftp.port, ftp_protocol="sftp", ftp_path="/backup.tar", ftp_min_size_bytes=1024)
    )
    assert (status, kind) == (Status.UP, None), details
    assert details["size"] == 1024
    assert (await run(check(sftp.port, ftp_protocol="sftp", ftp_path="/nope")))[
        1
    ] == "path_not_found"
    assert (await run(check(sftp.port, ftp_protocol="sftp", ftp_password="wrong")))[
        1
    ] == "auth_failed"


async def test_ftp_checks_through_the_api(
    tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession, ftp: Ftp
) -> None:
    server = Server(tmp_path_factory.mktemp("ftpapi") / "data")
    server.start()
    try:
        body = {
            "name": "backups",
            "type": "ftp",
            "host": "127.0.0.1",
            "port": ftp.port,
            "interval": 1,
            "ftp_username": USER,
            "ftp_password": PASSWORD,
            "ftp_path": "/backup.tar",
        }
        code, err = await api(
            http, server, "POST", "/api/checks/", json={**body, "ftp_passive": False}
        )
        assert code == 422 and err["detail"][0]["loc"][-1] == "ftp_passive", err
        code, err = await api(
            http, server, "POST", "/api/checks/", json={**body, "ftp_protocol": "tftp"}
        )
        assert code == 422 and err["detail"][0]["loc"][-1] == "ftp_protocol", err
        code, created = await api(http, server, "POST", "/api/checks/", json=body)
        assert code == 200 and created["ftp_password"] == "******", created

        async def up() -> Any:
            _, c = await api(http, server, "GET", f"/api/checks/{created['id']}")
            return c if c["status"] == "UP" else None

        await wait_for(up)
        code, sftp_default = await api(
            http,
            server,
            "POST",
            "/api/checks/",
            json={**body, "ftp_protocol": "sftp", "port": 0, "is_active": False},
        )
        assert code == 200 and sftp_default["port"] == 22
        assert PASSWORD not in server.log.read_text()
    finally:
        server.kill()
