"""`database` checks against real servers on loopback: the session's PostgreSQL cluster,
a throwaway MariaDB and a throwaway Redis (tests/db_servers.py). Each up and down, wrong
credentials, a missing database, a query that fails, one that would write, a result that
matches and one that does not; then through the API: validated at create (a writing
query is 422 naming `db_query`), the password masked on read, and the check UP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from db_servers import MariaDb, Redis
from helpers import Server, api, free_port, wait_for
from pgcluster import PgCluster
from tocsin import Check, Engine, Status
from workflow_helpers import loc


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDb]:
    server = MariaDb()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_db(pg_cluster: PgCluster) -> Iterator[tuple[PgCluster, str]]:
    name = f"t_dbcheck_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    pg_cluster.psql(
        "CREATE TABLE jobs (id int, state text); INSERT INTO jobs VALUES (1, 'ok'), (2, 'ok');"
        " CREATE SEQUENCE counter;",
        pg_cluster.database_url(name),
    )
    yield pg_cluster, name
    pg_cluster.drop_database(name)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(threads=1) as e:
        yield e


def db(db_type: str, port: int, **options: Any) -> Check:
    return Check(
        id=1,
        type="database",
        timeout=5,
        options={"db_type": db_type, "db_host": "127.0.0.1", "db_port": port, **options},
    )


async def outcome(engine: Engine, check: Check) -> tuple[Status, str | None, dict[str, Any]]:
    r = await engine.run_once(check)
    return r.status, r.error_kind, r.details or {}


async def test_postgresql(engine: Engine, pg_db: tuple[PgCluster, str]) -> None:
    cluster, name = pg_db
    base = {"db_username": cluster.user, "db_name": name}
    status, kind, details = await outcome(engine, db("postgresql", cluster.port, **base))
    assert (status, kind) == (Status.UP, None) and details["server_version"]
    q = "SELECT count(*) FROM jobs WHERE state = 'ok'"
    assert (
        await outcome(
            engine, db("postgresql", cluster.port, **base, db_query=q, db_expected_result="2")
        )
    )[:2] == (Status.UP, None)
    status, kind, details = await outcome(
        engine, db("postgresql", cluster.port, **base, db_query=q, db_expected_result=">= 5")
    )
    assert (status, kind, details["result"]) == (Status.DOWN, "result_mismatch", "2")
    assert (
        await outcome(
            engine, db("postgresql", cluster.port, **base, db_query="SELECT nope FROM jobs")
        )
    )[1] == "query_error"
    # A function that writes, in the read-only transaction.
    assert (
        await outcome(
            engine, db("postgresql", cluster.port, **base, db_query="SELECT nextval('counter')")
        )
    )[1] == "read_only_violation"
    assert (
        await outcome(engine, db("postgresql", cluster.port, **base, db_query="DELETE FROM jobs"))
    )[1] == "read_only_violation"
    assert (
        await outcome(
            engine, db("postgresql", cluster.port, db_username=cluster.user, db_name="missing_db")
        )
    )[1] == "database_not_found"
    assert (await outcome(engine, db("postgresql", free_port(), **base)))[1] == "connect_refused"


async def test_mariadb(engine: Engine, mariadb: MariaDb) -> None:
    base = {
        "db_username": mariadb.user,
        "db_password": mariadb.password,
        "db_name": mariadb.database,
    }
    status, kind, details = await outcome(engine, db("mariadb", mariadb.port, **base))
    assert (status, kind) == (Status.UP, None) and "MariaDB" in details["server_version"]
    q = "SELECT SUM(total) FROM orders"
    assert (
        await outcome(
            engine, db("mysql", mariadb.port, **base, db_query=q, db_expected_result="60")
        )
    )[:2] == (Status.UP, None)
    status, kind, details = await outcome(
        engine, db("mysql", mariadb.port, **base, db_query=q, db_expected_result="< 50")
    )
    assert (status, kind, details["result"]) == (Status.DOWN, "result_mismatch", "60")
    assert (
        await outcome(engine, db("mysql", mariadb.port, **base, db_query="SELECT x FROM nothing"))
    )[1] == "query_error"
    wrong = {**base, "db_password": "wrong"}
    assert (await outcome(engine, db("mysql", mariadb.port, **wrong)))[1] == "auth_failed"
    assert (await outcome(engine, db("mysql", mariadb.port, **{**base, "db_name": "nope"})))[1] in (
        "database_not_found",
        "auth_failed",
    )
    assert (await outcome(engine, db("mysql", free_port(), **base)))[1] == "connect_refused"


async def test_redis(engine: Engine, redis_server: Redis) -> None:
    base = {"db_password": redis_server.password}
    assert (await outcome(engine, db("redis", redis_server.port, **base)))[:2] == (Status.UP, None)
    good = db(
        "redis", redis_server.port, **base, db_query="GET queue:depth", db_expected_result="< 10"
    )
    assert (await outcome(engine, good))[:2] == (Status.UP, None)
    status, kind, details = await outcome(
        engine,
        db("redis", redis_server.port, **base, db_query="GET queue:depth", db_expected_result="0"),
    )
    assert (status, kind, details["result"]) == (Status.DOWN, "result_mismatch", "7")
    assert (await outcome(engine, db("redis", redis_server.port, db_password="wrong")))[
        1
    ] == "auth_failed"
    assert (await outcome(engine, db("redis", redis_server.port)))[1] == "auth_failed"
    assert (await outcome(engine, db("redis", redis_server.port, **base, db_query="SET a b")))[
        1
    ] == "read_only_violation"
    assert (await outcome(engine, db("redis", free_port(), **base)))[1] == "connect_refused"


async def test_database_checks_through_the_api(
    tmp_path_factory: pytest.TempPathFactory,
    http: aiohttp.ClientSession,
    mariadb: MariaDb,
) -> None:
    server = Server(tmp_path_factory.mktemp("dbchecks") / "data")
    server.start()
    try:
        body = {
            "name": "orders db",
            "type": "database",
            "interval": 1,
            "timeout": 5,
            "db_type": "mariadb",
            "db_host": "127.0.0.1",
            "db_port": mariadb.port,
            "db_name": mariadb.database,
            "db_username": mariadb.user,
            "db_password": mariadb.password,
            "db_query": "SELECT COUNT(*) FROM orders",
            "db_expected_result": "3",
        }
        for bad, where in (
            ({"db_query": "DELETE FROM orders"}, "db_query"),
            ({"db_query": "SELECT 1; DROP TABLE orders"}, "db_query"),
            ({"db_type": "oracle"}, "db_type"),
            ({"db_host": ""}, "db_host"),
        ):
            code, err = await api(http, server, "POST", "/api/checks/", json={**body, **bad})
            assert code == 422 and loc(err)[-1] == where, (bad, err)
        code, check = await api(http, server, "POST", "/api/checks/", json=body)
        assert code == 200, check
        assert check["db_password"] == "******" and check["db_port"] == mariadb.port

        async def up() -> Any:
            _, c = await api(http, server, "GET", f"/api/checks/{check['id']}")
            return c if c["status"] == "UP" else None

        found = await wait_for(up)
        assert found["last_result"]["status"] == "UP"
        assert mariadb.password not in (
            await (
                await http.get(
                    server.base + f"/api/checks/{check['id']}/logs", headers=server.headers
                )
            ).text()
        )
    finally:
        server.kill()
