"""The throwaway PostgreSQL cluster the store tests run against (tests/pgcluster.py)."""

from __future__ import annotations

import pytest

from pgcluster import PgCluster

seen_databases: set[str] = set()


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_fresh_database(
    pg_cluster: PgCluster, pg_url: str, run: int
) -> None:
    assert pg_cluster.psql("select 1", pg_url) == "1"
    name = pg_url.rsplit("/", 1)[1]
    assert pg_cluster.psql("select current_database()", pg_url) == name
    assert name not in seen_databases
    # The previous run's database was dropped at its teardown.
    assert not seen_databases & set(pg_cluster.psql("select datname from pg_database").split())
    seen_databases.add(name)
    # The first run leaves a table behind; the second must not see it.
    assert (
        pg_cluster.psql("select count(*) from pg_tables where tablename = 'marker'", pg_url) == "0"
    )
    pg_cluster.psql("create table marker (run int)", pg_url)


def test_restart_keeps_data_and_port(pg_cluster: PgCluster, pg_url: str) -> None:
    pg_cluster.psql("create table kept (v text); insert into kept values ('before')", pg_url)
    port = pg_cluster.port
    pg_cluster.restart()
    assert pg_cluster.is_running()
    assert pg_cluster.port == port
    assert pg_cluster.psql("select v from kept", pg_url) == "before"
