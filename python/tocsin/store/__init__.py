"""Persistence: one `Store` interface; SQLite is the embedded default, PostgreSQL (asyncpg)
the choice for fleets that outgrow one file."""

from __future__ import annotations

from pathlib import Path

from tocsin.encryption import SecretBox
from tocsin.store.base import (
    BatchWritten,
    ConflictError,
    NotFoundError,
    Ping,
    Principal,
    Retention,
    Row,
    Store,
    StoreUnavailableError,
)
from tocsin.store.migrations import DatabaseTooNewError


class UnsupportedDatabaseError(ValueError):
    """The database URL names a backend this build cannot use."""


def open_store(database: str | None, data_dir: Path, secrets: SecretBox | None = None) -> Store:
    """A store for `database`: None for `DATA_DIR/tocsin.db`, `sqlite:///PATH`, or
    `postgresql://user:password@host:port/name`. Secrets at rest use `secrets`, by
    default the key from the environment or `DATA_DIR/secret.key`."""
    if database is not None and not database.startswith(
        ("sqlite:///", "postgresql://", "postgres://")
    ):
        raise UnsupportedDatabaseError(
            f"unsupported database URL {database!r}; use sqlite:///PATH or postgresql://…"
        )
    box = secrets or SecretBox.from_environment(data_dir)
    if database is None or database.startswith("sqlite:///"):
        from tocsin.store.sqlite import SqliteStore

        path = data_dir / "tocsin.db" if database is None else Path(database[len("sqlite:///") :])
        return SqliteStore(path, box)
    from tocsin.store.postgres import PostgresStore

    return PostgresStore(database, box)


__all__ = [
    "BatchWritten",
    "ConflictError",
    "DatabaseTooNewError",
    "NotFoundError",
    "Ping",
    "Principal",
    "Retention",
    "Row",
    "Store",
    "StoreUnavailableError",
    "UnsupportedDatabaseError",
    "open_store",
]
