"""The embedded default store: one SQLite file in WAL mode, one writer connection (write
transactions take turns on it) and reader connections (WAL lets reads proceed while a
batch is being written).

Each connection lives on its own thread. A read is one hop to it and back (aiosqlite
takes three per query, which made a point read cost ~0.6 ms); in a write transaction the
statements that answer nothing (BEGIN, inserts and updates sent with `executemany` or
`execute_later`) wait and go with the next one that answers (a fetch, an `execute`, the
COMMIT), so a batch costs one or two hops, and an error they cause is raised there. Point reads by
key (a check, a token) take no hop at all: they run on the event loop's thread on a
connection of their own, which a WAL reader can do without waiting for writers; one that
would wait is sent to the reader thread instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tocsin.encryption import SecretBox
from tocsin.store import migrations
from tocsin.store.base import StoreUnavailableError
from tocsin.store.sql import Conn, SqlStore
from tocsin.store.tables import RESULT_COLUMNS

# Retention deletes in chunks so a large delete never holds the write lock for long.
DELETE_CHUNK = 50_000
# How long a write waits for another process's lock; a point read on the loop's thread
# waits far less and goes to the reader thread when it would wait.
BUSY_TIMEOUT_S = 5.0
INLINE_BUSY_TIMEOUT_S = 0.02

T = TypeVar("T")
log = logging.getLogger("tocsin.store")


def _fetch(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    cur = db.execute(sql, args)
    try:
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur]
    finally:
        cur.close()


def _execute(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> int:
    cur = db.execute(sql, args)
    try:
        return int(cur.rowcount)
    finally:
        cur.close()


def _executemany(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    db.executemany(sql, rows).close()


# A statement sent later (`_WriteConn`): (many, sql, args or rows).
_Queued = tuple[bool, str, Sequence[Any]]


def _send_then(
    db: sqlite3.Connection,
    queued: Sequence[_Queued],
    fn: Callable[..., T] | None,
    args: tuple[Any, ...],
) -> T | None:
    """The queued statements in order, then `fn(db, *args)`: one trip to the thread."""
    for many, sql, values in queued:
        if many:
            db.executemany(sql, values).close()
        else:
            db.execute(sql, values).close()
    return None if fn is None else fn(db, *args)


def _rollback_if_open(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK").close()


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(
            path, isolation_level=None, timeout=busy_timeout, check_same_thread=False
        )
    except sqlite3.OperationalError as exc:
        raise StoreUnavailableError(f"cannot open {path}: {exc}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return db


# The database and its -wal/-shm files: readable by the server's account only.
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite then creates its -wal
    and -shm files with the database's mode), and tighten an existing database and its
    -wal/-shm files to 0600. A directory it has to create is 0700."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise StoreUnavailableError(f"cannot open {path}: {exc}") from None
    try:
        _tighten(path, lambda mode: os.fchmod(fd, mode), os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        try:
            mode = side.stat().st_mode
        except FileNotFoundError:
            continue
        _tighten(side, side.chmod, mode)


def _tighten(path: Path, chmod: Callable[[int], None], mode: int) -> None:
    if not stat.S_IMODE(mode) & ~FILE_MODE:
        return
    try:
        chmod(FILE_MODE)
    except PermissionError as exc:  # another account's file: it is theirs to tighten
        log.warning("cannot make %s private (mode %o): %s", path, stat.S_IMODE(mode), exc)


class _Worker:
    """One thread and the connection it owns."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._db = await self.call(_connect, self._path, BUSY_TIMEOUT_S)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on the connection's thread."""
        db = self._db
        assert db is not None, "store is not open"
        return await self.call(fn, db, *args)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self.call(db.close)
        self._pool.shutdown(wait=False)


