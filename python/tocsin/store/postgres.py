"""PostgreSQL through asyncpg, for fleets that outgrow one file: a connection pool, raw
results written with COPY into a table partitioned by day (retention drops whole
partitions), migrations serialised across processes by an advisory lock."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import asyncpg
import asyncpg.exceptions as pgerr

from tocsin.encryption import SecretBox
from tocsin.models import Result, Rollup, StatusChange
from tocsin.store import migrations
from tocsin.store.base import BatchWritten, StoreUnavailableError
from tocsin.store.sql import DAY, LATEST_SET, Conn, SqlStore, day_floor
from tocsin.store.tables import RESULT_COLUMNS

log = logging.getLogger("tocsin.store")

_PLACEHOLDER = re.compile(r"\?")
_PARTITION = re.compile(r"^results_p(\d{8})$")
MIGRATION_LOCK = 7_415_001  # pg_advisory_lock key: one migrator at a time

# Errors that mean "the database is not reachable", not "the statement is wrong".
UNAVAILABLE = (
    OSError,
    TimeoutError,
    pgerr.PostgresConnectionError,
    pgerr.InterfaceError,
    pgerr.CannotConnectNowError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.TooManyConnectionsError,
)

_converted: dict[str, str] = {}

# One array parameter per results column (RESULT_COLUMNS order), for unnest().
RESULT_ARRAYS = (
    "?::bigint[], ?::bigint[], ?::text[], ?::float8[], ?::float8[], ?::float8[], ?::text[],"
    " ?::text[], ?::text[], ?::int[], ?::float8[], ?::float8[], ?::float8[], ?::float8[],"
    " ?::text[]"
)


def _sql(query: str) -> str:
    """`?` placeholders to PostgreSQL's `$n` (cached: the store's queries are few)."""
    out = _converted.get(query)
    if out is None:
        counter = iter(range(1, 10_000))
        out = _PLACEHOLDER.sub(lambda _: f"${next(counter)}", query)
        _converted[query] = out
    return out


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgConn(Conn):
    def __init__(self, conn: Any) -> None:
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.raw.fetch(_sql(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self.raw.execute(_sql(sql), *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self.raw.executemany(_sql(sql), rows)


def _partition_name(day_start: float) -> str:
    return "results_p" + dt.datetime.fromtimestamp(day_start, dt.UTC).strftime("%Y%m%d")


class PostgresStore(SqlStore):
    backend = "postgresql"

    def __init__(
        self,
        dsn: str,
        secrets: SecretBox | None = None,
        *,
        min_size: int = 0,
        max_size: int = 10,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(secrets)
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = connect_timeout
        self._partitions: set[float] = set()

    def _describe(self) -> str:
        # Never the password.
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.dsn)

    async def open(self, *, migrate: bool = True) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                command_timeout=60,
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(f"cannot connect to {self._describe()}: {exc}") from None
        try:
            await (self._migrate() if migrate else self._check_version())
            if await self.schema_version() > 0:
                now = time.time()
                await self._ensure_partitions([now, now + DAY])
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        # (a pool's connection proxy: asyncpg.Connection's interface)
        assert self._pool is not None, "store is not open"
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except UNAVAILABLE as exc:
            raise StoreUnavailableError(f"{self._describe()} is unavailable: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        self.writes += 1
        async with self._connection() as conn, conn.transaction():
            yield _PgConn(conn)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        self.reads += 1
        async with self._connection() as conn:
            yield _PgConn(conn)

    async def schema_version(self) -> int:
        async with self._read() as c:
            exists = await c.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        return await super().schema_version() if exists else 0

    async def _migrate(self) -> None:
        # Several servers may start at once against one database: one migrates, the
        # others wait and then find nothing left to do.
        async with self._connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await super()._migrate()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def _apply_migration(self, m: migrations.Migration) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)", m.version, m.name, time.time()
            )

    def _in(self, column: str) -> str:
        return f"{column} = ANY(?::bigint[])"

    def _list(self, values: Iterable[Any]) -> Any:
        return list(values)

    def _json_has(self, column: str) -> str:
        return f"jsonb_exists({column}, ?)"

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, pgerr.UniqueViolationError)

    async def _ensure_partitions(self, times: Iterable[float]) -> None:
        missing = {day_floor(t) for t in times} - self._partitions
        if not missing:
            return
        async with self._connection() as conn:
            for day in sorted(missing):
                name = _partition_name(day)
                # NOTE: outside the batch's transaction: creating a partition locks the
                # parent table, and that must not last as long as a batch.
                with contextlib.suppress(pgerr.DuplicateTableError):
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF results"
                        f" FOR VALUES FROM ({day!r}) TO ({day + DAY!r})"
                    )
                self._partitions.add(day)

    async def write_batch(
        self,
        results: Sequence[Result],
        changes: Sequence[StatusChange],
        rollups: Sequence[Rollup] = (),
    ) -> BatchWritten:
        if results:
            await self._ensure_partitions(r.started_at for r in results)
        return await super().write_batch(results, changes, rollups)

    # -- agents --

    async def accept_agent_batch(
        self, org_id: int, agent_id: int, seq: int, rows: Sequence[tuple[Any, ...]]
    ) -> bool:
        if rows:
            # RESULT_COLUMNS order: started_at is the fourth.
            await self._ensure_partitions({r[3] for r in rows})
        return await super().accept_agent_batch(org_id, agent_id, seq, rows)

    async def _insert_results(self, conn: Conn, rows: list[tuple[Any, ...]]) -> None:
        assert isinstance(conn, _PgConn)
        await conn.raw.copy_records_to_table("results", records=rows, columns=RESULT_COLUMNS)

    async def _set_latest(self, c: Conn, rows: list[tuple[Any, ...]]) -> None:
        # PERF: one statement per batch, with an array per column, not one per row.
        await c.execute(
            f"INSERT INTO check_latest ({', '.join(RESULT_COLUMNS)})"
            f" SELECT * FROM unnest({RESULT_ARRAYS})"
            f" ON CONFLICT (check_id, source) DO UPDATE SET {LATEST_SET}"
            " WHERE check_latest.started_at <= excluded.started_at",
            *(list(col) for col in zip(*rows, strict=True)),
        )

    async def _drop_results_before(self, cutoff: float) -> int:
        dropped = 0
        async with self._write() as c:
            rows = await c.fetch(
                "SELECT c.relname AS name FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results'"
            )
            for row in rows:
                match = _PARTITION.match(row["name"])
                if match is None:
                    continue
                day = dt.datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=dt.UTC)
                start = day.timestamp()
                if start + DAY <= cutoff:
                    dropped += int(await c.fetchval(f"SELECT COUNT(*) FROM {row['name']}"))
                    await c.execute(f"DROP TABLE {row['name']}")
                    self._partitions.discard(start)
        return dropped
