"""The SQLite store: migrations, organisation scoping, batched result writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tocsin.models import Result, Status, StatusChange
from tocsin.store import DatabaseTooNewError, UnsupportedDatabaseError, open_store
from tocsin.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "t.db")
    await s.open()
    yield s
    await s.close()


def check_fields(name: str) -> dict:
    return {
        "name": name,
        "type": "uptime",
        "url": "http://127.0.0.1/",
        "interval": 60,
        "timeout": 5,
    }


async def test_migrations_apply_once_and_reopening_changes_nothing(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "m.db")
    await s.open()
    version = await s.schema_version()
    assert version >= 1
    await s.close()
    await s.open()
    assert await s.schema_version() == version
    await s.close()


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "n.db")
    await s.open()
    await s.close()
    with sqlite3.connect(tmp_path / "n.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    with pytest.raises(DatabaseTooNewError, match="999"):
        await s.open()


async def test_an_older_database_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    from tocsin.store import migrations

    first = migrations.load("sqlite")[0]
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.executescript(first.sql)
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO schema_migrations VALUES (1, 'initial', 0)")
        db.execute("INSERT INTO organizations VALUES (1, 'o', 0)")
        db.execute("INSERT INTO projects VALUES (1, 1, 'Default', 1, 0)")
        db.execute(
            "INSERT INTO checks (id, organization_id, project_id, uuid, name, type, url,"
            " interval, timeout, created_at, updated_at)"
            " VALUES (1, 1, 1, 'u', 'c', 'uptime', 'http://x/', 60, 5, 0, 0)"
        )
        db.execute(
            "INSERT INTO results (check_id, organization_id, source, started_at, latency_ms,"
            " status) VALUES (1, 1, 'central', 1.0, 2.0, 'UP')"
        )
    s = SqliteStore(tmp_path / "old.db")
    await s.open()
    try:
        assert await s.schema_version() == len(migrations.load("sqlite"))
        [row] = await s.list_results([1], 1, limit=10, before=None)
        assert (row["status"], row["connect_ms"], row["details"]) == ("UP", None, None)
    finally:
        await s.close()


def test_unsupported_database_urls_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedDatabaseError, match="PostgreSQL"):
        open_store("postgresql://localhost/x", tmp_path)
    with pytest.raises(UnsupportedDatabaseError, match="unsupported"):
        open_store("mysql://x", tmp_path)


async def test_one_organisation_never_sees_anothers_checks_or_results(store: SqliteStore) -> None:
    a = await store.create_organization("a")
    b = await store.create_organization("b")
    ca = await store.create_check(a["id"], check_fields("in-a"))
    cb = await store.create_check(b["id"], check_fields("in-b"))
    await store.write_batch(
        [
            Result(ca["id"], Status.UP, 1.0, 2.0),
            Result(cb["id"], Status.DOWN, 1.0, 2.0, error_kind="timeout"),
        ],
        [StatusChange(cb["id"], Status.UNKNOWN, Status.DOWN, 1.0, "timeout")],
    )
    assert [c["name"] for c in await store.list_checks([a["id"]], limit=10, offset=0)] == ["in-a"]
    assert await store.get_check([a["id"]], cb["id"]) is None
    assert await store.list_results([a["id"]], cb["id"], limit=10, before=None) == []
    assert not await store.delete_check([a["id"]], cb["id"])
    assert await store.get_check([b["id"]], cb["id"]) is not None
    row = await store.get_check([b["id"]], cb["id"])
    assert row is not None
    assert row["status"] == "DOWN" and row["status_changed_at"] == 1.0
    assert await store.list_checks([], limit=10, offset=0) == []


async def test_results_for_a_deleted_check_do_not_fail_the_batch(store: SqliteStore) -> None:
    org = await store.create_organization("o")
    keep = await store.create_check(org["id"], check_fields("keep"))
    gone = await store.create_check(org["id"], check_fields("gone"))
    assert await store.delete_check([org["id"]], gone["id"])
    written = await store.write_batch(
        [Result(keep["id"], Status.UP, 1.0, 1.0), Result(gone["id"], Status.UP, 1.0, 1.0)], []
    )
    assert written == 1
    assert len(await store.list_results([org["id"]], keep["id"], limit=10, before=None)) == 1
