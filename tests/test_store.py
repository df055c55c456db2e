"""The store as a database, on both backends: SQLite (a file per test) and PostgreSQL (a
database per test on the session's throwaway cluster): migrations, database URLs, and
the SQLite files' permissions. The store contract by area is in test_store_identity.py,
test_store_rows.py and test_store_checks.py; what they share is store_helpers.py."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import asyncpg
import pytest

from store_helpers import BACKENDS, make_store, raw_fetch
from tocsin.encryption import SecretBox
from tocsin.store import DatabaseTooNewError, UnsupportedDatabaseError, migrations, open_store
from tocsin.store.postgres import PostgresStore
from tocsin.store.sqlite import SqliteStore

# -- migrations --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migrations_apply_once_and_reopening_changes_nothing(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    s = make_store(backend, request, tmp_path)
    await s.open()
    version = await s.schema_version()
    assert version == len(migrations.load(s.backend))
    await s.close()
    await s.open()
    assert await s.schema_version() == version
    await s.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_database_newer_than_the_code_is_refused(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    s = make_store(backend, request, tmp_path)
    await s.open()
    async with s._write() as c:
        await c.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    await s.close()
    with pytest.raises(DatabaseTooNewError, match="999"):
        await s.open()
    with pytest.raises(DatabaseTooNewError, match="999"):
        await s.open(migrate=False)  # type: ignore[call-arg]


EARLIER = [
    pytest.param(backend, version, id=f"{backend}-from-{version}")
    for backend, name in (("sqlite", "sqlite"), ("postgres", "postgresql"))
    for version in range(1, len(migrations.load(name)))
]


@pytest.mark.parametrize(("backend", "version"), EARLIER)
async def test_an_older_database_is_upgraded_and_keeps_its_rows(
    backend: str,
    version: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend == "postgres":
        await _upgrade_postgres(version, request, tmp_path, monkeypatch)
        return
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at REAL NOT NULL)"
        )
        for m in migrations.load("sqlite")[:version]:
            db.executescript(m.sql)
            db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
        db.execute("INSERT INTO organizations (id, name, created_at) VALUES (1, 'o', 0)")
        db.execute(
            "INSERT INTO projects (id, organization_id, name, is_default, created_at)"
            " VALUES (1, 1, 'Default', 1, 0)"
        )
        db.execute(
            "INSERT INTO checks (id, organization_id, project_id, uuid, name, type, url,"
            " interval, timeout, created_at, updated_at)"
            " VALUES (1, 1, 1, 'u', 'c', 'uptime', 'http://x/', 60, 5, 0, 0)"
        )
        db.execute(
            "INSERT INTO results (check_id, organization_id, source, started_at, latency_ms,"
            " status) VALUES (1, 1, 'central', 1.0, 2.0, 'UP')"
        )
    s = SqliteStore(path, SecretBox.generate())
    await s.open()
    try:
        assert await s.schema_version() == len(migrations.load("sqlite"))
        [row] = await s.list_results([1], 1, limit=10, before=None)
        assert (row["status"], row["connect_ms"], row["details"]) == ("UP", None, None)
        check = await s.get_check([1], 1)
        assert check is not None
        assert (check["tags"], check["grace_period"], check["config"]) == ([], 60, {})
        # References survived any table rebuild and are enforced again: deleting the
        # organisation takes its checks with it.
        assert await s.delete_organization([1], 1)
        assert await s.get_check([1], 1) is None
        assert await raw_fetch(s, "SELECT id FROM checks") == []
        assert await raw_fetch(s, "SELECT id FROM invitations") == []
    finally:
        await s.close()


async def _upgrade_postgres(
    version: int, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = migrations.load("postgresql")
    # The database as a server of that version left it: only the first migrations.
    with monkeypatch.context() as m:
        m.setattr(migrations, "load", lambda backend: every[:version])
        old = make_store("postgres", request, tmp_path)
        await old.open()
        assert await old.schema_version() == version
        await old.close()
    assert isinstance(old, PostgresStore)
    conn = await asyncpg.connect(request.getfixturevalue("pg_url"))
    try:
        await conn.execute("INSERT INTO organizations (id, name, created_at) VALUES (1, 'o', 0)")
        await conn.execute(
            "INSERT INTO projects (id, organization_id, name, is_default, created_at)"
            " VALUES (1, 1, 'Default', true, 0)"
        )
        await conn.execute(
            "INSERT INTO checks (id, organization_id, project_id, uuid, name, type, url,"
            " interval, timeout, created_at, updated_at)"
            " VALUES (1, 1, 1, 'u', 'c', 'uptime', 'http://x/', 60, 5, 0, 0)"
        )
    finally:
        await conn.close()
    s = make_store("postgres", request, tmp_path)
    await s.open()
    try:
        assert await s.schema_version() == len(every)
        check = await s.get_check([1], 1)
        assert check is not None and check["name"] == "c"
        assert await raw_fetch(s, "SELECT id FROM invitations") == []
    finally:
        await s.close()


def test_database_urls_pick_the_backend_or_are_refused_clearly(tmp_path: Path) -> None:
    box = SecretBox.generate()
    assert isinstance(open_store(None, tmp_path, box), SqliteStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/x.db", tmp_path, box), SqliteStore)
    assert isinstance(open_store("postgresql://u@127.0.0.1/x", tmp_path, box), PostgresStore)
    with pytest.raises(UnsupportedDatabaseError, match="unsupported"):
        open_store("mysql://x", tmp_path, box)


async def test_the_sqlite_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "t.db"
    s = SqliteStore(path, SecretBox.generate())
    await s.open()
    try:
        await s.create_organization("o")
        for f in (path, path.with_name("t.db-wal"), path.with_name("t.db-shm")):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        await s.close()
    # An existing database left readable by everyone is tightened when opened.
    for f in tmp_path.joinpath("new").iterdir():
        f.chmod(0o644)
    await s.open()
    try:
        for f in tmp_path.joinpath("new").iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        await s.close()
