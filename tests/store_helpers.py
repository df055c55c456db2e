"""What the store tests share (tests/test_store*.py): the backends, a store on each, the
`store` fixture parametrised over both, reading the database behind the store's back,
and builders of check fields and rollups."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tocsin.encryption import SecretBox
from tocsin.models import Rollup
from tocsin.store.postgres import PostgresStore
from tocsin.store.sql import SqlStore
from tocsin.store.sqlite import SqliteStore

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
