"""Feedback from users to the operators of the server: not an organisation's rows (a
user may send it from no organisation), so not in the generic registry. Superusers read
and triage all of it; a user reads their own."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tocsin.store.base import Row
from tocsin.store.sql.base import SqlBase

_COLUMNS = (
    "id, organization_id, user_id, kind, message, page, status, response, responded_by,"
    " responded_at, created_at, updated_at"
)
_WRITABLE = frozenset({"status", "response", "responded_by", "responded_at"})


class FeedbackSql(SqlBase):
    async def create_feedback(
        self, user_id: int, org_id: int | None, kind: str, message: str, page: str | None
    ) -> Row:
        now = time.time()
        async with self._write() as c:
            row = await c.fetchrow(
                "INSERT INTO feedback (organization_id, user_id, kind, message, page, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'new', ?, ?)"
                f" RETURNING {_COLUMNS}",
                org_id,
                user_id,
                kind,
                message,
                page,
                now,
                now,
            )
        assert row is not None
        return row

    async def list_feedback(
        self,
        *,
        user_id: int | None,
        status: str | None,
        kind: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Row], int]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("user_id", user_id), ("status", status), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {_COLUMNS} FROM feedback{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                *args,
                limit,
                offset,
            )
            total = int(await c.fetchval(f"SELECT COUNT(*) FROM feedback{where}", *args) or 0)
        return rows, total

    async def get_feedback(self, feedback_id: int) -> Row | None:
        async with self._read() as c:
            return await c.fetchrow(f"SELECT {_COLUMNS} FROM feedback WHERE id = ?", feedback_id)

    async def update_feedback(self, feedback_id: int, fields: Mapping[str, Any]) -> Row | None:
        unknown = set(fields) - _WRITABLE
        if unknown:
            raise ValueError(f"feedback has no writable column(s) {sorted(unknown)}")
        values = {**fields, "updated_at": time.time()}
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._write() as c:
            return await c.fetchrow(
                f"UPDATE feedback SET {sets} WHERE id = ? RETURNING {_COLUMNS}",
                *values.values(),
                feedback_id,
            )
