"""Persistence: one `Store` interface; SQLite is the embedded default."""

from __future__ import annotations

from pathlib import Path

from tocsin.store.base import NotFoundError, Principal, Row, Store
from tocsin.store.migrations import DatabaseTooNewError


class UnsupportedDatabaseError(ValueError):
    """The database URL names a backend this build cannot use."""


def open_store(database: str | None, data_dir: Path) -> Store:
    """A store for `database` (`sqlite:///path`, or None for `DATA_DIR/tocsin.db`)."""
    from tocsin.store.sqlite import SqliteStore

    if database is None:
        return SqliteStore(data_dir / "tocsin.db")
    if database.startswith("sqlite:///"):
        return SqliteStore(Path(database.removeprefix("sqlite:///")))
    if database.startswith(("postgresql://", "postgres://")):
        raise UnsupportedDatabaseError(
            "the PostgreSQL backend is not available in this version; use SQLite (the default)"
        )
    raise UnsupportedDatabaseError(f"unsupported database URL {database!r}; use sqlite:///PATH")


__all__ = [
    "DatabaseTooNewError",
    "NotFoundError",
    "Principal",
    "Row",
    "Store",
    "UnsupportedDatabaseError",
    "open_store",
]
