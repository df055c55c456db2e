"""Users, their memberships of organisations, invitations to join one, and API tokens:
who a request acts as (`Principal`)."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from tocsin.store.base import ConflictError, NotFoundError, Principal, Row
from tocsin.store.sql.base import Conn, SqlBase, from_json

_USER_COLUMNS = (
    "id, email, full_name, is_superuser, is_active, notification_preferences,"
    " created_at, updated_at"
)

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


class IdentitySql(SqlBase):
    # -- users --------------------------------------------------------------------------

    def _user_row(self, row: Row) -> Row:
        row["is_superuser"] = bool(row["is_superuser"])
        row["is_active"] = bool(row["is_active"])
        row["notification_preferences"] = from_json(row["notification_preferences"])
        return row

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
            old = await c.fetchval("SELECT email FROM users WHERE id = ?", user_id)
            n = await c.execute(f"UPDATE users SET {sets} WHERE id = ?", *values.values(), user_id)
            if n and "email" in values and values["email"] != old:
                # APPSEC: invitations are addressed to an email, and emails are not
                # verified: an account that takes an address (a new one, unverified)
                # must not accept what was sent to whoever owns it. The organisation
                # may invite again.
                await c.execute("DELETE FROM invitations WHERE email = ?", values["email"])
        return await self.get_user(user_id) if n else None

    # -- memberships --

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

    # -- tokens --

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

    # -- users and owners --

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
            # Who leaves the organisation leaves its teams.
            await c.execute(
                "DELETE FROM team_members WHERE organization_id = ? AND user_id = ?",
                org_id,
                user_id,
            )
        return True


def _principal(user: Row, memberships: list[Row]) -> Principal:
    roles = {int(m["organization_id"]): str(m["role"]) for m in memberships}
    return Principal(
        user_id=int(user["id"]),
        email=str(user["email"]),
        roles=roles,
        superuser=bool(user["is_superuser"]),
    )
