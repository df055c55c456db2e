"""What every area of the SQL store shares: the connection (`Conn`), what a backend
provides (the abstract methods of `SqlBase`: connections, list parameters, bulk paths),
migrations, the shaping of rows on their way in and out, the latest-result reads and
writes of checks (checks and agents both need them) and bulk inserts. The areas
(`tocsin.store.sql.identity`, `.organizations`, `.checks`, `.agents`, `.incidents`,
`.notifications`) subclass `SqlBase` and never import each other: what two of them need
lives here."""

from __future__ import annotations

import abc
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from tocsin.encryption import SecretBox
from tocsin.store import migrations
from tocsin.store.base import ConflictError, Row, Store
from tocsin.store.tables import CHECK_BOOLS, CHECK_JSON, CHECK_READ_COLUMNS, RESULT_COLUMNS, Table

log = logging.getLogger("tocsin.store")

DAY = 86_400.0

# The latest result of each source of each check is a results row of its own
# (check_latest), updated in place; a check's last result is the newest of them.
LATEST_READ = RESULT_COLUMNS[2:]
LATEST_SET = ", ".join(f"{col} = excluded.{col}" for col in LATEST_READ)
# Checks are read joined to their latest result; `c.` qualifies every check column.
CHECK_COLUMNS_SQL = (
    ", ".join(f"c.{col}" for col in CHECK_READ_COLUMNS)
    + ", "
    + ", ".join(f"l.{col} AS last_{col}" for col in LATEST_READ)
)
LATEST_JOIN = (
    " LEFT JOIN check_latest l ON l.check_id = c.id AND l.source ="
    " (SELECT m.source FROM check_latest m WHERE m.check_id = c.id"
    " ORDER BY m.started_at DESC, m.source LIMIT 1)"
)
CHECK_SELECT = CHECK_COLUMNS_SQL + " FROM checks c" + LATEST_JOIN

# Text search: every LIKE goes through `contains_pattern` and this operator, so `%`, `_`
# and the escape character in what a user typed match only themselves, on both backends.
LIKE = "LIKE ? ESCAPE '\\'"


