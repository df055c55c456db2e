"""The store contract, run against both backends: SQLite (a file per test) and PostgreSQL
(a database per test on the session's throwaway cluster)."""

from __future__ import annotations

import json
import sqlite3
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tocsin.encryption import SecretBox
from tocsin.models import Result, Rollup, Status, StatusChange
from tocsin.store import (
    ConflictError,
    DatabaseTooNewError,
    NotFoundError,
    Ping,
    Retention,
    UnsupportedDatabaseError,
    migrations,
    open_store,
)
from tocsin.store.postgres import PostgresStore
from tocsin.store.sql import SqlStore
from tocsin.store.sqlite import SqliteStore
from tocsin.store.tables import LINKS, TABLES

DAY = 86_400.0
NOW = 1_790_000_000.0  # a fixed "now" (2026-09-21) so day boundaries are deterministic

BACKENDS = ["sqlite", "postgres"]


def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> SqlStore:
    box = SecretBox.generate()
    if backend == "sqlite":
        return SqliteStore(tmp_path / "t.db", box)
    return PostgresStore(request.getfixturevalue("pg_url"), box)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = make_store(request.param, request, tmp_path)
    await s.open()
    yield s
    await s.close()


async def raw_fetch(store: SqlStore, sql: str) -> list[dict[str, Any]]:
    """Read the database behind the store's back (what an attacker with the file sees)."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql)]
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(store.dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def check_fields(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "uptime",
        "url": "http://127.0.0.1/",
        "interval": 60,
        "timeout": 5,
        **extra,
    }


def sketch(*buckets: tuple[int, int], zeros: int = 0) -> bytes:
    return struct.pack("<I", zeros) + b"".join(struct.pack("<hI", i, n) for i, n in buckets)


def rollup(check_id: int, start_ms: int, *, up: int = 1, down: int = 0, **kw: Any) -> Rollup:
    return Rollup(
        check_id=check_id,
        start_ms=start_ms,
        span_ms=60_000,
        runs_up=up,
        runs_down=down,
        runs_degraded=0,
        downtime_ms=kw.get("downtime_ms", 0),
        excluded_ms=0,
        incidents=kw.get("incidents", 0),
        sketch=kw.get("sketch", sketch((10, up))),
    )


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


# -- organisations and identity ----------------------------------------------------------


async def test_users_tokens_and_memberships(store: SqlStore) -> None:
    org = await store.create_organization("o")
    uid = await store.create_user("a@x", "hash", full_name="A")
    with pytest.raises(ConflictError):
        await store.create_user("a@x", "hash")
    await store.add_membership(org["id"], uid, "MEMBER")
    await store.add_membership(org["id"], uid, "ADMIN")  # a second add changes the role
    assert await store.list_members([org["id"]], org["id"]) == [
        {"user_id": uid, "email": "a@x", "full_name": "A", "role": "ADMIN"}
    ]
    live = await store.create_token(uid, "t", "pat_abcd", "h1")
    await store.create_token(uid, "old", "pat_efgh", "h2", expires_at=1.0)
    p = await store.principal_for_token("h1")
    assert p is not None and p.roles == {org["id"]: "ADMIN"}
    assert await store.principal_for_token("h2") is None  # expired
    assert [t["name"] for t in await store.list_tokens(uid)] == ["t", "old"]
    await store.touch_token("h1", 200.0)
    await store.touch_token("h1", 100.0)  # an older stamp arriving late changes nothing
    used = {t["name"]: t["last_used_at"] for t in await store.list_tokens(uid)}
    assert used == {"t": 200.0, "old": None}
    assert await store.revoke_token(uid, live)
    assert not await store.revoke_token(uid, live)
    assert await store.principal_for_token("h1") is None
    user = await store.update_user(uid, {"notification_preferences": {"email": False}})
    assert user is not None and user["notification_preferences"] == {"email": False}
    await store.update_user(uid, {"is_active": False})
    await store.create_token(uid, "t3", "pat_ijkl", "h3")
    assert await store.principal_for_token("h3") is None  # inactive users are refused


async def test_organisations_have_a_default_project_and_delete_with_everything(
    store: SqlStore,
) -> None:
    a = await store.create_organization("a")
    b = await store.create_organization("b")
    twin = await store.create_organization("a")  # names need not be unique
    assert twin["id"] not in (a["id"], b["id"])
    assert await store.delete_organization([twin["id"]], twin["id"])
    assert a["default_project_id"] == await store.default_project(a["id"])
    check = await store.create_check(a["id"], check_fields("c"))
    assert check["project_id"] == a["default_project_id"]
    await store.write_batch(
        [Result(check["id"], Status.UP, NOW, 1.0)], [], [rollup(check["id"], 0)]
    )
    await store.insert(
        "incidents", a["id"], {"title": "t", "started_at": NOW, "check_id": check["id"]}
    )
    updated = await store.update_organization([a["id"]], a["id"], {"settings": {"x": 1}})
    assert updated is not None and updated["settings"] == {"x": 1}
    assert await store.update_organization([b["id"]], a["id"], {"name": "z"}) is None
    assert not await store.delete_organization([b["id"]], a["id"])
    assert await store.delete_organization([a["id"]], a["id"])
    assert [o["id"] for o in await store.list_organizations([a["id"], b["id"]])] == [b["id"]]
    for table in ("checks", "results", "rollups", "incidents", "projects"):
        rows = await raw_fetch(
            store, f"SELECT COUNT(*) AS n FROM {table} WHERE organization_id = {a['id']}"
        )
        assert rows[0]["n"] == 0, table


# -- organisation-owned rows: every kind -------------------------------------------------


def sample(kind: str, refs: dict[str, int]) -> dict[str, Any]:
    """Minimal valid fields for each kind; `refs` supplies ids of rows it points at."""
    return {
        "projects": lambda: {"name": "p2"},
        "incidents": lambda: {"title": "down", "started_at": NOW, "check_id": refs["checks"]},
        "incident_notes": lambda: {"incident_id": refs["incidents"], "body": "looking"},
        "incident_events": lambda: {"incident_id": refs["incidents"], "kind": "opened", "at": NOW},
        "maintenance_windows": lambda: {
            "name": "w",
            "starts_at": NOW,
            "duration_s": 3600,
            "check_ids": [refs["checks"]],
        },
        "notification_channels": lambda: {"name": "n", "channel_type": "webhook", "config": {}},
        "notification_deliveries": lambda: {
            "channel_id": refs["notification_channels"],
            "event": "open",
            "dedup_key": f"k{refs['checks']}",
            "next_attempt_at": NOW,
        },
        "status_pages": lambda: {"name": "s", "slug": f"s{refs['checks']}"},
        "status_page_subscribers": lambda: {"status_page_id": refs["status_pages"], "email": "e@x"},
        "agents": lambda: {"name": "a"},
        "agent_registration_tokens": lambda: {"token_hash": f"h{refs['checks']}", "prefix": "reg_"},
        "slos": lambda: {"check_id": refs["checks"], "target_percentage": 99.9},
        "applications": lambda: {"name": "app", "key_hash": f"k{refs['checks']}", "prefix": "ck_"},
        "systems": lambda: {"name": "sys"},
        "system_groups": lambda: {"name": "grp"},
    }[kind]()


ORDER = [
    "projects",
    "incidents",
    "incident_notes",
    "incident_events",
    "maintenance_windows",
    "notification_channels",
    "notification_deliveries",
    "status_pages",
    "status_page_subscribers",
    "agents",
    "agent_registration_tokens",
    "slos",
    "applications",
    "systems",
    "system_groups",
]


def test_the_contract_covers_every_table() -> None:
    assert sorted(ORDER) == sorted(TABLES)


async def populate(store: SqlStore, org_id: int) -> dict[str, int]:
    refs: dict[str, int] = {"checks": (await store.create_check(org_id, check_fields("c")))["id"]}
    for kind in ORDER:
        refs[kind] = (await store.insert(kind, org_id, sample(kind, refs)))["id"]
    return refs


async def test_one_organisation_never_reads_or_changes_anothers_rows(store: SqlStore) -> None:
    a = (await store.create_organization("a"))["id"]
    b = (await store.create_organization("b"))["id"]
    in_a = await populate(store, a)
    in_b = await populate(store, b)
    for kind in ORDER:
        row_b = in_b[kind]
        assert await store.get(kind, [a], row_b) is None, kind
        assert await store.get(kind, [b], row_b) is not None, kind
        assert row_b not in [r["id"] for r in await store.select(kind, [a], limit=500)], kind
        # `a` sees only its own: its default project too, for projects.
        assert await store.count(kind, [a]) == (2 if kind == "projects" else 1), kind
        assert await store.update(kind, [a], row_b, {}) is None, kind
        assert not await store.delete(kind, [a], row_b), kind
        assert await store.get(kind, [b], row_b) is not None, kind
        assert await store.get(kind, [a, b], in_a[kind]) is not None, kind
        assert await store.select(kind, [], limit=10) == [], kind
    check_b = in_b["checks"]
    assert await store.get_check([a], check_b) is None
    assert await store.update_check([a], check_b, {"name": "x"}) is None
    assert not await store.delete_check([a], check_b)
    assert [c["id"] for c in await store.list_checks([a], limit=10, offset=0)] == [in_a["checks"]]
    assert await store.list_checks([], limit=10, offset=0) == []


async def test_a_write_cannot_point_at_another_organisations_row(store: SqlStore) -> None:
    a = (await store.create_organization("a"))["id"]
    b = (await store.create_organization("b"))["id"]
    in_b = await populate(store, b)
    in_a = await populate(store, a)
    for kind in ORDER:
        for col, ref in TABLES[kind].refs.items():
            with pytest.raises(NotFoundError) as err:
                await store.insert(kind, a, {**sample(kind, in_a), col: in_b[ref]})
            assert err.value.field == col, (kind, col)
            with pytest.raises(NotFoundError):
                await store.update(kind, [a], in_a[kind], {col: in_b[ref]})
    with pytest.raises(NotFoundError) as err:
        await store.create_check(a, check_fields("c", project_id=await store.default_project(b)))
    assert err.value.field == "project_id"
    for name, link in LINKS.items():
        with pytest.raises(NotFoundError):
            await store.link(name, a, in_a[link.left_table], in_b[link.right_table])
        with pytest.raises(NotFoundError):
            await store.link(name, a, in_b[link.left_table], in_a[link.right_table])
        await store.link(name, a, in_a[link.left_table], in_a[link.right_table])
        await store.link(name, a, in_a[link.left_table], in_a[link.right_table])  # idempotent
        assert await store.linked(name, [a], in_a[link.left_table]) == [in_a[link.right_table]]
        assert await store.linked(name, [b], in_a[link.left_table]) == []
        assert not await store.unlink(name, [b], in_a[link.left_table], in_a[link.right_table])
        assert await store.unlink(name, [a], in_a[link.left_table], in_a[link.right_table])


async def test_uniqueness_rules_are_conflicts_and_change_nothing(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    await store.insert("status_pages", org, {"name": "s", "slug": "status"})
    with pytest.raises(ConflictError):
        await store.insert("status_pages", org, {"name": "s2", "slug": "status"})
    first = await store.insert(
        "incidents", org, {"title": "a", "started_at": NOW, "check_id": check}
    )
    with pytest.raises(ConflictError):
        await store.insert("incidents", org, {"title": "b", "started_at": NOW, "check_id": check})
    assert await store.count("incidents", [org]) == 1
    await store.update("incidents", [org], first["id"], {"status": "RESOLVED", "resolved_at": NOW})
    await store.insert("incidents", org, {"title": "c", "started_at": NOW, "check_id": check})
    assert await store.count("incidents", [org], where={"status": "OPEN"}) == 1
    with pytest.raises(ValueError, match="cannot be filtered"):
        await store.select("incidents", [org], where={"title": "c"})
    with pytest.raises(ValueError, match="no column"):
        await store.insert("incidents", org, {"bogus": 1})


async def test_rows_round_trip_json_booleans_and_paging(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    rows = [
        await store.insert(
            "maintenance_windows",
            org,
            {"name": f"w{i}", "starts_at": NOW, "duration_s": 60, "check_ids": [i, i + 1]},
        )
        for i in range(5)
    ]
    assert rows[0]["check_ids"] == [0, 1] and rows[0]["is_active"] is True
    page = await store.select("maintenance_windows", [org], limit=2, offset=2)
    assert [r["name"] for r in page] == ["w2", "w3"]
    newest = await store.select("maintenance_windows", [org], limit=1, newest_first=True)
    assert newest[0]["name"] == "w4"
    off = await store.update("maintenance_windows", [org], rows[1]["id"], {"is_active": False})
    assert off is not None and off["is_active"] is False and off["updated_at"] >= off["created_at"]
    assert await store.count("maintenance_windows", [org], where={"is_active": False}) == 1


# -- secrets at rest ---------------------------------------------------------------------


async def test_secrets_are_encrypted_at_rest_and_read_back_in_clear(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = await store.create_check(
        org,
        check_fields(
            "c",
            config={
                "auth_method": "basic",
                "auth_username": "u",
                "auth_password": "hunter2",
                "http_headers": {"X-Api-Key": "hk-9", "Accept": "text/html"},
            },
        ),
    )
    channel = await store.insert(
        "notification_channels",
        org,
        {
            "name": "n",
            "channel_type": "email",
            "config": {"smtp_host": "h", "smtp_password": "pw-42", "nested": {"token": "tk-7"}},
        },
    )
    assert check["config"]["auth_password"] == "hunter2"
    assert check["config"]["http_headers"] == {"X-Api-Key": "hk-9", "Accept": "text/html"}
    assert channel["config"]["smtp_password"] == "pw-42"
    assert channel["config"]["nested"]["token"] == "tk-7"
    raw = json.dumps(
        [
            await raw_fetch(store, "SELECT config FROM checks"),
            await raw_fetch(store, "SELECT config FROM notification_channels"),
        ],
        default=str,
    )
    for secret in ("hunter2", "pw-42", "tk-7", "hk-9", "text/html"):
        assert secret not in raw
    # Header names stay readable; every header value is sealed.
    assert raw.count("enc:v1:") == 5 and "auth_username" in raw and "X-Api-Key" in raw
    again = await store.update_check([org], check["id"], {"config": {"auth_password": ""}})
    assert again is not None and again["config"] == {"auth_password": ""}


# -- checks ------------------------------------------------------------------------------


async def test_checks_keep_every_field_and_filter(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    full = await store.create_check(
        org,
        check_fields(
            "Shop API",
            type="tcp",
            url=None,
            host="db.internal",
            port=5432,
            tags=["prod", "eu"],
            assigned_agent_ids=[3, 4],
            geo_monitoring_enabled=True,
            check_source_critical={"agent:3": True},
            grace_period=30,
            alert_after_failures=3,
            runbook_url="https://wiki/x",
        ),
    )
    await store.create_check(org, check_fields("blog", tags=["staging"]))
    await store.create_check(org, check_fields("paused", is_active=False))
    assert full["tags"] == ["prod", "eu"] and full["assigned_agent_ids"] == [3, 4]
    assert full["geo_monitoring_enabled"] is True and full["check_source_critical"] == {
        "agent:3": True
    }
    assert (full["port"], full["grace_period"], full["alert_after_failures"]) == (5432, 30, 3)
    assert full["uuid"] and full["status"] == "UNKNOWN"
    by_uuid = await store.check_by_uuid(full["uuid"])
    assert by_uuid is not None and by_uuid["id"] == full["id"]

    async def names(**filters: Any) -> list[str]:
        rows = await store.list_checks([org], limit=10, offset=0, **filters)
        return [r["name"] for r in rows]

    assert await names(type="tcp") == ["Shop API"]
    assert await names(tag="prod") == ["Shop API"]
    assert await names(tag="pro") == []
    assert await names(text="SHOP") == ["Shop API"]
    assert await names(text="internal") == ["Shop API"]
    assert await names(text="%") == []
    # LIKE's wildcards and its escape character match only themselves.
    for name in ("abc", "a_c", "a%c", "a\\c", "aXc"):
        await store.create_check(org, check_fields(name, url=None, host=None))
    assert await names(text="a_c") == ["a_c"]
    assert await names(text="A_C") == ["a_c"]
    assert await names(text="a%c") == ["a%c"]
    assert await names(text="a\\c") == ["a\\c"]
    assert await names(text="_") == ["a_c"]
    assert await names(text="\\") == ["a\\c"]
    assert await names(text="a\\_c") == []
    assert await names(text="abc") == ["abc"]
    for name in ("abc", "a_c", "a%c", "a\\c", "aXc"):
        [row] = await store.list_checks([org], limit=1, offset=0, text=name)
        await store.delete_check([org], row["id"])
    assert await names(status="PAUSED") == ["paused"]
    assert await names(status="UNKNOWN") == ["Shop API", "blog"]
    assert await names() == ["Shop API", "blog", "paused"]
    changed = await store.update_check([org], full["id"], {"tags": [], "port": 5433})
    assert changed is not None and (changed["tags"], changed["port"]) == ([], 5433)
    assert changed["name"] == "Shop API"


# -- results, transitions, rollups -------------------------------------------------------


async def test_a_batch_stores_results_transitions_and_latest_status(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    results = [
        Result(check, Status.UP, NOW + i, 10.0 + i, due_at=NOW + i, source="central")
        for i in range(250)
    ]
    results.append(
        Result(check, Status.DOWN, NOW + 100, 5.0, error_kind="timeout", source="geo:EU")
    )
    change = StatusChange(
        check, Status.UNKNOWN, Status.UP, NOW, "first", {"central": Status.UP}, in_maintenance=True
    )
    written = await store.write_batch(results, [change])
    assert (written.results, written.changes, written.rollups) == (251, 1, 0)
    row = await store.get_check([org], check)
    assert row is not None
    assert (row["status"], row["status_changed_at"], row["last_checked_at"]) == (
        "UP",
        NOW,
        NOW + 249,
    )
    assert row["last_result"]["latency_ms"] == 259.0
    assert await store.check_sources([org], check) == {"central": "UP", "geo:EU": "DOWN"}
    # A late batch does not move the latest result or status backwards.
    await store.write_batch(
        [Result(check, Status.DOWN, NOW - 50, 1.0)],
        [StatusChange(check, Status.UP, Status.DOWN, NOW - 50)],
    )
    row = await store.get_check([org], check)
    assert row is not None and (row["status"], row["last_checked_at"]) == ("UP", NOW + 249)
    # Keyset pages: newest first, no overlap, nothing missing.
    seen: list[int] = []
    before = None
    while True:
        page = await store.list_results([org], check, limit=100, before=before)
        seen += [r["id"] for r in page]
        if len(page) < 100:
            break
        before = page[-1]["id"]
    assert len(seen) == len(set(seen)) == 252 and seen == sorted(seen, reverse=True)


async def test_results_for_a_deleted_check_do_not_fail_the_batch(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    keep = (await store.create_check(org, check_fields("keep")))["id"]
    gone = (await store.create_check(org, check_fields("gone")))["id"]
    assert await store.delete_check([org], gone)
    written = await store.write_batch(
        [Result(keep, Status.UP, NOW, 1.0), Result(gone, Status.UP, NOW, 1.0)],
        [StatusChange(gone, Status.UP, Status.DOWN, NOW)],
        [rollup(gone, 0)],
    )
    assert written.rows == 1
    assert len(await store.list_results([org], keep, limit=10, before=None)) == 1


async def test_minute_rollups_merge_into_hours_and_days(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    base = 1_789_948_800_000  # a UTC midnight, in ms
    await store.write_batch(
        [],
        [],
        [
            rollup(check, base, up=2, sketch=sketch((10, 2))),
            rollup(check, base + 60_000, up=1, down=1, downtime_ms=30_000, incidents=1),
        ],
    )
    # A later batch extends the same hour and day, and repeats a minute (a restart).
    await store.write_batch(
        [], [], [rollup(check, base + 3_600_000, up=4, sketch=sketch((10, 1), (12, 3)))]
    )
    await store.write_batch([], [], [rollup(check, base, up=1, sketch=sketch((12, 1)))])
    minutes = await store.list_rollups([org], check, "minute", since_ms=base)
    assert [(m.start_ms - base, m.runs_up) for m in minutes] == [
        (0, 3),
        (60_000, 1),
        (3_600_000, 4),
    ]
    assert minutes[0].sketch == sketch((10, 2), (12, 1))
    hours = await store.list_rollups([org], check, "hour", since_ms=base)
    assert [(h.start_ms - base, h.span_ms, h.runs_up, h.runs_down) for h in hours] == [
        (0, 3_600_000, 4, 1),
        (3_600_000, 3_600_000, 4, 0),
    ]
    [day] = await store.list_rollups([org], check, "day", since_ms=base)
    assert (day.start_ms, day.span_ms, day.runs_up, day.runs_down) == (base, 86_400_000, 8, 1)
    assert (day.downtime_ms, day.incidents) == (30_000, 1)
    assert day.sketch == sketch((10, 4), (12, 4))
    assert await store.list_rollups([org], check, "day", since_ms=base, until_ms=base) == []
    other = (await store.create_organization("x"))["id"]
    assert await store.list_rollups([other], check, "day", since_ms=0) == []
    with pytest.raises(ValueError, match="tier"):
        await store.list_rollups([org], check, "week", since_ms=0)


async def test_retention_removes_what_it_should_and_nothing_else(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    today = NOW - NOW % DAY
    ages = [0, 1, 13, 14, 15, 40]  # whole days before today
    await store.write_batch(
        [Result(check, Status.UP, today - d * DAY + 3600, 1.0) for d in ages],
        [StatusChange(check, Status.UNKNOWN, Status.UP, today - 40 * DAY)],
        [rollup(check, int((today - d * DAY) * 1000)) for d in (0, 29, 31, 364, 366, 1000)],
    )
    with pytest.raises(ValueError, match="raw_days"):
        Retention(raw_days=-1)
    await store.enforce_retention(Retention(), NOW)
    kept = await store.list_results([org], check, limit=100, before=None)
    # Raw: 14 days; the cutoff is the UTC midnight 14 days before now.
    assert sorted(round((today - r["started_at"] + 3600) / DAY) for r in kept) == [0, 1, 13, 14]

    async def days(tier: str) -> list[int]:
        rows = await store.list_rollups([org], check, tier, since_ms=0)
        return sorted(round((today * 1000 - r.start_ms) / 86_400_000) for r in rows)

    assert await days("minute") == [0, 29]
    assert await days("hour") == [0, 29, 31, 364]
    assert await days("day") == [0, 29, 31, 364, 366, 1000]
    # Transitions are history, never removed by retention.
    assert len(await raw_fetch(store, "SELECT id FROM status_changes")) == 1
    again = await store.enforce_retention(Retention(), NOW)
    assert again["raw"] == 0
    await store.enforce_retention(
        Retention(raw_days=None, minute_days=0, hour_days=0, day_days=0), NOW + DAY
    )
    assert await days("day") == []
    assert len(await store.list_results([org], check, limit=100, before=None)) == 4


# -- identity administration (the API's users, members and projects routes) --------------


async def test_principals_for_sessions_and_the_user_list(store: SqlStore) -> None:
    org = await store.create_organization("o")
    uid = await store.create_user("a@x", "hash-a", full_name="A")
    other = await store.create_user("b@x", "hash-b", superuser=True)
    await store.add_membership(org["id"], uid, "VIEWER")
    p = await store.principal_for_user(uid)
    assert p is not None and (p.email, p.roles) == ("a@x", {org["id"]: "VIEWER"})
    assert not p.superuser
    su = await store.principal_for_user(other)
    assert su is not None and su.superuser
    await store.create_token(other, "t", "pat_abcd", "su-token")
    by_token = await store.principal_for_token("su-token")
    assert by_token is not None and by_token.superuser
    assert await store.password_hash(uid) == "hash-a"
    assert await store.password_hash(999) is None
    users = await store.list_users(limit=10, offset=0)
    assert [(u["email"], u["is_superuser"]) for u in users] == [("a@x", False), ("b@x", True)]
    assert all("password_hash" not in u for u in users)
    assert [u["email"] for u in await store.list_users(limit=1, offset=1)] == ["b@x"]
    updated = await store.update_user(uid, {"is_superuser": True, "is_active": False})
    assert updated is not None and updated["is_superuser"] and not updated["is_active"]
    assert await store.principal_for_user(uid) is None  # inactive
    assert await store.principal_for_user(999) is None


async def test_an_organisation_always_keeps_an_owner(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    foreign = (await store.create_organization("f"))["id"]
    a = await store.create_user("a@x", "h")
    b = await store.create_user("b@x", "h")
    c = await store.create_user("c@x", "h")
    await store.add_membership(org, a, "OWNER")
    await store.add_membership(org, b, "MEMBER")
    with pytest.raises(ConflictError):
        await store.set_member_role([org], org, a, "ADMIN")
    with pytest.raises(ConflictError):
        await store.remove_membership([org], org, a)
    with pytest.raises(ConflictError):
        await store.delete_user(a)
    assert not await store.set_member_role([org], org, c, "ADMIN")  # not a member
    assert not await store.remove_membership([org], org, c)
    assert not await store.set_member_role([foreign], org, b, "ADMIN")  # out of scope
    assert not await store.remove_membership([foreign], org, b)
    assert await store.set_member_role([org], org, b, "OWNER")
    assert await store.set_member_role([org], org, a, "VIEWER")
    assert await store.remove_membership([org], org, a)
    assert [(m["user_id"], m["role"]) for m in await store.list_members([org], org)] == [
        (b, "OWNER")
    ]
    assert await store.delete_user(a)
    assert not await store.delete_user(a)
    assert await store.get_user(a) is None


async def test_usage_counts_and_project_deletion_rules(store: SqlStore) -> None:
    o = await store.create_organization("o")
    other = await store.create_organization("other")
    uid = await store.create_user("a@x", "h")
    await store.add_membership(o["id"], uid, "OWNER")
    project = await store.insert("projects", o["id"], {"name": "p", "is_default": False})
    empty = await store.insert("projects", o["id"], {"name": "e", "is_default": False})
    check = await store.create_check(o["id"], check_fields("c", project_id=project["id"]))
    await store.write_batch([Result(check["id"], Status.UP, NOW, 1.0)] * 3, [])
    await store.insert("agents", o["id"], {"name": "ag"})
    assert await store.organization_usage([o["id"]], o["id"]) == {
        "checks": 1,
        "results_stored": 3,
        "agents": 1,
        "projects": 3,
        "members": 1,
    }
    assert await store.organization_usage([other["id"]], o["id"]) is None
    assert (await store.organization_usage([other["id"]], other["id"]) or {})["checks"] == 0

    with pytest.raises(ConflictError):
        await store.delete_project([o["id"]], o["default_project_id"])
    with pytest.raises(ConflictError):
        await store.delete_project([o["id"]], project["id"])  # still holds a check
    assert not await store.delete_project([other["id"]], empty["id"])
    assert await store.delete_project([o["id"]], empty["id"])
    assert not await store.delete_project([o["id"]], empty["id"])
    await store.delete_check([o["id"]], check["id"])
    assert await store.delete_project([o["id"]], project["id"])


async def test_pings_are_kept_with_their_log_and_move_last_ping_at(store: SqlStore) -> None:
    a = (await store.create_organization("a"))["id"]
    b = (await store.create_organization("b"))["id"]
    check = (
        await store.create_check(
            a, {"name": "job", "type": "heartbeat", "interval": 60, "timeout": 1}
        )
    )["id"]
    assert await store.record_pings(
        [
            Ping(check, "start", NOW, rid="r1"),
            Ping(check, "exit_code", NOW + 5, exit_code=3, rid="r1", body="oops\n"),
            Ping(10_000, "success", NOW),
        ]
    ) == [True, True, False]
    pings = await store.list_pings([a], check, limit=10, before=None)
    assert [(p["kind"], p["exit_code"], p["body"]) for p in pings] == [
        ("exit_code", 3, "oops\n"),
        ("start", None, None),
    ]
    older = await store.list_pings([a], check, limit=10, before=pings[0]["id"])
    assert [p["kind"] for p in older] == ["start"]
    assert await store.list_pings([b], check, limit=10, before=None) == []
    row = await store.get_check([a], check)
    assert row is not None and row["last_ping_at"] == NOW + 5
    # Retention keeps pings as long as raw results.
    await store.enforce_retention(Retention(), NOW + 30 * DAY)
    assert await store.list_pings([a], check, limit=10, before=None) == []


# -- invitations -------------------------------------------------------------------------


async def test_invitations_are_addressed_to_an_email_and_used_once(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    other = (await store.create_organization("other"))["id"]
    owner = await store.create_user("owner@x", "h")
    invitee = await store.create_user("in@x", "h")
    stranger = await store.create_user("s@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.add_membership(other, stranger, "OWNER")
    later = NOW + 7 * DAY

    # An email with an account and one without are stored alike.
    assert await store.invite([org], org, "in@x", "MEMBER", owner, NOW, later)
    assert await store.invite([org], org, "nobody@x", "VIEWER", owner, NOW, later)
    listed = await store.list_invitations([org], org, NOW)
    assert [(i["email"], i["role"], i["invited_by"]) for i in listed] == [
        ("in@x", "MEMBER", owner),
        ("nobody@x", "VIEWER", owner),
    ]
    assert await store.list_invitations([other], org, NOW) == []  # out of scope
    with pytest.raises(NotFoundError):
        await store.invite([other], org, "x@x", "MEMBER", stranger, NOW, later)
    [mine] = await store.user_invitations(invitee, NOW)
    assert (mine["organization_id"], mine["organization_name"], mine["role"]) == (
        org,
        "o",
        "MEMBER",
    )
    assert mine["invited_by_email"] == "owner@x"
    assert await store.user_invitations(stranger, NOW) == []

    # Only the account it is addressed to can answer it.
    assert await store.accept_invitation(stranger, mine["id"], NOW) is None
    assert not await store.decline_invitation(stranger, mine["id"], NOW)
    assert await store.accept_invitation(invitee, mine["id"], later) is None  # expired
    joined = await store.accept_invitation(invitee, mine["id"], NOW)
    assert joined == {"id": mine["id"], "organization_id": org, "role": "MEMBER"}
    assert await store.accept_invitation(invitee, mine["id"], NOW) is None  # used up
    members = await store.list_members([org], org)
    assert [(m["user_id"], m["role"]) for m in members] == [(owner, "OWNER"), (invitee, "MEMBER")]
    assert [i["email"] for i in await store.list_invitations([org], org, NOW)] == ["nobody@x"]

    # A member's email is not invited again; a second invitation refreshes the first.
    assert not await store.invite([org], org, "in@x", "ADMIN", owner, NOW, later)
    assert await store.invite([org], org, "nobody@x", "ADMIN", owner, NOW, later + DAY)
    [refreshed] = await store.list_invitations([org], org, NOW)
    assert (refreshed["id"], refreshed["role"], refreshed["expires_at"]) == (
        listed[1]["id"],
        "ADMIN",
        later + DAY,
    )
    assert await store.list_invitations([org], org, NOW, email="in@x") == []
    assert await store.list_invitations([org], org, NOW, invitation_id=refreshed["id"]) == [
        refreshed
    ]

    # Revoking is scoped to the organisation.
    assert not await store.revoke_invitation([other], org, refreshed["id"])
    assert not await store.revoke_invitation([other], other, refreshed["id"])
    assert await store.revoke_invitation([org], org, refreshed["id"])
    assert not await store.revoke_invitation([org], org, refreshed["id"])


async def test_a_declined_invitation_is_hidden_from_the_account_only(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    invitee = await store.create_user("in@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.invite([org], org, "in@x", "MEMBER", owner, NOW, NOW + DAY)
    [mine] = await store.user_invitations(invitee, NOW)
    assert await store.decline_invitation(invitee, mine["id"], NOW)
    assert not await store.decline_invitation(invitee, mine["id"], NOW)
    assert await store.user_invitations(invitee, NOW) == []
    assert await store.accept_invitation(invitee, mine["id"], NOW) is None
    # The organisation still sees it pending until it expires...
    assert [i["id"] for i in await store.list_invitations([org], org, NOW)] == [mine["id"]]
    assert await store.list_invitations([org], org, NOW + DAY) == []
    # ...and inviting again offers it again.
    await store.invite([org], org, "in@x", "VIEWER", owner, NOW, NOW + DAY)
    [again] = await store.user_invitations(invitee, NOW)
    assert (again["id"], again["role"]) == (mine["id"], "VIEWER")


async def test_an_invitation_counts_while_its_inviter_may_grant_its_role(
    store: SqlStore,
) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    admin = await store.create_user("admin@x", "h")
    invitee = await store.create_user("in@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.add_membership(org, admin, "ADMIN")
    await store.invite([org], org, "in@x", "MEMBER", admin, NOW, NOW + DAY)
    await store.invite([org], org, "boss@x", "OWNER", admin, NOW, NOW + DAY)  # beyond an ADMIN
    assert [i["email"] for i in await store.list_invitations([org], org, NOW)] == ["in@x"]
    assert await store.set_member_role([org], org, admin, "MEMBER")
    assert await store.list_invitations([org], org, NOW) == []
    assert await store.user_invitations(invitee, NOW) == []
    [row] = await raw_fetch(store, "SELECT id FROM invitations WHERE email = 'in@x'")
    assert await store.accept_invitation(invitee, row["id"], NOW) is None
    assert await store.set_member_role([org], org, admin, "ADMIN")
    assert len(await store.user_invitations(invitee, NOW)) == 1
    # Removing the inviter's account removes their invitations.
    assert await store.delete_user(admin)
    assert await raw_fetch(store, "SELECT id FROM invitations") == []


async def test_invitations_go_with_their_organisation_and_a_direct_add(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    invitee = await store.create_user("in@x", "h")
    await store.add_membership(org, owner, "OWNER")
    await store.invite([org], org, "in@x", "MEMBER", owner, NOW, NOW + DAY)
    await store.invite([org], org, "other@x", "MEMBER", owner, NOW, NOW + DAY)
    # A direct add (a superuser's) uses up that account's invitation.
    await store.add_membership(org, invitee, "VIEWER")
    assert [i["email"] for i in await store.list_invitations([org], org, NOW)] == ["other@x"]
    assert await store.delete_organization([org], org)
    assert await raw_fetch(store, "SELECT id FROM invitations") == []


async def test_an_organisation_holds_a_bounded_number_of_invitations(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    owner = await store.create_user("owner@x", "h")
    await store.add_membership(org, owner, "OWNER")
    now = NOW
    for i in range(3):
        assert await store.invite([org], org, f"{i}@x", "MEMBER", owner, now, now + DAY, limit=3)
    with pytest.raises(ConflictError):
        await store.invite([org], org, "3@x", "MEMBER", owner, now, now + DAY, limit=3)
    # Refreshing one is not a new one; expired ones make room.
    assert await store.invite([org], org, "0@x", "ADMIN", owner, now, now + DAY, limit=3)
    assert await store.invite([org], org, "1@x", "ADMIN", owner, now, now - 1, limit=3)
    assert await store.invite([org], org, "3@x", "MEMBER", owner, now, now + DAY, limit=3)
    emails = [i["email"] for i in await store.list_invitations([org], org, now)]
    assert sorted(emails) == ["0@x", "2@x", "3@x"]


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


async def test_probe_text_with_nul_is_stored_the_same_on_both_backends(store: SqlStore) -> None:
    """PostgreSQL refuses U+0000 in text (and would refuse the whole batch with it):
    a probe or plugin that reports one gets U+FFFD instead, on either backend."""
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    bad = Result(
        check,
        Status.DOWN,
        NOW,
        1.0,
        error_kind="kind\x00",
        message="got \x00\x00 back",
        source="central",
    )
    good = Result(check, Status.UP, NOW + 1, 1.0, source="central")
    change = StatusChange(check, Status.UNKNOWN, Status.DOWN, NOW, "down \x00", {})
    written = await store.write_batch([bad, good], [change])
    assert written.results == 2
    rows = await store.list_results([org], check, limit=10, before=None)
    assert [(r["error_kind"], r["message"]) for r in rows] == [
        (None, None),
        ("kind\ufffd", "got \ufffd\ufffd back"),
    ]