class _ThreadConn(Conn):
    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self._worker.run(_fetch, sql, args)

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._worker.run(_execute, sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._worker.run(_executemany, sql, rows)


class _WriteConn(Conn):
    """A write transaction's connection. PERF: statements that answer nothing
    (`executemany`, `execute_later`, and the BEGIN) wait and go to the writer's thread
    with the next one that answers something, the COMMIT at the latest: each trip to
    the thread waits for a busy event loop to come back to it, so a batch of inserts
    and updates costs one or two trips, not one per statement."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._queued: list[_Queued] = [(False, "BEGIN IMMEDIATE", ())]

    async def _send(self, fn: Callable[..., T] | None, *args: Any) -> T | None:
        queued, self._queued = self._queued, []
        return await self._worker.run(_send_then, queued, fn, args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self._send(_fetch, sql, args)
        assert rows is not None
        return rows

    async def execute(self, sql: str, *args: Any) -> int:
        count = await self._send(_execute, sql, args)
        assert count is not None
        return count

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._queued.append((True, sql, list(rows)))  # sent later: what was given now

    async def execute_later(self, sql: str, *args: Any) -> None:
        self._queued.append((False, sql, tuple(args)))

    async def commit(self) -> None:
        self._queued.append((False, "COMMIT", ()))
        await self._send(None)

    async def rollback(self) -> None:
        """Whatever was sent is undone; what was not is dropped."""
        self._queued = []
        await self._worker.run(_rollback_if_open)


class _InlineConn(Conn):
    """Reads on the event loop's thread; a read that would wait for a lock goes to the
    reader thread."""

    def __init__(self, db: sqlite3.Connection, fallback: _Worker) -> None:
        self._db = db
        self._fallback = fallback

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            return _fetch(self._db, sql, args)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        return await self._fallback.run(_fetch, sql, args)

    async def execute(self, sql: str, *args: Any) -> int:
        raise TypeError("point reads do not write")

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise TypeError("point reads do not write")


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, path: Path | str, secrets: SecretBox | None = None) -> None:
        super().__init__(secrets)
        self.path = Path(path)
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None
        self._inline: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _describe(self) -> str:
        return str(self.path)

    async def open(self, *, migrate: bool = True) -> None:
        private_file(self.path)
        self._writer = _Worker(self.path, "tocsin-sqlite-write")
        self._reader = _Worker(self.path, "tocsin-sqlite-read")
        try:
            await self._writer.open()
            await self._reader.open()
            self._inline = _connect(self.path, INLINE_BUSY_TIMEOUT_S)
            await (self._migrate() if migrate else self._check_version())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
        for worker in (self._reader, self._writer):
            if worker is not None:
                await worker.close()
        self._writer = self._reader = None
        self._inline = None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        worker = self._writer
        assert worker is not None, "store is not open"
        self.writes += 1
        async with self._lock:
            conn = _WriteConn(worker)
            try:
                yield conn
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        assert self._reader is not None, "store is not open"
        self.reads += 1
        yield _ThreadConn(self._reader)

    @contextlib.asynccontextmanager
    async def _read_point(self) -> AsyncIterator[Conn]:
        assert self._inline is not None, "store is not open"
        assert self._reader is not None, "store is not open"
        self.reads += 1
        yield _InlineConn(self._inline, self._reader)

    async def schema_version(self) -> int:
        assert self._reader is not None, "store is not open"
        found = await self._reader.run(
            _fetch,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            (),
        )
        if not found:
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
        worker = self._writer
        assert worker is not None
        async with self._lock:
            await worker.run(_migrate_script, m)


# A migration that rebuilds a table others refer to says so on its first line: it runs
# with foreign key enforcement off (else dropping the old table would cascade), and the
# references are checked before it commits.
FOREIGN_KEYS_OFF = "-- tocsin: foreign-keys-off"


def _migrate_script(db: sqlite3.Connection, m: migrations.Migration) -> None:
    fk_off = m.sql.startswith(FOREIGN_KEYS_OFF)
    if fk_off:
        db.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: before BEGIN
    try:
        # executescript commits what is pending first; the script's own BEGIN keeps the
        # migration all-or-nothing.
        db.executescript(f"BEGIN;\n{m.sql}\n")
        if fk_off:
            broken = db.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration {m.version} breaks references: {broken[:5]}")
        db.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)", (m.version, m.name, time.time())
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        if fk_off:
            db.execute("PRAGMA foreign_keys=ON")
