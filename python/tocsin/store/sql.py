"""The store written once in SQL that SQLite and PostgreSQL both speak. A backend supplies
connections (`Conn`), how a list parameter is matched, and its own bulk paths (COPY,
partitions); everything else, and so every organisation scope, lives here."""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any

from tocsin import _core
from tocsin.encryption import SecretBox
from tocsin.models import Result, Rollup, StatusChange, storable_text
from tocsin.store import migrations
from tocsin.store.base import (
    BatchWritten,
    ConflictError,
    NotFoundError,
    Ping,
    Principal,
    Retention,
    Row,
    Store,
)
from tocsin.store.tables import (
    CHECK_BOOLS,
    CHECK_COLUMNS,
    CHECK_DEFAULTS,
    CHECK_JSON,
    CHECK_READ_COLUMNS,
    LINKS,
    RESULT_COLUMNS,
    ROLLUP_TIERS,
    TABLES,
    Table,
)

log = logging.getLogger("tocsin.store")

DAY = 86_400.0
ROLLUP_COLUMNS = (
    "tier",
    "check_id",
    "start_ms",
    "organization_id",
    "span_ms",
    "runs_up",
    "runs_down",
    "runs_degraded",
    "downtime_ms",
    "excluded_ms",
    "incidents",
    "sketch",
)
# The latest result of each source of each check is a results row of its own
# (check_latest), updated in place; a check's last result is the newest of them.
LATEST_READ = RESULT_COLUMNS[2:]
LATEST_SET = ", ".join(f"{col} = excluded.{col}" for col in LATEST_READ)
# Checks are read joined to their latest result; `c.` qualifies every check column.
_CHECK_COLUMNS_SQL = (
    ", ".join(f"c.{col}" for col in CHECK_READ_COLUMNS)
    + ", "
    + ", ".join(f"l.{col} AS last_{col}" for col in LATEST_READ)
)
_LATEST_JOIN = (
    " LEFT JOIN check_latest l ON l.check_id = c.id AND l.source ="
    " (SELECT m.source FROM check_latest m WHERE m.check_id = c.id"
    " ORDER BY m.started_at DESC, m.source LIMIT 1)"
)
_CHECK_SELECT = _CHECK_COLUMNS_SQL + " FROM checks c" + _LATEST_JOIN
_USER_COLUMNS = (
    "id, email, full_name, is_superuser, is_active, notification_preferences,"
    " created_at, updated_at"
)
# Text search: every LIKE goes through `contains_pattern` and this operator, so `%`, `_`
# and the escape character in what a user typed match only themselves, on both backends.
LIKE = "LIKE ? ESCAPE '\\'"
# An invitation counts while it has not expired (the `now` parameter) and its inviter
# still holds a role that may grant its role. SQL over the `invitations` table, unaliased.
_INVITATION_COUNTS = (
    "invitations.expires_at > ? AND EXISTS (SELECT 1 FROM memberships s"
    " WHERE s.organization_id = invitations.organization_id"
    " AND s.user_id = invitations.invited_by"
    " AND (s.role = 'OWNER' OR (s.role = 'ADMIN' AND invitations.role <> 'OWNER')))"
)
# ...and is the user's: addressed to the email of that (active) user, not declined.
# Parameters: user id, True, now.
_INVITATION_MINE = (
    "invitations.email = (SELECT u.email FROM users u WHERE u.id = ? AND u.is_active = ?)"
    f" AND invitations.declined_at IS NULL AND {_INVITATION_COUNTS}"
)


