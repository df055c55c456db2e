"""Incidents: batches of changes applied in one transaction with their timeline events
and their notification outbox rows (the deliveries planned with each change)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tocsin.store.base import NotFoundError, Row
from tocsin.store.sql.base import Conn, SqlBase
from tocsin.store.tables import TABLES


class IncidentSql(SqlBase):
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
            "integration_key_id": None,
            "event_count": 0,
            "details": {},
            "last_event_at": None,
            "escalation_policy_id": None,
            "escalation_step": 0,
            "escalation_round": 0,
            "escalation_due_at": None,
            "service_id": None,
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
        """The rows new incidents point at (their check, their integration key) must be
        their organisation's (one query per referenced table for the batch, not one per
        incident)."""
        for column, table in TABLES["incidents"].refs.items():
            wanted = {
                (int(op["org_id"]), int(op["fields"][column]))
                for op in ops
                if op.get("incident_id") is None
                and op.get("ref") is None
                and op["fields"].get(column) is not None
            }
            if not wanted:
                continue
            rows = await c.fetch(
                f"SELECT id, organization_id FROM {table} WHERE {self._in('id')}",
                self._list(sorted({ref for _, ref in wanted})),
            )
            owner = {int(r["id"]): int(r["organization_id"]) for r in rows}
            for org_id, ref in sorted(wanted):
                if owner.get(ref) != org_id:
                    raise NotFoundError(f"{column} {ref} not found", field=column)

    async def check_incidents_between(
        self,
        org_ids: Collection[int],
        check_ids: Collection[int],
        *,
        since: float,
        until: float,
        limit: int,
    ) -> list[Row]:
        if not check_ids:
            return []
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT * FROM incidents WHERE"
                f" {self._in('organization_id')} AND {self._in('check_id')}"
                " AND started_at < ? AND (resolved_at IS NULL OR resolved_at >= ?)"
                " ORDER BY started_at DESC, id DESC LIMIT ?",
                self._list(org_ids),
                self._list(check_ids),
                until,
                since,
                limit,
            )
        table = TABLES["incidents"]
        return [self._row(table, r) for r in rows]

    async def _outbox(
        self, c: Conn, rows: Sequence[tuple[int, int, Mapping[str, Any]]], now: float
    ) -> None:
        # A row without a channel is the server's own (status page subscribers' mails).
        wanted = sorted({int(d["channel_id"]) for _, _, d in rows if d["channel_id"] is not None})
        found = await c.fetch(
            f"SELECT id, organization_id FROM notification_channels WHERE {self._in('id')}",
            self._list(wanted),
        )
        owner = {int(r["id"]): int(r["organization_id"]) for r in found}
        table = TABLES["notification_deliveries"]
        values = []
        for org_id, incident_id, d in rows:
            channel_id = d["channel_id"]
            if channel_id is not None and owner.get(int(channel_id)) != org_id:
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
                    None if channel_id is None else int(channel_id),
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

    async def escalating_incidents(self) -> list[tuple[int, float]]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT id, escalation_due_at FROM incidents"
                " WHERE escalation_due_at IS NOT NULL AND status = 'OPEN' ORDER BY id"
            )
        return [(int(r["id"]), float(r["escalation_due_at"])) for r in rows]

    async def incidents_by_id(self, ids: Collection[int]) -> list[Row]:
        if not ids:
            return []
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT * FROM incidents WHERE {self._in('id')} ORDER BY id",
                self._list(sorted(ids)),
            )
        return [self._row(TABLES["incidents"], r) for r in rows]

    async def delete_escalation_policy(
        self, org_ids: Collection[int], policy_id: int
    ) -> list[int] | None:
        if not org_ids:
            return None
        async with self._write() as c:
            row = await c.fetchrow(
                f"SELECT organization_id FROM escalation_policies WHERE id = ?"
                f" AND {self._in('organization_id')}",
                policy_id,
                self._list(org_ids),
            )
            if row is None:
                return None
            org_id = int(row["organization_id"])
            checks = await c.fetch(
                "SELECT id FROM checks WHERE organization_id = ? AND escalation_policy_id = ?",
                org_id,
                policy_id,
            )
            await c.execute(
                "UPDATE checks SET escalation_policy_id = NULL"
                " WHERE organization_id = ? AND escalation_policy_id = ?",
                org_id,
                policy_id,
            )
            await c.execute("DELETE FROM escalation_policies WHERE id = ?", policy_id)
        return [int(r["id"]) for r in checks]
