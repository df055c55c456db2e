"""The embedded default store: one SQLite file in WAL mode, one writer connection (write
transactions take turns on it) and one reader connection (WAL lets reads proceed while
a batch is being written)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from tocsin.encryption import SecretBox
from tocsin.store import migrations
from tocsin.store.base import StoreUnavailableError
from tocsin.store.sql import Conn, SqlStore
from tocsin.store.tables import RESULT_COLUMNS

# Retention deletes in chunks so a large delete never holds the write lock for long.
DELETE_CHUNK = 50_000


class _SqliteConn(Conn):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._db.execute(sql, args) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._db.execute(sql, args) as cur:
            return int(cur.rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._db.executemany(sql, rows)


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, path: Path | str, secrets: SecretBox | None = None) -> None:
        super().__init__(secrets)
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._ro: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def _describe(self) -> str:
        return str(self.path)

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"cannot open {self.path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def open(self, *, migrate: bool = True) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await self._connect()
        self._ro = await self._connect()
        try:
            await (self._migrate() if migrate else self._check_version())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for conn in (self._ro, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._ro = None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        db = self._db
        assert db is not None, "store is not open"
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConn(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        assert self._ro is not None, "store is not open"
        yield _SqliteConn(self._ro)

    async def schema_version(self) -> int:
        assert self._ro is not None, "store is not open"
        async with self._ro.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ) as cur:
            if await cur.fetchone() is None:
                return 0
        return await super().schema_version()

    def _in(self, column: str) -> str:
        # One parameter for any number of values (SQLite caps bound parameters).
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _list(self, values: Iterable[Any]) -> Any:
        return json.dumps(list(values))

    def _json_has(self, column: str) -> str:
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = ?)"

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    async def _insert_results(self, conn: Conn, rows: list[tuple[Any, ...]]) -> None:
        await conn.executemany(
            f"INSERT INTO results ({', '.join(RESULT_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(RESULT_COLUMNS))})",
            rows,
        )

    async def _drop_results_before(self, cutoff: float) -> int:
        removed = 0
        while True:
            async with self._write() as conn:
                n = await conn.execute(
                    "DELETE FROM results WHERE id IN"
                    " (SELECT id FROM results WHERE started_at < ? LIMIT ?)",
                    cutoff,
                    DELETE_CHUNK,
                )
            removed += n
            if n < DELETE_CHUNK:
                return removed

    async def _apply_migration(self, m: migrations.Migration) -> None:
        db = self._db
        assert db is not None
        async with self._lock:
            # executescript commits on its own; wrapping the script keeps each migration
            # all-or-nothing.
            try:
                await db.executescript(
                    f"BEGIN;\n{m.sql}\nINSERT INTO schema_migrations VALUES"
                    f" ({m.version}, '{m.name}', {time.time()});\nCOMMIT;"
                )
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
