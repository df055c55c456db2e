"""The store's part for a person's own paging settings: contact methods (values sealed
at rest) and notification rules. These rows belong to a user, not an organisation."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tocsin.store.base import NotFoundError, Row
from tocsin.store.sql.base import Conn, SqlBase

_METHOD_FIELDS = frozenset(
    {
        "kind",
        "value",
        "label",
        "verified",
        "verification_hash",
        "verification_sent_at",
        "verified_at",
    }
)


class ProfileSql(SqlBase):
    def _method(self, row: Row) -> Row:
        row["value"] = self.secrets.decrypt(str(row["value"]))
        row["verified"] = bool(row["verified"])
        return row

    def _method_values(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - _METHOD_FIELDS
        if unknown:
            raise ValueError(f"contact_methods has no writable column(s) {sorted(unknown)}")
        values = dict(fields)
        if "value" in values:
            values["value"] = self.secrets.encrypt(str(values["value"]))
        return values

    async def _lock_user(self, c: Conn, user_id: int) -> bool:
        """Whether the user exists; under PostgreSQL its row is locked, so that writes
        of one person's settings (counted against a limit) take turns."""
        lock = " FOR UPDATE" if self.backend == "postgresql" else ""
        return await c.fetchval(f"SELECT id FROM users WHERE id = ?{lock}", user_id) is not None

    # -- contact methods --------------------------------------------------------------------

    async def list_contact_methods(
        self, user_ids: Collection[int], *, verified_only: bool = False
    ) -> list[Row]:
        if not user_ids:
            return []
        only = " AND verified = ?" if verified_only else ""
        args: list[Any] = [self._list(sorted(set(user_ids)))]
        if verified_only:
            args.append(True)
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT * FROM contact_methods WHERE {self._in('user_id')}{only}"
                " ORDER BY user_id, id",
                *args,
            )
        return [self._method(r) for r in rows]

    async def get_contact_method(self, user_id: int, method_id: int) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                "SELECT * FROM contact_methods WHERE id = ? AND user_id = ?", method_id, user_id
            )
        return None if row is None else self._method(row)

    async def create_contact_method(
        self, user_id: int, fields: Mapping[str, Any], *, limit: int
    ) -> Row | None:
        values = self._method_values(fields)
        now = time.time()
        async with self._unique("a contact method with that token"), self._write() as c:
            if not await self._lock_user(c, user_id):
                raise NotFoundError("user not found")
            n = await c.fetchval("SELECT COUNT(*) FROM contact_methods WHERE user_id = ?", user_id)
            if int(n or 0) >= limit:
                return None
            names = ["user_id", *values, "created_at", "updated_at"]
            row = await c.fetchrow(
                f"INSERT INTO contact_methods ({', '.join(names)})"
                f" VALUES ({', '.join('?' * len(names))}) RETURNING *",
                user_id,
                *values.values(),
                now,
                now,
            )
        assert row is not None
        return self._method(row)

    async def update_contact_method(
        self, user_id: int, method_id: int, fields: Mapping[str, Any]
    ) -> Row | None:
        values = self._method_values(fields)
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._unique("a contact method with that token"), self._write() as c:
            row = await c.fetchrow(
                f"UPDATE contact_methods SET {sets} WHERE id = ? AND user_id = ? RETURNING *",
                *values.values(),
                method_id,
                user_id,
            )
        return None if row is None else self._method(row)

    async def delete_contact_method(self, user_id: int, method_id: int) -> bool:
        async with self._write() as c:
            # The rules go with it (the foreign key says so too; this does not rely on it).
            await c.execute(
                "DELETE FROM notification_rules WHERE contact_method_id = ? AND user_id = ?",
                method_id,
                user_id,
            )
            n = await c.execute(
                "DELETE FROM contact_methods WHERE id = ? AND user_id = ?", method_id, user_id
            )
        return bool(n)

    async def renew_verification(
        self, user_id: int, method_id: int, token_hash: str, now: float, *, resend_after: float
    ) -> tuple[Row | None, float]:
        async with self._unique("a contact method with that token"), self._write() as c:
            row = await c.fetchrow(
                "UPDATE contact_methods SET verification_hash = ?, verification_sent_at = ?,"
                " updated_at = ? WHERE id = ? AND user_id = ? AND verified = ?"
                " AND (verification_sent_at IS NULL OR verification_sent_at <= ?) RETURNING *",
                token_hash,
                now,
                now,
                method_id,
                user_id,
                False,
                now - resend_after,
            )
            if row is not None:
                return self._method(row), 0.0
            row = await c.fetchrow(
                "SELECT * FROM contact_methods WHERE id = ? AND user_id = ?", method_id, user_id
            )
        if row is None:
            return None, 0.0
        row = self._method(row)
        if row["verified"]:
            return row, 0.0
        return row, max(0.0, float(row["verification_sent_at"]) + resend_after - now)

    async def contact_method_by_token(self, token_hash: str, issued_after: float) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                "SELECT * FROM contact_methods WHERE verification_hash = ?"
                " AND verification_sent_at >= ? AND verified = ?",
                token_hash,
                issued_after,
                False,
            )
        return None if row is None else self._method(row)

    async def verify_contact_method(
        self, token_hash: str, issued_after: float, now: float
    ) -> Row | None:
        async with self._write() as c:
            row = await c.fetchrow(
                "UPDATE contact_methods SET verified = ?, verified_at = ?,"
                " verification_hash = NULL, updated_at = ? WHERE verification_hash = ?"
                " AND verification_sent_at >= ? AND verified = ? RETURNING *",
                True,
                now,
                now,
                token_hash,
                issued_after,
                False,
            )
        return None if row is None else self._method(row)

    # -- notification rules -----------------------------------------------------------------

    async def list_notification_rules(self, user_ids: Collection[int]) -> list[Row]:
        if not user_ids:
            return []
        async with self._read() as c:
            return await c.fetch(
                f"SELECT * FROM notification_rules WHERE {self._in('user_id')}"
                " ORDER BY user_id, delay_minutes, id",
                self._list(sorted(set(user_ids))),
            )

    async def replace_notification_rules(
        self, user_id: int, rules: Sequence[tuple[int, int]]
    ) -> list[Row]:
        now = time.time()
        async with self._write() as c:
            if not await self._lock_user(c, user_id):
                raise NotFoundError("user not found")
            wanted = sorted({mid for mid, _ in rules})
            found = await c.fetch(
                f"SELECT id FROM contact_methods WHERE user_id = ? AND {self._in('id')}",
                user_id,
                self._list(wanted),
            )
            mine = {int(r["id"]) for r in found}
            for i, (mid, _) in enumerate(rules):
                if mid not in mine:
                    # Deleted since the caller looked (or never the user's).
                    raise NotFoundError(
                        f"contact method {mid} not found",
                        field=f"notification_rules.{i}.contact_method_id",
                    )
            await c.execute("DELETE FROM notification_rules WHERE user_id = ?", user_id)
            await self._insert_many(
                c,
                "INSERT INTO notification_rules (user_id, contact_method_id, delay_minutes,"
                " created_at, updated_at)",
                [(user_id, mid, delay, now, now) for mid, delay in rules],
            )
            return await c.fetch(
                "SELECT * FROM notification_rules WHERE user_id = ? ORDER BY delay_minutes, id",
                user_id,
            )