class Conn(abc.ABC):
    """One connection (inside a transaction when it came from `SqlStore._write`).
    Statements use `?` placeholders."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None


def day_floor(t: float) -> float:
    return t - t % DAY


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class SqlStore(Store):
    def __init__(self, secrets: SecretBox | None = None) -> None:
        # Tests and embedders that pass no key get a throwaway one: secrets still never
        # reach the database in clear, they just do not survive the process.
        self.secrets = secrets or SecretBox.generate()

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
                row[col] = _loads(row[col])
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
            row[col] = _loads(row[col])
        for col in CHECK_BOOLS:
            row[col] = bool(row[col])
        row["config"] = self.secrets.unseal(row["config"])
        return row

    def _user_row(self, row: Row) -> Row:
        row["is_superuser"] = bool(row["is_superuser"])
        row["is_active"] = bool(row["is_active"])
        row["notification_preferences"] = _loads(row["notification_preferences"])
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

    def _check_values(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(fields)
        if "config" in out:
            out["config"] = self.secrets.seal(out["config"] or {})
        for col in CHECK_JSON & out.keys():
            out[col] = json.dumps(out[col])
        return out

    async def _same_org(
        self, c: Conn, table: Table, org_id: int, fields: Mapping[str, Any]
    ) -> None:
        for col, ref in table.refs.items():
            value = fields.get(col)
            if value is None:
                continue
            found = await c.fetchval(
                f"SELECT 1 FROM {ref} WHERE id = ? AND organization_id = ?", value, org_id
            )
            if found is None:
                raise NotFoundError(f"{col} {value} not found", field=col)

    @contextlib.asynccontextmanager
    async def _unique(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            if self._is_conflict(exc):
                raise ConflictError(f"{what} already exists") from None
            raise

    # -- identity -----------------------------------------------------------------------

    async def count_users(self) -> int:
        async with self._read() as c:
            return int(await c.fetchval("SELECT COUNT(*) FROM users"))

    async def create_user(
        self, email: str, password_hash: str, *, superuser: bool = False, full_name: str = ""
    ) -> int:
        now = time.time()
        async with self._unique(f"a user with email {email!r}"), self._write() as c:
            return int(
                await c.fetchval(
                    "INSERT INTO users (email, password_hash, is_superuser, full_name,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    email,
                    password_hash,
                    superuser,
                    full_name,
                    now,
                    now,
                )
            )

    async def get_user(self, user_id: int) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", user_id)
        return self._user_row(row) if row else None

    async def user_by_email(self, email: str) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE email = ?", email
            )
        return self._user_row(row) if row else None

    async def update_user(self, user_id: int, fields: Mapping[str, Any]) -> Row | None:
        allowed = {
            "email",
            "full_name",
            "password_hash",
            "is_active",
            "is_superuser",
            "notification_preferences",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"users has no writable column(s) {sorted(unknown)}")
        values = dict(fields)
        if "notification_preferences" in values:
            values["notification_preferences"] = json.dumps(values["notification_preferences"])
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._unique("a user with that email"), self._write() as c:
            n = await c.execute(f"UPDATE users SET {sets} WHERE id = ?", *values.values(), user_id)
        return await self.get_user(user_id) if n else None

    async def create_organization(self, name: str) -> Row:
        now = time.time()
        # Names are not unique: refusing one would tell the caller that an organisation
        # it cannot see has that name.
        async with self._write() as c:
            org_id = int(
                await c.fetchval(
                    "INSERT INTO organizations (name, created_at, updated_at) VALUES (?, ?, ?)"
                    " RETURNING id",
                    name,
                    now,
                    now,
                )
            )
            project_id = int(
                await c.fetchval(
                    "INSERT INTO projects (organization_id, name, is_default, created_at,"
                    " updated_at) VALUES (?, 'Default', ?, ?, ?) RETURNING id",
                    org_id,
                    True,
                    now,
                    now,
                )
            )
        return {
            "id": org_id,
            "name": name,
            "settings": {},
            "default_project_id": project_id,
            "created_at": now,
            "updated_at": now,
        }

    async def list_organizations(self, org_ids: Collection[int]) -> list[Row]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT o.id, o.name, o.settings, o.created_at, o.updated_at,"
                " p.id AS default_project_id FROM organizations o"
                " LEFT JOIN projects p ON p.organization_id = o.id AND p.is_default = ?"
                f" WHERE {self._in('o.id')} ORDER BY o.id",
                True,
                self._list(org_ids),
            )
        for r in rows:
            r["settings"] = _loads(r["settings"])
        return rows

    async def update_organization(
        self, org_ids: Collection[int], org_id: int, fields: Mapping[str, Any]
    ) -> Row | None:
        unknown = set(fields) - {"name", "settings"}
        if unknown:
            raise ValueError(f"organizations has no writable column(s) {sorted(unknown)}")
        if org_id not in org_ids:
            return None
        values = dict(fields)
        if "settings" in values:
            values["settings"] = json.dumps(values["settings"])
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._write() as c:
            n = await c.execute(
                f"UPDATE organizations SET {sets} WHERE id = ?", *values.values(), org_id
            )
        if not n:
            return None
        [row] = await self.list_organizations([org_id])
        return row

    async def delete_organization(self, org_ids: Collection[int], org_id: int) -> bool:
        if org_id not in org_ids:
            return False
        async with self._write() as c:
            # Tables without a foreign key to organizations (bulk data) go explicitly.
            for table in ("results", "status_changes", "rollups", "check_latest"):
                await c.execute(f"DELETE FROM {table} WHERE organization_id = ?", org_id)
            for link in LINKS.values():
                await c.execute(f"DELETE FROM {link.name} WHERE organization_id = ?", org_id)
            await c.execute("DELETE FROM checks WHERE organization_id = ?", org_id)
            n = await c.execute("DELETE FROM organizations WHERE id = ?", org_id)
        return n == 1

    async def add_membership(self, org_id: int, user_id: int, role: str) -> None:
        async with self._write() as c:
            await c.execute(
                "INSERT INTO memberships (organization_id, user_id, role) VALUES (?, ?, ?)"
                " ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role",
                org_id,
                user_id,
                role,
            )
            await c.execute(
                "DELETE FROM invitations WHERE organization_id = ?"
                " AND email = (SELECT email FROM users WHERE id = ?)",
                org_id,
                user_id,
            )

    async def list_members(self, org_ids: Collection[int], org_id: int) -> list[Row]:
        if org_id not in org_ids:
            return []
        async with self._read() as c:
            return await c.fetch(
                "SELECT u.id AS user_id, u.email, u.full_name, m.role FROM memberships m"
                " JOIN users u ON u.id = m.user_id WHERE m.organization_id = ? ORDER BY u.id",
                org_id,
            )

    # -- invitations --

    async def invite(
        self,
        org_ids: Collection[int],
        org_id: int,
        email: str,
        role: str,
        invited_by: int,
        now: float,
        expires_at: float,
        *,
        limit: int = 1000,
    ) -> bool:
        if org_id not in org_ids:
            raise NotFoundError(f"organisation {org_id} not found")
        async with self._write() as c:
            await c.execute(
                "DELETE FROM invitations WHERE organization_id = ? AND expires_at <= ?",
                org_id,
                now,
            )
            member = await c.fetchval(
                "SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id"
                " WHERE m.organization_id = ? AND u.email = ?",
                org_id,
                email,
            )
            if member is not None:
                return False
            refreshed = await c.execute(
                "UPDATE invitations SET role = ?, invited_by = ?, expires_at = ?,"
                " declined_at = NULL, updated_at = ? WHERE organization_id = ? AND email = ?",
                role,
                invited_by,
                expires_at,
                now,
                org_id,
                email,
            )
            if refreshed:
                return True
            pending = int(
                await c.fetchval(
                    "SELECT COUNT(*) FROM invitations WHERE organization_id = ?", org_id
                )
            )
            if pending >= limit:
                raise ConflictError(
                    f"the organisation has {pending} pending invitations; revoke some first"
                )
            # (ON CONFLICT: the same email invited at the same moment is one invitation.)
            await c.execute(
                "INSERT INTO invitations (organization_id, email, role, invited_by, created_at,"
                " updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (organization_id, email) DO UPDATE SET role = excluded.role,"
                " invited_by = excluded.invited_by, expires_at = excluded.expires_at,"
                " declined_at = NULL, updated_at = excluded.updated_at",
                org_id,
                email,
                role,
                invited_by,
                now,
                now,
                expires_at,
            )
        return True

    async def list_invitations(
        self,
        org_ids: Collection[int],
        org_id: int,
        now: float,
        *,
        invitation_id: int | None = None,
        email: str | None = None,
    ) -> list[Row]:
        if org_id not in org_ids:
            return []
        clauses, args = "", list[Any]()
        if invitation_id is not None:
            clauses += " AND invitations.id = ?"
            args.append(invitation_id)
        if email is not None:
            clauses += " AND invitations.email = ?"
            args.append(email)
        async with self._read() as c:
            return await c.fetch(
                "SELECT invitations.id, invitations.organization_id, invitations.email,"
                " invitations.role, invitations.invited_by, invitations.created_at,"
                " invitations.updated_at, invitations.expires_at FROM invitations"
                f" WHERE invitations.organization_id = ? AND {_INVITATION_COUNTS}{clauses}"
                " ORDER BY invitations.id",
                org_id,
                now,
                *args,
            )

    async def revoke_invitation(
        self, org_ids: Collection[int], org_id: int, invitation_id: int
    ) -> bool:
        if org_id not in org_ids:
            return False
        async with self._write() as c:
            n = await c.execute(
                "DELETE FROM invitations WHERE id = ? AND organization_id = ?",
                invitation_id,
                org_id,
            )
        return n == 1

    async def user_invitations(self, user_id: int, now: float) -> list[Row]:
        async with self._read() as c:
            return await c.fetch(
                "SELECT invitations.id, invitations.organization_id,"
                " o.name AS organization_name, invitations.role, inviter.email AS"
                " invited_by_email, invitations.created_at, invitations.updated_at,"
                " invitations.expires_at FROM invitations"
                " JOIN organizations o ON o.id = invitations.organization_id"
                " JOIN users inviter ON inviter.id = invitations.invited_by"
                f" WHERE {_INVITATION_MINE} ORDER BY invitations.id",
                user_id,
                True,
                now,
            )

    async def accept_invitation(self, user_id: int, invitation_id: int, now: float) -> Row | None:
        async with self._write() as c:
            used = await c.fetchrow(
                "DELETE FROM invitations WHERE invitations.id = ?"
                f" AND {_INVITATION_MINE} RETURNING organization_id, role",
                invitation_id,
                user_id,
                True,
                now,
            )
            if used is None:
                return None
            org_id = int(used["organization_id"])
            # A member already keeps their role: roles change through the members route.
            await c.execute(
                "INSERT INTO memberships (organization_id, user_id, role) VALUES (?, ?, ?)"
                " ON CONFLICT (organization_id, user_id) DO NOTHING",
                org_id,
                user_id,
                used["role"],
            )
            role = await c.fetchval(
                "SELECT role FROM memberships WHERE organization_id = ? AND user_id = ?",
                org_id,
                user_id,
            )
        return {"id": invitation_id, "organization_id": org_id, "role": str(role)}

    async def decline_invitation(self, user_id: int, invitation_id: int, now: float) -> bool:
        async with self._write() as c:
            n = await c.execute(
                "UPDATE invitations SET declined_at = ?, updated_at = ?"
                f" WHERE invitations.id = ? AND {_INVITATION_MINE}",
                now,
                now,
                invitation_id,
                user_id,
                True,
                now,
            )
        return n == 1

    async def create_token(
        self,
        user_id: int,
        name: str,
        prefix: str,
        token_hash: str,
        *,
        expires_at: float | None = None,
    ) -> int:
        async with self._write() as c:
            return int(
                await c.fetchval(
                    "INSERT INTO api_tokens (user_id, name, prefix, token_hash, created_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    user_id,
                    name,
                    prefix,
                    token_hash,
                    time.time(),
                    expires_at,
                )
            )

    async def list_tokens(self, user_id: int) -> list[Row]:
        async with self._read() as c:
            return await c.fetch(
                "SELECT id, name, prefix, created_at, last_used_at, expires_at, revoked_at"
                " FROM api_tokens WHERE user_id = ? ORDER BY id",
                user_id,
            )

    async def revoke_token(self, user_id: int, token_id: int) -> bool:
        async with self._write() as c:
            n = await c.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND user_id = ?"
                " AND revoked_at IS NULL",
                time.time(),
                token_id,
                user_id,
            )
        return n == 1

    async def touch_token(self, token_hash: str, at: float) -> None:
        async with self._write() as c:
            await c.execute(
                "UPDATE api_tokens SET last_used_at = ? WHERE token_hash = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                at,
                token_hash,
                at,
            )

    async def principal_for_token(self, token_hash: str) -> Principal | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                "SELECT u.id, u.email, u.is_superuser FROM api_tokens t"
                " JOIN users u ON u.id = t.user_id"
                " WHERE t.token_hash = ? AND t.revoked_at IS NULL AND u.is_active = ?"
                " AND (t.expires_at IS NULL OR t.expires_at > ?)",
                token_hash,
                True,
                time.time(),
            )
            if row is None:
                return None
            memberships = await c.fetch(
                "SELECT organization_id, role FROM memberships WHERE user_id = ?", row["id"]
            )
        return _principal(row, memberships)

    async def principal_for_user(self, user_id: int) -> Principal | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                "SELECT id, email, is_superuser FROM users WHERE id = ? AND is_active = ?",
                user_id,
                True,
            )
            if row is None:
                return None
            memberships = await c.fetch(
                "SELECT organization_id, role FROM memberships WHERE user_id = ?", user_id
            )
        return _principal(row, memberships)

    async def password_hash(self, user_id: int) -> str | None:
        async with self._read_point() as c:
            value = await c.fetchval("SELECT password_hash FROM users WHERE id = ?", user_id)
        return None if value is None else str(value)

    async def list_users(self, *, limit: int, offset: int) -> list[Row]:
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {_USER_COLUMNS} FROM users ORDER BY id LIMIT ? OFFSET ?", limit, offset
            )
        return [self._user_row(r) for r in rows]

    async def delete_user(self, user_id: int) -> bool:
        async with self._write() as c:
            sole = await c.fetchval(
                "SELECT MIN(m.organization_id) FROM memberships m"
                " WHERE m.user_id = ? AND m.role = 'OWNER' AND NOT EXISTS"
                " (SELECT 1 FROM memberships o WHERE o.organization_id = m.organization_id"
                " AND o.role = 'OWNER' AND o.user_id <> m.user_id)",
                user_id,
            )
            if sole is not None:
                raise ConflictError(
                    f"the user is the only OWNER of organisation {sole}; transfer ownership"
                    " or delete the organisation first"
                )
            n = await c.execute("DELETE FROM users WHERE id = ?", user_id)
        return n == 1

    async def _keeps_an_owner(self, c: Conn, org_id: int, user_id: int) -> bool | None:
        """Whether the organisation still has an OWNER without `user_id` as one; None
        when the user is not a member. Locks the organisation's row first, so two
        concurrent changes cannot each remove "the other" owner."""
        await c.execute("UPDATE organizations SET updated_at = updated_at WHERE id = ?", org_id)
        role = await c.fetchval(
            "SELECT role FROM memberships WHERE organization_id = ? AND user_id = ?",
            org_id,
            user_id,
        )
        if role is None:
            return None
        if role != "OWNER":
            return True
        others = await c.fetchval(
            "SELECT COUNT(*) FROM memberships WHERE organization_id = ? AND role = 'OWNER'"
            " AND user_id <> ?",
            org_id,
            user_id,
        )
        return int(others) > 0

    async def set_member_role(
        self, org_ids: Collection[int], org_id: int, user_id: int, role: str
    ) -> bool:
        if org_id not in org_ids:
            return False
        async with self._write() as c:
            keeps = await self._keeps_an_owner(c, org_id, user_id)
            if keeps is None:
                return False
            if not keeps and role != "OWNER":
                raise ConflictError("an organisation must keep at least one OWNER")
            await c.execute(
                "UPDATE memberships SET role = ? WHERE organization_id = ? AND user_id = ?",
                role,
                org_id,
                user_id,
            )
        return True

    async def remove_membership(self, org_ids: Collection[int], org_id: int, user_id: int) -> bool:
        if org_id not in org_ids:
            return False
        async with self._write() as c:
            keeps = await self._keeps_an_owner(c, org_id, user_id)
            if keeps is None:
                return False
            if not keeps:
                raise ConflictError("an organisation must keep at least one OWNER")
            await c.execute(
                "DELETE FROM memberships WHERE organization_id = ? AND user_id = ?",
                org_id,
                user_id,
            )
        return True

    async def organization_usage(self, org_ids: Collection[int], org_id: int) -> Row | None:
        if org_id not in org_ids:
            return None
        counts: Row = {}
        async with self._read() as c:
            if await c.fetchval("SELECT 1 FROM organizations WHERE id = ?", org_id) is None:
                return None
            for key, table in (
                ("checks", "checks"),
                ("results_stored", "results"),
                ("agents", "agents"),
                ("projects", "projects"),
                ("members", "memberships"),
            ):
                counts[key] = int(
                    await c.fetchval(
                        f"SELECT COUNT(*) FROM {table} WHERE organization_id = ?", org_id
                    )
                )
        return counts

    async def delete_project(self, org_ids: Collection[int], project_id: int) -> bool:
        async with self._write() as c:
            row = await c.fetchrow(
                f"SELECT is_default FROM projects WHERE id = ? AND {self._in('organization_id')}",
                project_id,
                self._list(org_ids),
            )
            if row is None:
                return False
            if row["is_default"]:
                raise ConflictError("the default project cannot be deleted")
            held = int(
                await c.fetchval("SELECT COUNT(*) FROM checks WHERE project_id = ?", project_id)
            )
            if held:
                raise ConflictError(
                    f"the project still holds {held} check(s); move or delete them first"
                )
            n = await c.execute("DELETE FROM projects WHERE id = ?", project_id)
        return n == 1

    # -- organisation-owned rows ------------------------------------------------------------

    async def insert(self, kind: str, org_id: int, fields: Mapping[str, Any]) -> Row:
        table = TABLES[kind]
        values = self._values(table, fields)
        now = time.time()
        cols = ["organization_id", *values, "created_at", "updated_at"]
        async with self._unique(f"such a {kind} row"), self._write() as c:
            await self._same_org(c, table, org_id, fields)
            row = await c.fetchrow(
                f"INSERT INTO {kind} ({', '.join(cols)})"
                f" VALUES ({', '.join('?' * len(cols))}) RETURNING *",
                org_id,
                *values.values(),
                now,
                now,
            )
        assert row is not None
        return self._row(table, row)

    async def get(self, kind: str, org_ids: Collection[int], row_id: int) -> Row | None:
        table = TABLES[kind]
        async with self._read_point() as c:
            row = await c.fetchrow(
                f"SELECT * FROM {kind} WHERE id = ? AND {self._in('organization_id')}",
                row_id,
                self._list(org_ids),
            )
        return self._row(table, row) if row else None

    def _where(self, table: Table, where: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for col, value in (where or {}).items():
            if col not in table.filters:
                raise ValueError(f"{table.name} cannot be filtered by {col}")
            clauses.append(f" AND {col} = ?")
            args.append(value)
        return "".join(clauses), args

    async def select(
        self,
        kind: str,
        org_ids: Collection[int],
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Row]:
        table = TABLES[kind]
        clauses, args = self._where(table, where)
        order = "DESC" if newest_first else "ASC"
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT * FROM {kind} WHERE {self._in('organization_id')}{clauses}"
                f" ORDER BY id {order} LIMIT ? OFFSET ?",
                self._list(org_ids),
                *args,
                limit,
                offset,
            )
        return [self._row(table, r) for r in rows]

    async def count(
        self, kind: str, org_ids: Collection[int], *, where: Mapping[str, Any] | None = None
    ) -> int:
        table = TABLES[kind]
        clauses, args = self._where(table, where)
        async with self._read() as c:
            return int(
                await c.fetchval(
                    f"SELECT COUNT(*) FROM {kind} WHERE {self._in('organization_id')}{clauses}",
                    self._list(org_ids),
                    *args,
                )
            )

    async def update(
        self, kind: str, org_ids: Collection[int], row_id: int, fields: Mapping[str, Any]
    ) -> Row | None:
        table = TABLES[kind]
        values = self._values(table, fields)
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._unique(f"such a {kind} row"), self._write() as c:
            org_id = await c.fetchval(
                f"SELECT organization_id FROM {kind}"
                f" WHERE id = ? AND {self._in('organization_id')}",
                row_id,
                self._list(org_ids),
            )
            if org_id is None:
                return None
            await self._same_org(c, table, int(org_id), fields)
            row = await c.fetchrow(
                f"UPDATE {kind} SET {sets} WHERE id = ? RETURNING *", *values.values(), row_id
            )
        return self._row(table, row) if row else None

    async def delete(self, kind: str, org_ids: Collection[int], row_id: int) -> bool:
        if kind not in TABLES:  # before any SQL is built from it
            raise KeyError(kind)
        async with self._write() as c:
            n = await c.execute(
                f"DELETE FROM {kind} WHERE id = ? AND {self._in('organization_id')}",
                row_id,
                self._list(org_ids),
            )
        return n == 1

    async def link(self, kind: str, org_id: int, left: int, right: int) -> None:
        link = LINKS[kind]
        async with self._write() as c:
            for col, table, value in (
                (link.left, link.left_table, left),
                (link.right, link.right_table, right),
            ):
                found = await c.fetchval(
                    f"SELECT 1 FROM {table} WHERE id = ? AND organization_id = ?", value, org_id
                )
                if found is None:
                    raise NotFoundError(f"{col} {value} not found", field=col)
            await c.execute(
                f"INSERT INTO {kind} ({link.left}, {link.right}, organization_id)"
                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                left,
                right,
                org_id,
            )

    async def unlink(self, kind: str, org_ids: Collection[int], left: int, right: int) -> bool:
        link = LINKS[kind]
        async with self._write() as c:
            n = await c.execute(
                f"DELETE FROM {kind} WHERE {link.left} = ? AND {link.right} = ?"
                f" AND {self._in('organization_id')}",
                left,
                right,
                self._list(org_ids),
            )
        return n == 1

    async def linked(self, kind: str, org_ids: Collection[int], left: int) -> list[int]:
        link = LINKS[kind]
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {link.right} AS id FROM {kind} WHERE {link.left} = ?"
                f" AND {self._in('organization_id')} ORDER BY {link.right}",
                left,
                self._list(org_ids),
            )
        return [int(r["id"]) for r in rows]

    # -- checks -------------------------------------------------------------------------

    async def default_project(self, org_id: int) -> int:
        async with self._read() as c:
            pid = await c.fetchval(
                "SELECT id FROM projects WHERE organization_id = ? AND is_default = ?",
                org_id,
                True,
            )
        if pid is None:
            raise NotFoundError(f"organisation {org_id} has no default project")
        return int(pid)

    async def create_check(self, org_id: int, fields: Mapping[str, Any]) -> Row:
        unknown = set(fields) - {*CHECK_COLUMNS, "project_id"}
        if unknown:
            raise ValueError(f"checks have no column(s) {sorted(unknown)}")
        missing = {"name", "type", "interval", "timeout"} - set(fields)
        if missing:
            raise ValueError(f"a check needs {sorted(missing)}")
        merged = {**CHECK_DEFAULTS, **fields}
        project_id = merged.pop("project_id", None)
        values = self._check_values(merged)
        now = time.time()
        cols = ["organization_id", "project_id", "uuid", *values, "created_at", "updated_at"]
        async with self._write() as c:
            if project_id is None:
                project_id = await c.fetchval(
                    "SELECT id FROM projects WHERE organization_id = ? AND is_default = ?",
                    org_id,
                    True,
                )
            elif (
                await c.fetchval(
                    "SELECT 1 FROM projects WHERE id = ? AND organization_id = ?",
                    project_id,
                    org_id,
                )
                is None
            ):
                raise NotFoundError(f"project_id {project_id} not found", field="project_id")
            check_id = await c.fetchval(
                f"INSERT INTO checks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                " RETURNING id",
                org_id,
                project_id,
                str(uuid.uuid4()),
                *values.values(),
                now,
                now,
            )
            row = await c.fetchrow(f"SELECT {_CHECK_SELECT} WHERE c.id = ?", check_id)
        assert row is not None
        return self._check_row(row)

    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                f"SELECT {_CHECK_SELECT} WHERE c.id = ? AND {self._in('c.organization_id')}",
                check_id,
                self._list(org_ids),
            )
        return self._check_row(row) if row else None

    async def check_by_uuid(self, uuid: str) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(f"SELECT {_CHECK_SELECT} WHERE c.uuid = ?", uuid)
        return self._check_row(row) if row else None

    async def list_checks(
        self,
        org_ids: Collection[int],
        *,
        limit: int,
        offset: int,
        type: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        text: str | None = None,
    ) -> list[Row]:
        clauses, args = "", list[Any]()
        if type is not None:
            clauses += " AND c.type = ?"
            args.append(type)
        if status == "PAUSED":
            clauses += " AND c.is_active = ?"
            args.append(False)
        elif status is not None:
            clauses += " AND c.status = ? AND c.is_active = ?"
            args += [status, True]
        if tag is not None:
            clauses += f" AND {self._json_has('c.tags')}"
            args.append(tag)
        if text:
            pattern = contains_pattern(text.lower())
            clauses += (
                f" AND (lower(c.name) {LIKE} OR lower(COALESCE(c.url, '')) {LIKE}"
                f" OR lower(COALESCE(c.host, '')) {LIKE})"
            )
            args += [pattern, pattern, pattern]
        async with self._read() as c:
            # PERF: the page is chosen first, so the latest-result join runs for its rows
            # only, not for every check of the organisation.
            rows = await c.fetch(
                f"SELECT {_CHECK_COLUMNS_SQL} FROM (SELECT * FROM checks c"
                f" WHERE {self._in('c.organization_id')}{clauses}"
                f" ORDER BY c.id LIMIT ? OFFSET ?) c{_LATEST_JOIN} ORDER BY c.id",
                self._list(org_ids),
                *args,
                limit,
                offset,
            )
        return [self._check_row(r) for r in rows]

    async def update_check(
        self, org_ids: Collection[int], check_id: int, fields: Mapping[str, Any]
    ) -> Row | None:
        unknown = set(fields) - {*CHECK_COLUMNS, "project_id"}
        if unknown:
            raise ValueError(f"checks have no column(s) {sorted(unknown)}")
        values = self._check_values(fields)
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._write() as c:
            org_id = await c.fetchval(
                f"SELECT organization_id FROM checks"
                f" WHERE id = ? AND {self._in('organization_id')}",
                check_id,
                self._list(org_ids),
            )
            if org_id is None:
                return None
            pid = fields.get("project_id")
            if (
                pid is not None
                and await c.fetchval(
                    "SELECT 1 FROM projects WHERE id = ? AND organization_id = ?", pid, org_id
                )
                is None
            ):
                raise NotFoundError(f"project_id {pid} not found", field="project_id")
            await c.execute(f"UPDATE checks SET {sets} WHERE id = ?", *values.values(), check_id)
            row = await c.fetchrow(f"SELECT {_CHECK_SELECT} WHERE c.id = ?", check_id)
        return self._check_row(row) if row else None

    async def delete_check(self, org_ids: Collection[int], check_id: int) -> bool:
        async with self._write() as c:
            n = await c.execute(
                f"DELETE FROM checks WHERE id = ? AND {self._in('organization_id')}",
                check_id,
                self._list(org_ids),
            )
            if n == 1:
                for table in ("results", "status_changes", "rollups"):
                    await c.execute(f"DELETE FROM {table} WHERE check_id = ?", check_id)
        return n == 1

    async def all_checks(self) -> list[Row]:
        async with self._read() as c:
            rows = await c.fetch(f"SELECT {_CHECK_SELECT} ORDER BY c.id")
        return [self._check_row(r) for r in rows]

    async def check_sources(self, org_ids: Collection[int], check_id: int) -> dict[str, str]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT source, status FROM check_latest WHERE check_id = ?"
                f" AND {self._in('organization_id')} ORDER BY source",
                check_id,
                self._list(org_ids),
            )
        return {str(r["source"]): str(r["status"]) for r in rows}

    async def record_pings(self, pings: Sequence[Ping]) -> list[bool]:
        if not pings:
            return []
        async with self._write() as c:
            org_of = {
                int(r["id"]): int(r["organization_id"])
                for r in await c.fetch(
                    f"SELECT id, organization_id FROM checks WHERE {self._in('id')}",
                    self._list({p.check_id for p in pings}),
                )
            }
            kept = [p for p in pings if p.check_id in org_of]
            await c.executemany(
                "INSERT INTO pings (organization_id, check_id, kind, exit_code, rid, body,"
                " remote_addr, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        org_of[p.check_id],
                        p.check_id,
                        p.kind,
                        p.exit_code,
                        p.rid,
                        p.body,
                        p.remote_addr,
                        p.received_at,
                    )
                    for p in kept
                ],
            )
            latest: dict[int, float] = {}
            for p in kept:
                latest[p.check_id] = max(p.received_at, latest.get(p.check_id, p.received_at))
            await c.executemany(
                "UPDATE checks SET last_ping_at = ? WHERE id = ?"
                " AND (last_ping_at IS NULL OR last_ping_at <= ?)",
                [(at, cid, at) for cid, at in latest.items()],
            )
        return [p.check_id in org_of for p in pings]

    async def _newest_of_check(
        self,
        table: str,
        columns: str,
        org_ids: Collection[int],
        check_id: int,
        limit: int,
        before: int | None,
    ) -> list[Row]:
        """A check's rows of `table`, newest first, paged by keyset (`id < before`)."""
        cursor = " AND id < ?" if before is not None else ""
        args: list[Any] = [check_id, self._list(org_ids)]
        if before is not None:
            args.append(before)
        async with self._read() as c:
            return await c.fetch(
                f"SELECT {columns} FROM {table}"
                f" WHERE check_id = ? AND {self._in('organization_id')}{cursor}"
                " ORDER BY id DESC LIMIT ?",
                *args,
                limit,
            )

    async def list_pings(
        self, org_ids: Collection[int], check_id: int, *, limit: int, before: int | None
    ) -> list[Row]:
        return await self._newest_of_check(
            "pings",
            "id, check_id, kind, exit_code, rid, body, remote_addr, received_at",
            org_ids,
            check_id,
            limit,
            before,
        )

    # -- results and rollups --------------------------------------------------------------

    async def write_batch(
        self,
        results: Sequence[Result],
        changes: Sequence[StatusChange],
        rollups: Sequence[Rollup] = (),
    ) -> BatchWritten:
        if not results and not changes and not rollups:
            return BatchWritten(0, 0, 0)
        ids = {r.check_id for r in results} | {c.check_id for c in changes}
        ids |= {r.check_id for r in rollups}
        async with self._write() as c:
            org_of = {
                int(r["id"]): int(r["organization_id"])
                for r in await c.fetch(
                    f"SELECT id, organization_id FROM checks WHERE {self._in('id')}",
                    self._list(ids),
                )
            }
            kept = [r for r in results if r.check_id in org_of]
            if kept:
                rows = [_result_row(r, org_of[r.check_id]) for r in kept]
                await self._insert_results(c, rows)
                await self._latest(c, rows)
            kept_changes = [ch for ch in changes if ch.check_id in org_of]
            if kept_changes:
                await self._changes(c, kept_changes, org_of)
            kept_rollups = [r for r in rollups if r.check_id in org_of]
            if kept_rollups:
                await self._merge_rollups(c, kept_rollups, org_of)
        return BatchWritten(len(kept), len(kept_changes), len(kept_rollups))

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

    async def _changes(self, c: Conn, changes: list[StatusChange], org_of: dict[int, int]) -> None:
        await c.executemany(
            "INSERT INTO status_changes (check_id, organization_id, previous, current, at,"
            " reason, sources, in_maintenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    ch.check_id,
                    org_of[ch.check_id],
                    ch.previous.value,
                    ch.current.value,
                    ch.at,
                    storable_text(ch.reason),
                    json.dumps({k: v.value for k, v in ch.sources.items()}),
                    ch.in_maintenance,
                )
                for ch in changes
            ],
        )
        # A check's status is its verdict, which only transitions change.
        await c.executemany(
            "UPDATE checks SET status = ?, status_changed_at = ?"
            " WHERE id = ? AND (status_changed_at IS NULL OR status_changed_at <= ?)",
            [(ch.current.value, ch.at, ch.check_id, ch.at) for ch in changes],
        )

    async def _merge_rollups(self, c: Conn, rollups: list[Rollup], org_of: dict[int, int]) -> None:
        fresh = [r.astuple() for r in rollups]
        checks = self._list({r.check_id for r in rollups})
        for tier, span in ROLLUP_TIERS.items():
            starts = [r.start_ms - r.start_ms % span for r in rollups]
            stored = await c.fetch(
                f"SELECT {', '.join(ROLLUP_COLUMNS[1:3])}, {', '.join(ROLLUP_COLUMNS[4:])}"
                f" FROM rollups WHERE tier = ? AND {self._in('check_id')}"
                " AND start_ms >= ? AND start_ms <= ?",
                tier,
                checks,
                min(starts),
                max(starts),
            )
            merged = _core.roll_up(
                [_rollup_tuple(r) for r in stored] + fresh,
                span,
            )
            await c.executemany(
                f"INSERT INTO rollups ({', '.join(ROLLUP_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})"
                " ON CONFLICT (tier, check_id, start_ms) DO UPDATE SET"
                + ", ".join(f" {col} = excluded.{col}" for col in ROLLUP_COLUMNS[4:]),
                [(tier, m[0], m[1], org_of[m[0]], *m[2:]) for m in merged],
            )

    async def list_results(
        self, org_ids: Collection[int], check_id: int, *, limit: int, before: int | None
    ) -> list[Row]:
        columns = "id, " + ", ".join(RESULT_COLUMNS)
        return await self._newest_of_check("results", columns, org_ids, check_id, limit, before)

    async def list_rollups(
        self,
        org_ids: Collection[int],
        check_id: int,
        tier: str,
        *,
        since_ms: int,
        until_ms: int | None = None,
    ) -> list[Rollup]:
        if tier not in ROLLUP_TIERS:
            raise ValueError(f"unknown rollup tier {tier!r}; one of {sorted(ROLLUP_TIERS)}")
        upper = " AND start_ms < ?" if until_ms is not None else ""
        args: list[Any] = [tier, check_id, self._list(org_ids), since_ms]
        if until_ms is not None:
            args.append(until_ms)
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {', '.join(ROLLUP_COLUMNS[1:3])}, {', '.join(ROLLUP_COLUMNS[4:])}"
                f" FROM rollups WHERE tier = ? AND check_id = ? AND {self._in('organization_id')}"
                f" AND start_ms >= ?{upper} ORDER BY start_ms",
                *args,
            )
        return [Rollup(*_rollup_tuple(r)) for r in rows]

    async def enforce_retention(self, policy: Retention, now: float) -> dict[str, int]:
        removed: dict[str, int] = {}
        if policy.raw_days is not None:
            cutoff = day_floor(now - policy.raw_days * DAY)
            removed["raw"] = await self._drop_results_before(cutoff)
            async with self._write() as c:
                removed["pings"] = await c.execute(
                    "DELETE FROM pings WHERE received_at < ?", cutoff
                )
        for tier, days in (
            ("minute", policy.minute_days),
            ("hour", policy.hour_days),
            ("day", policy.day_days),
        ):
            if days is None:
                continue
            cutoff_ms = int(day_floor(now - days * DAY) * 1000)
            async with self._write() as c:
                removed[tier] = await c.execute(
                    "DELETE FROM rollups WHERE tier = ? AND start_ms < ?", tier, cutoff_ms
                )
        return removed

    # -- agents -------------------------------------------------------------------------

    async def register_agent(
        self, token_hash: str, fields: Mapping[str, Any], now: float
    ) -> Row | None:
        async with self._write() as c:
            token = await c.fetchrow(
                "SELECT id, organization_id, location FROM agent_registration_tokens"
                " WHERE token_hash = ? AND used_at IS NULL AND (expires_at IS NULL"
                " OR expires_at > ?)",
                token_hash,
                now,
            )
            if token is None:
                return None
            # The UPDATE's row lock (PostgreSQL) or the write lock (SQLite) makes the
            # token single-use under concurrent registrations.
            taken = await c.execute(
                "UPDATE agent_registration_tokens SET used_at = ?, updated_at = ?"
                " WHERE id = ? AND used_at IS NULL",
                now,
                now,
                token["id"],
            )
            if not taken:
                return None
            # The location the admin put on the token binds; an agent names its own
            # only when the token leaves it open.
            location = token["location"] or fields.get("location")
            kind = "geo" if location else "private"
            agent = await c.fetchrow(
                "INSERT INTO agents (organization_id, name, kind, location, credential_hash,"
                " status, version, last_heartbeat_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'online', ?, ?, ?, ?) RETURNING *",
                token["organization_id"],
                fields["name"],
                kind,
                location,
                fields["credential_hash"],
                fields.get("version"),
                now,
                now,
                now,
            )
            assert agent is not None
            await c.execute(
                "UPDATE agent_registration_tokens SET agent_id = ? WHERE id = ?",
                agent["id"],
                token["id"],
            )
            if location:
                await c.execute(
                    "INSERT INTO geo_locations (code, name, created_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (code) DO NOTHING",
                    location,
                    location,
                    now,
                )
        return dict(agent)

    async def agent_by_credential(self, credential_hash: str) -> Row | None:
        async with self._read() as c:
            row = await c.fetchrow(
                "SELECT * FROM agents WHERE credential_hash = ? AND revoked_at IS NULL",
                credential_hash,
            )
        return None if row is None else dict(row)

    async def accept_agent_batch(
        self, org_id: int, agent_id: int, seq: int, rows: Sequence[tuple[Any, ...]]
    ) -> bool:
        async with self._write() as c:
            advanced = await c.execute(
                "UPDATE agents SET last_batch_seq = ? WHERE id = ? AND organization_id = ?"
                " AND last_batch_seq < ? AND revoked_at IS NULL",
                seq,
                agent_id,
                org_id,
                seq,
            )
            if not advanced:
                return False
            if rows:
                if any(r[1] != org_id for r in rows):
                    raise ValueError("result rows of another organisation")
                agent = await c.fetchrow("SELECT kind FROM agents WHERE id = ?", agent_id)
                geo = agent is not None and agent["kind"] == "geo"
                ids = {r[0] for r in rows}
                allowed = {
                    int(r["id"])
                    for r in await c.fetch(
                        "SELECT id, assigned_agent_ids, geo_monitoring_enabled FROM checks"
                        f" WHERE organization_id = ? AND {self._in('id')}",
                        org_id,
                        self._list(ids),
                    )
                    if agent_id in _loads(r["assigned_agent_ids"])
                    or (geo and r["geo_monitoring_enabled"])
                }
                if ids - allowed:
                    # Raised inside the transaction: the sequence number stays put and
                    # nothing of the batch is stored.
                    raise NotFoundError(
                        f"check(s) {sorted(ids - allowed)[:20]} are not assigned to this agent",
                        field="results",
                    )
                await self._insert_results(c, list(rows))
                await self._latest(c, list(rows))
        return True

    async def agent_checks(self, org_id: int, agent_id: int, geo: bool) -> list[Row]:
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {_CHECK_SELECT} WHERE c.organization_id = ? AND c.is_active = ?"
                " ORDER BY c.id",
                org_id,
                True,
            )
        out = []
        for row in rows:
            row = self._check_row(row)
            if agent_id in row["assigned_agent_ids"] or (geo and row["geo_monitoring_enabled"]):
                out.append(row)
        return out

    async def assignment_version(self, org_id: int) -> str:
        async with self._read() as c:
            row = await c.fetchrow(
                "SELECT COUNT(*) AS n, MAX(updated_at) AS at, MAX(id) AS top FROM checks"
                " WHERE organization_id = ?",
                org_id,
            )
        assert row is not None
        return f"{row['n']}-{row['top']}-{row['at']}"

    async def mark_agents_offline(self, heard_before: float) -> list[Row]:
        async with self._write() as c:
            rows = await c.fetch(
                "UPDATE agents SET status = 'offline' WHERE status = 'online'"
                " AND revoked_at IS NULL AND last_heartbeat_at < ? RETURNING *",
                heard_before,
            )
        return [dict(r) for r in rows]

    async def list_geo_locations(self) -> list[Row]:
        async with self._read() as c:
            return [dict(r) for r in await c.fetch("SELECT * FROM geo_locations ORDER BY code")]

    async def source_results(
        self, org_ids: Collection[int], check_id: int, since: float
    ) -> list[Row]:
        async with self._read() as c:
            return await c.fetch(
                "SELECT source, status, started_at, latency_ms FROM results"
                f" WHERE check_id = ? AND {self._in('organization_id')} AND started_at >= ?"
                " ORDER BY started_at",
                check_id,
                self._list(org_ids),
                since,
            )

    # -- notifications --------------------------------------------------------------------

    @staticmethod
    def _incident_defaults() -> dict[str, Any]:
        """A new incident's columns not given by its op (the schema's defaults)."""
        return {
            "check_id": None,
            "kind": "check",
            "status": "OPEN",
            "severity": "critical",
            "title": None,
            "cause": None,
            "dedup_key": None,
            "sources": {},
            "started_at": None,
            "acknowledged_at": None,
            "acknowledged_by": None,
            "resolved_at": None,
            "resolved_by": None,
        }

    async def write_incident_change(
        self,
        org_id: int,
        incident_id: int | None,
        fields: Mapping[str, Any],
        *,
        event: Mapping[str, Any] | None = None,
        deliveries: Sequence[Mapping[str, Any]] = (),
        only_if_status: Collection[str] | None = None,
    ) -> Row | None:
        op = {
            "org_id": org_id,
            "incident_id": incident_id,
            "fields": fields,
            "event": event,
            "deliveries": deliveries,
            "only_if_status": only_if_status,
        }
        return (await self.write_incident_batch([op]))[0]

    async def write_incident_batch(self, ops: Sequence[Mapping[str, Any]]) -> list[Row | None]:
        # PERF: a fixed number of statements per batch, not one per op: the incidents the
        # batch changes are read (locked under PostgreSQL) once, every op is applied to
        # them here in order (guards included), and the final rows, the timeline events
        # and the outbox rows are written with one executemany each. New incidents get
        # their ids up front, so events and outbox rows can name them.
        incidents = TABLES["incidents"]
        columns = incidents.columns
        now = time.time()
        out: list[Row | None] = []
        events: list[tuple[Any, ...]] = []
        outbox: list[tuple[int, int, Mapping[str, Any]]] = []
        async with self._unique("an open incident of this check"), self._write() as c:
            await self._checks_of(c, ops)
            existing_ids = sorted({int(op["incident_id"]) for op in ops if op.get("incident_id")})
            state: dict[int, Row] = {}
            if existing_ids:
                lock = " FOR UPDATE" if self.backend == "postgresql" else ""
                for r in await c.fetch(
                    f"SELECT * FROM incidents WHERE {self._in('id')} ORDER BY id{lock}",
                    self._list(existing_ids),
                ):
                    state[int(r["id"])] = self._row(incidents, r)
            fresh = sum(1 for op in ops if op.get("incident_id") is None and op.get("ref") is None)
            new_ids = iter(await self._new_incident_ids(c, fresh))
            created: list[int] = []
            changed: dict[int, set[str]] = {}
            for op in ops:
                org_id = int(op["org_id"])
                incident_id = op.get("incident_id")
                if incident_id is None and op.get("ref") is not None:
                    earlier = out[int(op["ref"])]
                    incident_id = None if earlier is None else int(earlier["id"])
                    if incident_id is None:
                        out.append(None)
                        continue
                fields = dict(op["fields"])
                unknown = set(fields) - set(columns)
                if unknown:
                    raise ValueError(f"incidents has no column(s) {sorted(unknown)}")
                if incident_id is None:
                    new_id = next(new_ids)
                    row: Row = {
                        "id": new_id,
                        "organization_id": org_id,
                        **self._incident_defaults(),
                        **fields,
                        "created_at": now,
                        "updated_at": now,
                    }
                    created.append(new_id)
                else:
                    current = state.get(int(incident_id))
                    guard = op.get("only_if_status")
                    if (
                        current is None
                        or int(current["organization_id"]) != org_id
                        or (guard is not None and current["status"] not in guard)
                    ):
                        out.append(None)
                        continue
                    row = {**current, **fields, "updated_at": now}
                    changed.setdefault(int(incident_id), set()).update(fields)
                state[int(row["id"])] = row
                out.append(dict(row))
                inc_id = int(row["id"])
                event = op.get("event")
                if event is not None:
                    ev = self._values(TABLES["incident_events"], event)
                    events.append(
                        (
                            org_id,
                            inc_id,
                            ev["kind"],
                            ev.get("actor_id"),
                            ev.get("detail", "{}"),
                            ev["at"],
                            now,
                            now,
                        )
                    )
                outbox += [(org_id, inc_id, d) for d in op.get("deliveries") or ()]
            # Updates first: an incident resolved here frees its check for one opened here.
            groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            born = set(created)
            for inc_id, touched in changed.items():
                if inc_id in born:
                    continue
                shape = tuple(sorted(touched))
                values = self._values(incidents, {k: state[inc_id][k] for k in shape})
                groups.setdefault(shape, []).append((*values.values(), now, inc_id))
            for shape, rows in groups.items():
                sets = "".join(f"{k} = ?, " for k in shape)
                await c.executemany(f"UPDATE incidents SET {sets}updated_at = ? WHERE id = ?", rows)
            if created:
                names = ["id", "organization_id", *columns, "created_at", "updated_at"]
                inserts = []
                for inc_id in created:
                    values = self._values(incidents, {k: state[inc_id][k] for k in columns})
                    inserts.append(
                        (inc_id, state[inc_id]["organization_id"], *values.values(), now, now)
                    )
                await self._insert_many(c, f"INSERT INTO incidents ({', '.join(names)})", inserts)
            await self._insert_many(
                c,
                "INSERT INTO incident_events (organization_id, incident_id, kind, actor_id,"
                " detail, at, created_at, updated_at)",
                events,
            )
            if outbox:
                await self._outbox(c, outbox, now)
        return out

    async def _new_incident_ids(self, c: Conn, n: int) -> list[int]:
        """`n` ids for new incidents, taken inside the write transaction."""
        if n <= 0:
            return []
        if self.backend == "postgresql":
            rows = await c.fetch(
                "SELECT nextval(pg_get_serial_sequence('incidents', 'id')) AS id"
                " FROM generate_series(1, ?::int) ORDER BY 1",
                n,
            )
            return [int(r["id"]) for r in rows]
        # SQLite: the write transaction holds the database's only write lock.
        top = int(await c.fetchval("SELECT COALESCE(MAX(id), 0) FROM incidents") or 0)
        return list(range(top + 1, top + 1 + n))

    async def _checks_of(self, c: Conn, ops: Sequence[Mapping[str, Any]]) -> None:
        """The checks of new incidents must be their organisation's (one query for the
        batch, not one per incident)."""
        assert set(TABLES["incidents"].refs) == {"check_id"}
        wanted = {
            (int(op["org_id"]), int(op["fields"]["check_id"]))
            for op in ops
            if op.get("incident_id") is None
            and op.get("ref") is None
            and op["fields"].get("check_id") is not None
        }
        if not wanted:
            return
        rows = await c.fetch(
            f"SELECT id, organization_id FROM checks WHERE {self._in('id')}",
            self._list(sorted({cid for _, cid in wanted})),
        )
        owner = {int(r["id"]): int(r["organization_id"]) for r in rows}
        for org_id, check_id in sorted(wanted):
            if owner.get(check_id) != org_id:
                raise NotFoundError(f"check_id {check_id} not found", field="check_id")

    async def _outbox(
        self, c: Conn, rows: Sequence[tuple[int, int, Mapping[str, Any]]], now: float
    ) -> None:
        wanted = sorted({int(d["channel_id"]) for _, _, d in rows})
        found = await c.fetch(
            f"SELECT id, organization_id FROM notification_channels WHERE {self._in('id')}",
            self._list(wanted),
        )
        owner = {int(r["id"]): int(r["organization_id"]) for r in found}
        table = TABLES["notification_deliveries"]
        values = []
        for org_id, incident_id, d in rows:
            if owner.get(int(d["channel_id"])) != org_id:
                continue  # deleted (or never the organisation's) since it was planned
            v = self._values(
                table,
                {
                    "payload": {**d["payload"], "incident_id": incident_id},
                    "dedup_key": str(d["dedup_key"]).replace("{incident}", str(incident_id)),
                },
            )
            values.append(
                (
                    org_id,
                    int(d["channel_id"]),
                    incident_id,
                    d.get("check_id"),
                    d["event"],
                    v["dedup_key"],
                    v["payload"],
                    d.get("status", "pending"),
                    d.get("next_attempt_at", now),
                    now,
                    now,
                )
            )
        await self._insert_many(
            c,
            "INSERT INTO notification_deliveries (organization_id, channel_id, incident_id,"
            " check_id, event, dedup_key, payload, status, next_attempt_at, created_at,"
            " updated_at)",
            values,
            " ON CONFLICT (dedup_key) DO NOTHING",
        )

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
            await c.execute(
                f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
                *[v for row in chunk for v in row],
            )

    async def claim_deliveries(self, now: float, limit: int, lease: float) -> list[Row]:
        # The outer conditions repeat the inner ones: under PostgreSQL a row claimed by
        # another server meanwhile is re-checked against them and skipped.
        # SQLite would rather sort every unsent row than walk the index kept in this
        # order (notification_deliveries_unsent); PostgreSQL's planner finds it alone.
        hint = " INDEXED BY notification_deliveries_unsent" if self.backend == "sqlite" else ""
        async with self._write() as c:
            rows = await c.fetch(
                "UPDATE notification_deliveries SET status = 'sending',"
                " attempts = attempts + 1, next_attempt_at = ?, updated_at = ?"
                f" WHERE id IN (SELECT d.id FROM notification_deliveries d{hint}"
                " WHERE d.status IN ('pending', 'sending') AND d.next_attempt_at <= ?"
                # In order per incident and channel: not while an earlier one is unsent.
                " AND NOT EXISTS (SELECT 1 FROM notification_deliveries e"
                " WHERE e.incident_id = d.incident_id AND e.channel_id = d.channel_id"
                " AND e.id < d.id AND e.status IN ('pending', 'sending'))"
                " ORDER BY d.next_attempt_at, d.id LIMIT ?)"
                " AND status IN ('pending', 'sending') AND next_attempt_at <= ? RETURNING *",
                now + lease,
                now,
                now,
                limit,
                now,
            )
        table = TABLES["notification_deliveries"]
        return sorted((self._row(table, r) for r in rows), key=lambda r: int(r["id"]))

    async def settle_deliveries(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        allowed = ("status", "next_attempt_at", "last_error", "response_code", "delivered_at")
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        now = time.time()
        for delivery_id, fields in updates:
            unknown = set(fields) - set(allowed)
            if unknown:
                raise ValueError(f"cannot settle {sorted(unknown)}")
            cols = tuple(k for k in allowed if k in fields)
            groups.setdefault(cols, []).append((*(fields[k] for k in cols), now, delivery_id))
        # PERF: one statement per shape of answer, not one per row.
        async with self._write() as c:
            for cols, rows in groups.items():
                sets = "".join(f"{k} = ?, " for k in cols)
                await c.executemany(
                    f"UPDATE notification_deliveries SET {sets}updated_at = ?"
                    " WHERE id = ? AND status = 'sending'",
                    rows,
                )

    async def open_check_incidents(self, check_ids: Collection[int] | None = None) -> list[Row]:
        only, args = "", []
        if check_ids is not None:
            only, args = f" AND {self._in('check_id')}", [self._list(check_ids)]
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT * FROM incidents WHERE status != 'RESOLVED' AND check_id IS NOT NULL"
                f"{only} ORDER BY id",
                *args,
            )
        return [self._row(TABLES["incidents"], r) for r in rows]

    async def channel_checks(self, org_ids: Collection[int], channel_id: int) -> list[int]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT check_id FROM check_channels WHERE channel_id = ?"
                f" AND {self._in('organization_id')} ORDER BY check_id",
                channel_id,
                self._list(org_ids),
            )
        return [int(r["check_id"]) for r in rows]

    async def channel_routes(
        self, org_ids: Collection[int], check_ids: Collection[int]
    ) -> tuple[list[tuple[int, int]], list[Row]]:
        if not org_ids:
            return [], []
        async with self._read() as c:
            links = await c.fetch(
                "SELECT check_id, channel_id FROM check_channels"
                f" WHERE {self._in('check_id')} AND {self._in('organization_id')}"
                " ORDER BY check_id, channel_id",
                self._list(sorted(set(check_ids))),
                self._list(sorted(set(org_ids))),
            )
            wanted = sorted({int(r["channel_id"]) for r in links})
            rows = await c.fetch(
                f"SELECT * FROM notification_channels WHERE {self._in('organization_id')}"
                f" AND (is_default = ? OR {self._in('id')}) ORDER BY id",
                self._list(sorted(set(org_ids))),
                True,
                self._list(wanted),
            )
        table = TABLES["notification_channels"]
        pairs = [(int(r["check_id"]), int(r["channel_id"])) for r in links]
        return pairs, [self._row(table, r) for r in rows]


