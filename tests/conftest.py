"""Shared fixtures: real HTTP targets, real `tocsin serve` processes on loopback, on
SQLite or (for tests marked `both_backends`) on each backend in turn, and a throwaway
PostgreSQL cluster. Helpers that are not fixtures are in helpers.py."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, Target, stream_opener
from pgcluster import PgCluster, new_base_dir

# The backends `tocsin serve` runs on, as `backend` takes them (and test ids show them).
BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_backends: run the test once on each backend in BACKENDS (ids [sqlite] and "
        "[postgresql]); its `server`, and fixtures built on it, follow `backend`.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_backends") is None:
        return
    if "backend" not in metafunc.fixturenames:
        raise TypeError(
            f"{metafunc.definition.nodeid} is marked both_backends but uses no fixture "
            "that follows `backend` (such as `server`)"
        )
    metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    """The backend `server` runs on: SQLite, unless the test is marked `both_backends`
    (then each of BACKENDS in turn)."""
    return "sqlite"


@pytest.fixture
def database_args(backend: str, request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The `tocsin serve` arguments that put a server on `backend`: none for SQLite (a
    file in the data directory), `--database` and a fresh database for PostgreSQL."""
    if backend == "postgresql":
        return ("--database", request.getfixturevalue("pg_url"))
    assert backend == "sqlite", backend
    return ()


@pytest.fixture
def server(tmp_path: Path, database_args: tuple[str, ...]) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    s.start(*database_args)
    yield s
    s.kill()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.start()
    yield t
    await t.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sse(http: aiohttp.ClientSession) -> Any:
    """`async with sse(server, "?heartbeat=1", token=…) as stream:` (see helpers.py)."""
    return stream_opener(http)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL server for the whole session (see tests/pgcluster.py)."""
    # Not tmp_path_factory: pytest's temp root is 0700, closed to the server account
    # that runs the cluster when the tests run as root.
    base = new_base_dir()
    try:
        cluster = PgCluster(base)
        cluster.start()
    except RuntimeError as e:
        shutil.rmtree(base, ignore_errors=True)
        # Not a skip: scripts/test.sh installs PostgreSQL, so its absence is a broken setup.
        pytest.fail(f"cannot run the PostgreSQL test cluster: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh database, private to this test and dropped after it."""
    # The test name in the database name helps when reading server logs; the suffix keeps
    # it unique across parametrizations and reruns.
    hint = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    name = f"t_{hint}_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_database(name)
    yield url
    pg_cluster.drop_database(name)
