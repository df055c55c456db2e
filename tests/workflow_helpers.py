"""What the organisation-workflow tests share: one `tocsin serve` per module on each
backend (a fresh PostgreSQL database for the postgresql one), and small API helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, call
from pgcluster import PgCluster


def module_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *args: str,
) -> Iterator[Server]:
    """For a module-scoped fixture parametrized over ["sqlite", "postgresql"]."""
    s = Server(tmp_path_factory.mktemp(f"{name}-{request.param}") / "data")
    db = None
    cluster: PgCluster | None = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        db = f"t_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        s.start("--database", cluster.create_database(db), *args)
    else:
        s.start(*args)
    yield s
    s.kill()
    if cluster is not None and db is not None:
        cluster.drop_database(db)


async def admin_org(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


async def user_id(http: aiohttp.ClientSession, server: Server, token: str | None = None) -> int:
    code, body = await call(http, server, "GET", "/api/profile", token or "admin")
    assert code == 200, body
    return int(body["id"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def loc(err: Any) -> list[Any]:
    """The location of a 422's first error, without its `body` head."""
    return list(err["detail"][0]["loc"][1:])
