"""The store's part for paging: integration keys by hash, inbound events applied in
batches with the incidents they open or change, and the inbound incidents listed."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from tocsin.store.base import InboundEventRow, Row
from tocsin.store.sql.base import LIKE, Conn, SqlBase, contains_pattern
from tocsin.store.tables import TABLES

_KEY_COLUMNS = (
    "id, organization_id, name, prefix, escalation_policy_id, grouping_type,"
    " grouping_window_seconds, grouping_field, created_by, last_event_at, revoked_at,"
    " service_id, created_at, updated_at"
)
_EVENTS_HEAD = (
    "INSERT INTO inbound_events (organization_id, integration_key_id, incident_id, action,"
    " dedup_key, source_format, summary, severity, payload, received_at, created_at,"
    " updated_at)"
)
_TIMELINE_HEAD = (
    "INSERT INTO incident_events (organization_id, incident_id, kind, actor_id, detail, at,"
    " created_at, updated_at)"
)
# The columns inbound events change on an incident. Two statements update them: one
# for the changes of status (each column set only when its flag is: the rest of the
# row, e.g. the escalation step the escalation code moves on, is left alone), one for
# the rest, the common case (a retrigger: counts, and a severity raised), which
# touches no indexed column.
UPDATABLE = (
    "status",
    "severity",
    "title",
    "acknowledged_at",
    "resolved_at",
    "event_count",
    "last_event_at",
    "escalation_due_at",
)
_RETRIGGERED = (
    "UPDATE incidents SET event_count = ?, last_event_at = ?,"
    " severity = CASE WHEN ? THEN ? ELSE severity END,"
    " title = CASE WHEN ? THEN ? ELSE title END, updated_at = ? WHERE id = ?"
)
_RETRIGGER_SETS = frozenset({"event_count", "last_event_at", "severity", "title"})
_UPDATE = (
    "UPDATE incidents SET "
    + "".join(f"{col} = CASE WHEN ? THEN ? ELSE {col} END, " for col in UPDATABLE)
    + "updated_at = ? WHERE id = ? AND status IN (?, ?, ?)"
)
# The statuses an update applies to, by the status it sets: an acknowledgement changes
# only an open incident, a resolution only one not resolved (a person may have been
# first); other changes apply whatever the status.
_APPLIES_TO: dict[str | None, tuple[str, str, str]] = {
    "ACKNOWLEDGED": ("OPEN", "OPEN", "OPEN"),
    "RESOLVED": ("OPEN", "ACKNOWLEDGED", "ACKNOWLEDGED"),
    None: ("OPEN", "ACKNOWLEDGED", "RESOLVED"),
}


def _json(value: Any) -> str:
    # PERF: one payload per event; orjson is several times faster than json.dumps.
    return orjson.dumps(value).decode()


class PagingSql(SqlBase):
    if TYPE_CHECKING:
        # NOTE: the incidents area's (store/sql/incidents.py): both areas are mixed into
        # one SqlStore, and inbound batches write their outbox rows the same way.
        async def _outbox(
            self, c: Conn, rows: Sequence[tuple[int, int, Mapping[str, Any]]], now: float
        ) -> None: ...

    async def integration_key_by_hash(self, key_hash: str) -> Row | None:
        async with self._read_point() as c:
            return await c.fetchrow(
                f"SELECT {_KEY_COLUMNS} FROM integration_keys WHERE key_hash = ?", key_hash
            )

    async def open_inbound_incidents(self) -> list[Row]:
        table = TABLES["incidents"]
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT * FROM incidents WHERE kind = 'inbound' AND status <> 'RESOLVED'"
                " ORDER BY id"
            )
            joined = await c.fetch(
                "SELECT e.incident_id, e.detail FROM incident_events e"
                " JOIN incidents i ON i.id = e.incident_id"
                " WHERE e.kind = 'grouped' AND i.kind = 'inbound' AND i.status <> 'RESOLVED'"
                " ORDER BY e.id"
            )
        aliases: dict[int, list[str]] = {}
        events = TABLES["incident_events"]
        for r in joined:
            key = (self._row(events, r).get("detail") or {}).get("dedup_key")
            if isinstance(key, str):
                aliases.setdefault(int(r["incident_id"]), []).append(key)
        out = []
        for r in rows:
            row = self._row(table, r)
            row["aliases"] = aliases.get(int(row["id"]), [])
            out.append(row)
        return out

    async def write_inbound_batch(
        self,
        *,
        new_incidents: Sequence[Mapping[str, Any]],
        updates: Sequence[tuple[int, Mapping[str, Any]]],
        events: Sequence[InboundEventRow],
        timeline: Sequence[tuple[int, int, str, Mapping[str, Any], float]],
        deliveries: Sequence[tuple[int, int, Mapping[str, Any]]],
        keys_seen: Mapping[int, float],
    ) -> list[int]:
        # PERF: a fixed number of statements whatever the batch holds (multi-row inserts,
        # one executemany for every update): under SQLite each is a hop to the writer's
        # thread, and a hop waits for the busy event loop to come back to it.
        now = time.time()
        async with self._write() as c:
            ids = await self._insert_incidents(c, new_incidents, now)

            def real(incident_id: int) -> int:
                return ids[-incident_id - 1] if incident_id < 0 else incident_id

            retriggered, changed = [], []
            for incident_id, fields in updates:
                if fields.keys() <= _RETRIGGER_SETS and "event_count" in fields:
                    retriggered.append(
                        (
                            fields["event_count"],
                            fields["last_event_at"],
                            "severity" in fields,
                            fields.get("severity"),
                            "title" in fields,
                            fields.get("title"),
                            now,
                            real(incident_id),
                        )
                    )
                    continue
                unknown = set(fields) - set(UPDATABLE)
                if unknown:
                    raise ValueError(f"inbound batches do not update {sorted(unknown)}")
                row: list[Any] = []
                for col in UPDATABLE:
                    row += (col in fields, fields.get(col))
                changed.append((*row, now, real(incident_id), *_APPLIES_TO[fields.get("status")]))
            if retriggered:
                await c.executemany(_RETRIGGERED, retriggered)
            if changed:
                await c.executemany(_UPDATE, changed)
            await self._insert_many(
                c,
                _EVENTS_HEAD,
                [
                    (
                        e.organization_id,
                        e.integration_key_id,
                        None if e.incident_id is None else real(e.incident_id),
                        e.action,
                        e.dedup_key,
                        e.source_format,
                        e.summary,
                        e.severity,
                        _json(e.payload),
                        e.received_at,
                        now,
                        now,
                    )
                    for e in events
                ],
            )
            await self._insert_many(
                c,
                _TIMELINE_HEAD,
                [
                    (org_id, real(incident_id), kind, None, _json(detail), at, now, now)
                    for org_id, incident_id, kind, detail, at in timeline
                ],
            )
            if deliveries:
                await self._outbox(
                    c, [(org_id, real(iid), d) for org_id, iid, d in deliveries], now
                )
            if keys_seen:
                await c.executemany(
                    "UPDATE integration_keys SET last_event_at = ?"
                    " WHERE id = ? AND (last_event_at IS NULL OR last_event_at < ?)",
                    [(at, key_id, at) for key_id, at in sorted(keys_seen.items())],
                )
        return ids

    async def _insert_incidents(
        self, c: Conn, rows: Sequence[Mapping[str, Any]], now: float
    ) -> list[int]:
        """Insert new incidents; their ids, in order."""
        if not rows:
            return []
        table = TABLES["incidents"]
        values = [
            (
                fields["organization_id"],
                *self._values(table, {k: fields.get(k) for k in table.columns}).values(),
                now,
                now,
            )
            for fields in rows
        ]
        names = ", ".join(table.columns)
        head = f"INSERT INTO incidents (organization_id, {names}, created_at, updated_at)"
        if self.backend == "postgresql":
            found = await c.fetch(
                "SELECT nextval(pg_get_serial_sequence('incidents', 'id')) AS id"
                " FROM generate_series(1, ?::int) ORDER BY 1",
                len(rows),
            )
            ids = [int(r["id"]) for r in found]
            await self._insert_many(
                c,
                f"INSERT INTO incidents (id, organization_id, {names}, created_at, updated_at)",
                [(new_id, *v) for new_id, v in zip(ids, values, strict=True)],
            )
            return ids
        # SQLite: each chunk in one statement that answers its ids. A new row's id is one
        # more than the largest (an INTEGER PRIMARY KEY given none), so a chunk's ids in
        # ascending order are its rows' in order, whatever order RETURNING uses.
        one = "(" + ", ".join("?" * len(values[0])) + ")"
        out: list[int] = []
        step = self._INSERT_CHUNK
        for i in range(0, len(values), step):
            chunk = values[i : i + step]
            got = await c.fetch(
                f"{head} VALUES {', '.join([one] * len(chunk))} RETURNING id",
                *[v for row in chunk for v in row],
            )
            out += sorted(int(r["id"]) for r in got)
        return out

    async def list_inbound_incidents(
        self,
        org_ids: Collection[int],
        *,
        status: str | None = None,
        severity: str | None = None,
        integration_key_id: int | None = None,
        text: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        clauses = f"{self._in('organization_id')} AND kind = 'inbound'"
        args: list[Any] = [self._list(org_ids)]
        for column, value in (
            ("status", status),
            ("severity", severity),
            ("integration_key_id", integration_key_id),
        ):
            if value is not None:
                clauses += f" AND {column} = ?"
                args.append(value)
        if text:
            clauses += f" AND lower(title) {LIKE}"
            args.append(contains_pattern(text.lower()))
        if since is not None:
            clauses += " AND started_at >= ?"
            args.append(since)
        if until is not None:
            clauses += " AND started_at < ?"
            args.append(until)
        async with self._read() as c:
            total = int(await c.fetchval(f"SELECT COUNT(*) FROM incidents WHERE {clauses}", *args))
            rows = await c.fetch(
                f"SELECT * FROM incidents WHERE {clauses} ORDER BY id DESC LIMIT ? OFFSET ?",
                *args,
                limit,
                offset,
            )
        table = TABLES["incidents"]
        return [self._row(table, r) for r in rows], total