class Conn(abc.ABC):
    """One connection (inside a transaction when it came from `SqlStore._write`).
    Statements use `?` placeholders."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of `rows`. Inside a write transaction a backend
        may send it later, with the next statement that answers something (a fetch,
        an `execute`, the COMMIT): an error it causes is raised there."""

    async def execute_later(self, sql: str, *args: Any) -> None:
        """`execute` whose row count is not wanted, sent like `executemany` (later,
        with the next statement that answers something, where the backend can)."""
        await self.execute(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None


def day_floor(t: float) -> float:
    return t - t % DAY


def from_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class SqlBase(Store):
    """The plumbing every area of `SqlStore` is written over; a backend implements its
    abstract methods."""

    def __init__(self, secrets: SecretBox | None = None) -> None:
        # Tests and embedders that pass no key get a throwaway one: secrets still never
        # reach the database in clear, they just do not survive the process.
        self.secrets = secrets or SecretBox.generate()
        # Database sessions begun (a read, a point read, a write transaction), counted
        # for the operational metrics: a cached public page must begin none.
        self.reads = 0
        self.writes = 0

    # -- what a backend provides --------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A connection in a write transaction, committed on exit, rolled back on error."""

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...

    def _read_point(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """For reads of a few rows by key, which a backend may serve without a hop."""
        return self._read()

    @abc.abstractmethod
    def _in(self, column: str) -> str:
        """SQL matching `column` against one list parameter (made by `_list`)."""

    @abc.abstractmethod
    def _list(self, values: Iterable[Any]) -> Any: ...

    @abc.abstractmethod
    def _json_has(self, column: str) -> str:
        """SQL true when the JSON array in `column` holds the one string parameter."""

    @abc.abstractmethod
    def _is_conflict(self, exc: BaseException) -> bool: ...

    @abc.abstractmethod
    async def _insert_results(self, conn: Conn, rows: list[tuple[Any, ...]]) -> None:
        """Bulk-insert raw results (RESULT_COLUMNS order)."""

    @abc.abstractmethod
    async def _drop_results_before(self, cutoff: float) -> int:
        """Remove raw results started before `cutoff` (a UTC day boundary)."""

    @abc.abstractmethod
    async def _apply_migration(self, m: migrations.Migration) -> None: ...

    @abc.abstractmethod
    def _describe(self) -> str:
        """Where the database is, for messages."""

    # -- migrations ---------------------------------------------------------------------

    async def _migrate(self) -> None:
        async with self._write() as c:
            await c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
        current = await self._check_version()
        for m in migrations.load(self.backend)[current:]:
            log.info("applying %s migration %04d_%s", self.backend, m.version, m.name)
            await self._apply_migration(m)

    async def _check_version(self) -> int:
        """The database's schema version, refused when newer than this code knows."""
        current = await self.schema_version()
        latest = len(migrations.load(self.backend))
        if current > latest:
            raise migrations.DatabaseTooNewError(
                f"{self._describe()} is at schema version {current}, newer than this tocsin"
                f" (knows up to {latest}); upgrade tocsin"
            )
        return current

    async def schema_version(self) -> int:
        async with self._read() as c:
            v = await c.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(v or 0)

    # -- row shaping ----------------------------------------------------------------------

    def _row(self, table: Table, row: Row) -> Row:
        for col in table.json:
            if col in row:
                row[col] = from_json(row[col])
        for col in table.sealed:
            if isinstance(row.get(col), dict):
                row[col] = self.secrets.unseal(row[col])
        for col in table.bools:
            if col in row and row[col] is not None:
                row[col] = bool(row[col])
        return row

    def _check_row(self, row: Row) -> Row:
        latest = {col: row.pop(f"last_{col}") for col in LATEST_READ}
        row["last_checked_at"] = latest["started_at"]
        row["last_result"] = None if latest["started_at"] is None else _last_result(latest)
        for col in CHECK_JSON:
            row[col] = from_json(row[col])
        for col in CHECK_BOOLS:
            row[col] = bool(row[col])
        row["config"] = self.secrets.unseal(row["config"])
        return row

    def _values(self, table: Table, fields: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - set(table.columns)
        if unknown:
            raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
        out = dict(fields)
        for col in table.sealed & out.keys():
            out[col] = self.secrets.seal(out[col] or {})
        for col in table.json & out.keys():
            out[col] = json.dumps(out[col])
        return out

    @contextlib.asynccontextmanager
    async def _unique(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            if self._is_conflict(exc):
                raise ConflictError(f"{what} already exists") from None
            raise

    # -- the latest result of each source (checks and agents both write results) ---------

    async def _latest(self, c: Conn, rows: list[tuple[Any, ...]]) -> None:
        # Rows are in RESULT_COLUMNS order: check_id, organization_id, source, started_at…
        by_source: dict[tuple[int, str], tuple[Any, ...]] = {}
        for row in rows:
            key = (row[0], row[2])
            have = by_source.get(key)
            if have is None or row[3] >= have[3]:
                by_source[key] = row
        await self._set_latest(c, list(by_source.values()))

    async def _set_latest(self, c: Conn, rows: list[tuple[Any, ...]]) -> None:
        """Upsert the latest results row of each (check, source); a backend may do this in
        bulk. Late batches (an agent catching up) never overwrite a newer result."""
        await c.executemany(
            f"INSERT INTO check_latest ({', '.join(RESULT_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
            f" ON CONFLICT (check_id, source) DO UPDATE SET {LATEST_SET}"
            " WHERE check_latest.started_at <= excluded.started_at",
            rows,
        )

    # -- bulk inserts ---------------------------------------------------------------------

    # Rows per multi-row INSERT under SQLite (far below its 32,766 parameters).
    _INSERT_CHUNK = 100

    async def _insert_many(
        self, c: Conn, head: str, rows: Sequence[Sequence[Any]], tail: str = ""
    ) -> None:
        """`head VALUES (…), (…) tail` for many rows. PERF: under SQLite, multi-row
        statements: executemany steps once per row, and every step gives up and takes
        back the GIL, which waits behind a busy event loop; PostgreSQL pipelines
        executemany well."""
        if not rows:
            return
        one = "(" + ", ".join("?" * len(rows[0])) + ")"
        if self.backend != "sqlite":
            await c.executemany(f"{head} VALUES {one}{tail}", rows)
            return
        step = self._INSERT_CHUNK
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            await c.execute_later(
                f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
                *[v for row in chunk for v in row],
            )


def contains_pattern(text: str) -> str:
    """A pattern for `LIKE` that matches `text` anywhere, taken literally: LIKE's
    wildcards (`%`, `_`) and the escape character (`\\`) in it are escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _last_result(latest: Row) -> Row:
    """A check's last result as the API shows it, from its check_latest columns."""
    return {
        "status": latest["status"],
        "started_at": latest["started_at"],
        "latency_ms": round(latest["latency_ms"], 3),
        "error_kind": latest["error_kind"],
        "message": latest["message"],
        "status_code": latest["status_code"],
        "source": latest["source"],
        "timings": {
            "dns_ms": latest["dns_ms"],
            "connect_ms": latest["connect_ms"],
            "tls_ms": latest["tls_ms"],
            "first_byte_ms": latest["first_byte_ms"],
        },
        "details": from_json(latest["details"]) or {},
    }
