"""Agents: registration with a one-time token, their result batches (in sequence, only
for checks assigned to them), their checks, liveness, and the per-source results."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tocsin.store.base import NotFoundError, Row
from tocsin.store.sql.base import CHECK_SELECT, SqlBase, from_json


class AgentSql(SqlBase):
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
                    if agent_id in from_json(r["assigned_agent_ids"])
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
                f"SELECT {CHECK_SELECT} WHERE c.organization_id = ? AND c.is_active = ?"
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
