"""The embedded default store: one SQLite file in WAL mode, one writer connection and
one reader connection (WAL lets reads proceed while a batch is being written)."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from tocsin.models import Result, StatusChange
from tocsin.store import migrations
from tocsin.store.base import Principal, Row, Store

log = logging.getLogger("tocsin.store")

CHECK_COLUMNS = (
    "id, organization_id, project_id, uuid, name, type, description, url, interval, timeout,"
    " is_active, config, status, status_changed_at, last_result, last_checked_at,"
    " created_at, updated_at"
)


def _placeholders(values: Collection[Any]) -> str:
    return ",".join("?" * len(values))


def _check_row(row: sqlite3.Row) -> Row:
    d = dict(row)
    d["is_active"] = bool(d["is_active"])
    d["config"] = json.loads(d["config"])
    d["last_result"] = json.loads(d["last_result"]) if d["last_result"] else None
    return d


def _timings(r: Result) -> tuple[float | None, float | None, float | None, float | None]:
    t = r.timings
    if t is None:
        return (None, None, None, None)
    return (t.dns_ms, t.connect_ms, t.tls_ms, t.first_byte_ms)


def _result_json(r: Result) -> str:
    dns, connect, tls, first_byte = _timings(r)
    return json.dumps(
        {
            "status": r.status.value,
            "started_at": r.started_at,
            "latency_ms": round(r.latency_ms, 3),
            "error_kind": r.error_kind,
            "message": r.message,
            "status_code": r.status_code,
            "source": r.source,
            "timings": {
                "dns_ms": dns,
                "connect_ms": connect,
                "tls_ms": tls,
                "first_byte_ms": first_byte,
            },
            "details": r.details,
        }
    )


class SqliteStore(Store):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._ro: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    @property
    def ro(self) -> aiosqlite.Connection:
        assert self._ro is not None, "store is not open"
        return self._ro

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await self._connect()
        try:
            await self._migrate()
            self._ro = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for conn in (self._ro, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._ro = None

    async def _migrate(self) -> None:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = await self.schema_version()
        known = migrations.load("sqlite")
        latest = known[-1].version if known else 0
        if current > latest:
            raise migrations.DatabaseTooNewError(
                f"{self.path} is at schema version {current}, newer than this tocsin"
                f" (knows up to {latest}); upgrade tocsin"
            )
        for m in known[current:]:
            log.info("applying migration %04d_%s", m.version, m.name)
            # executescript commits on its own; wrapping the script keeps each
            # migration all-or-nothing.
            await self.db.executescript(
                f"BEGIN;\n{m.sql}\nINSERT INTO schema_migrations VALUES"
                f" ({m.version}, '{m.name}', {time.time()});\nCOMMIT;"
            )

    async def schema_version(self) -> int:
        async with self.db.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- identity -------------------------------------------------------------------

    async def count_users(self) -> int:
        async with self.ro.execute("SELECT COUNT(*) FROM users") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def create_user(self, email: str, password_hash: str, *, superuser: bool = False) -> int:
        cur = await self.db.execute(
            "INSERT INTO users (email, password_hash, is_superuser, created_at)"
            " VALUES (?, ?, ?, ?)",
            (email, password_hash, int(superuser), time.time()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def create_organization(self, name: str) -> Row:
        now = time.time()
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = await self.db.execute(
                "INSERT INTO organizations (name, created_at) VALUES (?, ?)", (name, now)
            )
            org_id = cur.lastrowid
            cur = await self.db.execute(
                "INSERT INTO projects (organization_id, name, is_default, created_at)"
                " VALUES (?, 'Default', 1, ?)",
                (org_id, now),
            )
            project_id = cur.lastrowid
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return {"id": org_id, "name": name, "default_project_id": project_id, "created_at": now}

    async def add_membership(self, org_id: int, user_id: int, role: str) -> None:
        await self.db.execute(
            "INSERT INTO memberships (organization_id, user_id, role) VALUES (?, ?, ?)"
            " ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role",
            (org_id, user_id, role),
        )

    async def create_token(self, user_id: int, name: str, prefix: str, token_hash: str) -> int:
        cur = await self.db.execute(
            "INSERT INTO api_tokens (user_id, name, prefix, token_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, name, prefix, token_hash, time.time()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def principal_for_token(self, token_hash: str) -> Principal | None:
        async with self.ro.execute(
            "SELECT u.id, u.email FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.token_hash = ? AND t.revoked_at IS NULL",
            (token_hash,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        async with self.ro.execute(
            "SELECT organization_id, role FROM memberships WHERE user_id = ?", (row[0],)
        ) as cur:
            roles = {int(r[0]): str(r[1]) for r in await cur.fetchall()}
        return Principal(user_id=int(row[0]), email=str(row[1]), roles=roles)

    # -- checks ---------------------------------------------------------------------

    async def default_project(self, org_id: int) -> int:
        async with self.ro.execute(
            "SELECT id FROM projects WHERE organization_id = ? AND is_default = 1", (org_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise LookupError(f"organisation {org_id} has no default project")
        return int(row[0])

    async def create_check(self, org_id: int, fields: Row) -> Row:
        now = time.time()
        project_id = fields.get("project_id") or await self.default_project(org_id)
        cur = await self.db.execute(
            "INSERT INTO checks (organization_id, project_id, uuid, name, type, description, url,"
            " interval, timeout, is_active, config, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                org_id,
                project_id,
                str(uuid.uuid4()),
                fields["name"],
                fields["type"],
                fields.get("description", ""),
                fields.get("url"),
                fields["interval"],
                fields["timeout"],
                int(fields.get("is_active", True)),
                json.dumps(fields.get("config", {})),
                now,
                now,
            ),
        )
        assert cur.lastrowid is not None
        async with self.db.execute(
            f"SELECT {CHECK_COLUMNS} FROM checks WHERE id = ?", (cur.lastrowid,)
        ) as c:
            row = await c.fetchone()
        assert row is not None
        return _check_row(row)

    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None:
        if not org_ids:
            return None
        async with self.ro.execute(
            f"SELECT {CHECK_COLUMNS} FROM checks WHERE id = ?"
            f" AND organization_id IN ({_placeholders(org_ids)})",
            (check_id, *org_ids),
        ) as cur:
            row = await cur.fetchone()
        return _check_row(row) if row else None

    async def list_checks(self, org_ids: Collection[int], *, limit: int, offset: int) -> list[Row]:
        if not org_ids:
            return []
        async with self.ro.execute(
            f"SELECT {CHECK_COLUMNS} FROM checks"
            f" WHERE organization_id IN ({_placeholders(org_ids)})"
            " ORDER BY id LIMIT ? OFFSET ?",
            (*org_ids, limit, offset),
        ) as cur:
            return [_check_row(r) for r in await cur.fetchall()]

    async def delete_check(self, org_ids: Collection[int], check_id: int) -> bool:
        if not org_ids:
            return False
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = await self.db.execute(
                "DELETE FROM checks"
                f" WHERE id = ? AND organization_id IN ({_placeholders(org_ids)})",
                (check_id, *org_ids),
            )
            deleted = cur.rowcount == 1
            if deleted:
                await self.db.execute("DELETE FROM results WHERE check_id = ?", (check_id,))
                await self.db.execute("DELETE FROM status_changes WHERE check_id = ?", (check_id,))
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return deleted

    async def all_checks(self) -> list[Row]:
        async with self.ro.execute(f"SELECT {CHECK_COLUMNS} FROM checks ORDER BY id") as cur:
            return [_check_row(r) for r in await cur.fetchall()]

    # -- results --------------------------------------------------------------------

    async def write_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> int:
        if not results and not changes:
            return 0
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            ids = {r.check_id for r in results} | {c.check_id for c in changes}
            async with db.execute(
                f"SELECT id, organization_id FROM checks WHERE id IN ({_placeholders(ids)})",
                tuple(ids),
            ) as cur:
                org_of = {int(r[0]): int(r[1]) for r in await cur.fetchall()}
            kept = [r for r in results if r.check_id in org_of]
            await db.executemany(
                "INSERT INTO results (check_id, organization_id, source, started_at, due_at,"
                " latency_ms, status, error_kind, message, status_code,"
                " dns_ms, connect_ms, tls_ms, first_byte_ms, details)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.check_id,
                        org_of[r.check_id],
                        r.source,
                        r.started_at,
                        r.due_at,
                        r.latency_ms,
                        r.status.value,
                        r.error_kind,
                        r.message,
                        r.status_code,
                        *_timings(r),
                        r.details_json,
                    )
                    for r in kept
                ],
            )
            latest: dict[int, Result] = {}
            for r in kept:
                if r.check_id not in latest or r.started_at >= latest[r.check_id].started_at:
                    latest[r.check_id] = r
            await db.executemany(
                "UPDATE checks SET last_result = ?, last_checked_at = ? WHERE id = ?",
                [(_result_json(r), r.started_at, cid) for cid, r in latest.items()],
            )
            kept_changes = [c for c in changes if c.check_id in org_of]
            await db.executemany(
                "INSERT INTO status_changes"
                " (check_id, organization_id, previous, current, at, reason, sources,"
                " in_maintenance)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        c.check_id,
                        org_of[c.check_id],
                        c.previous.value,
                        c.current.value,
                        c.at,
                        c.reason,
                        json.dumps({k: v.value for k, v in c.sources.items()}),
                        int(c.in_maintenance),
                    )
                    for c in kept_changes
                ],
            )
            # A check's status is its verdict (all sources, thresholds), which only
            # transitions change; changes arrive in order.
            await db.executemany(
                "UPDATE checks SET status = ?, status_changed_at = ? WHERE id = ?",
                [(c.current.value, c.at, c.check_id) for c in kept_changes],
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return len(kept) + len(kept_changes)

    async def list_results(
        self, org_ids: Collection[int], check_id: int, *, limit: int, before: int | None
    ) -> list[Row]:
        if not org_ids:
            return []
        cursor_clause = "AND id < ?" if before is not None else ""
        params: tuple[Any, ...] = (check_id, *org_ids)
        if before is not None:
            params += (before,)
        async with self.ro.execute(
            "SELECT id, check_id, source, started_at, due_at, latency_ms, status, error_kind,"
            " message, status_code, dns_ms, connect_ms, tls_ms, first_byte_ms, details"
            " FROM results"
            f" WHERE check_id = ? AND organization_id IN ({_placeholders(org_ids)}) {cursor_clause}"
            " ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ) as cur:
            return [dict(r) for r in await cur.fetchall()]