def contains_pattern(text: str) -> str:
    """A pattern for `LIKE` that matches `text` anywhere, taken literally: LIKE's
    wildcards (`%`, `_`) and the escape character (`\\`) in it are escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _principal(user: Row, memberships: list[Row]) -> Principal:
    roles = {int(m["organization_id"]): str(m["role"]) for m in memberships}
    return Principal(
        user_id=int(user["id"]),
        email=str(user["email"]),
        roles=roles,
        superuser=bool(user["is_superuser"]),
    )


def _result_row(r: Result, org_id: int) -> tuple[Any, ...]:
    t = r.timings
    return (
        r.check_id,
        org_id,
        r.source,
        r.started_at,
        r.due_at,
        r.latency_ms,
        r.status.value,
        storable_text(r.error_kind),
        storable_text(r.message),
        r.status_code,
        t.dns_ms if t else None,
        t.connect_ms if t else None,
        t.tls_ms if t else None,
        t.first_byte_ms if t else None,
        storable_text(r.details_json),
    )


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
        "details": _loads(latest["details"]) or {},
    }


def _rollup_tuple(r: Row) -> tuple[Any, ...]:
    return (
        int(r["check_id"]),
        int(r["start_ms"]),
        int(r["span_ms"]),
        int(r["runs_up"]),
        int(r["runs_down"]),
        int(r["runs_degraded"]),
        int(r["downtime_ms"]),
        int(r["excluded_ms"]),
        int(r["incidents"]),
        bytes(r["sketch"]),
    )
