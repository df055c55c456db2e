"""Checks (each read with its latest result), heartbeat pings, and what the engine
writes: raw results, status changes and rollups; retention of them all."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import tocsin._core as _core
from tocsin.models import (
    RESULT_FIELDS,
    RESULT_TEXT_FIELDS,
    Result,
    Rollup,
    StatusChange,
    storable_text,
)
from tocsin.store.base import BatchWritten, NotFoundError, Ping, Retention, Row
from tocsin.store.sql.base import (
    CHECK_COLUMNS_SQL,
    CHECK_SELECT,
    DAY,
    LATEST_JOIN,
    LIKE,
    Conn,
    SqlBase,
    contains_pattern,
    day_floor,
)
from tocsin.store.tables import (
    CHECK_COLUMNS,
    CHECK_DEFAULTS,
    CHECK_JSON,
    RESULT_COLUMNS,
    ROLLUP_TIERS,
)

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


class CheckSql(SqlBase):
    # -- checks -------------------------------------------------------------------------

    def _check_values(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(fields)
        if "config" in out:
            out["config"] = self.secrets.seal(out["config"] or {})
        for col in CHECK_JSON & out.keys():
            out[col] = json.dumps(out[col])
        return out

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
            row = await c.fetchrow(f"SELECT {CHECK_SELECT} WHERE c.id = ?", check_id)
        assert row is not None
        return self._check_row(row)

    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                f"SELECT {CHECK_SELECT} WHERE c.id = ? AND {self._in('c.organization_id')}",
                check_id,
                self._list(org_ids),
            )
        return self._check_row(row) if row else None

    async def get_checks(self, org_ids: Collection[int], check_ids: Collection[int]) -> list[Row]:
        if not check_ids:
            return []
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {CHECK_SELECT} WHERE {self._in('c.id')}"
                f" AND {self._in('c.organization_id')} ORDER BY c.id",
                self._list(check_ids),
                self._list(org_ids),
            )
        return [self._check_row(r) for r in rows]

    async def check_states(self, org_ids: Collection[int], check_ids: Collection[int]) -> list[Row]:
        if not check_ids:
            return []
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT id, name, is_active, status, created_at FROM checks"
                f" WHERE {self._in('id')} AND {self._in('organization_id')} ORDER BY id",
                self._list(check_ids),
                self._list(org_ids),
            )
        for r in rows:
            r["is_active"] = bool(r["is_active"])
        return rows

    async def check_by_uuid(self, uuid: str) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(f"SELECT {CHECK_SELECT} WHERE c.uuid = ?", uuid)
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
        team_id: int | None = None,
        service_id: int | None = None,
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
        if team_id is not None:
            clauses += " AND c.owner_team_id = ?"
            args.append(team_id)
        if service_id is not None:
            clauses += " AND c.service_id = ?"
            args.append(service_id)
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
                f"SELECT {CHECK_COLUMNS_SQL} FROM (SELECT * FROM checks c"
                f" WHERE {self._in('c.organization_id')}{clauses}"
                f" ORDER BY c.id LIMIT ? OFFSET ?) c{LATEST_JOIN} ORDER BY c.id",
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
            row = await c.fetchrow(f"SELECT {CHECK_SELECT} WHERE c.id = ?", check_id)
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
            rows = await c.fetch(f"SELECT {CHECK_SELECT} ORDER BY c.id")
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

    async def list_rollups_of(
        self,
        org_ids: Collection[int],
        check_ids: Collection[int],
        tier: str,
        *,
        since_ms: int,
        until_ms: int | None = None,
    ) -> list[Rollup]:
        if tier not in ROLLUP_TIERS:
            raise ValueError(f"unknown rollup tier {tier!r}; one of {sorted(ROLLUP_TIERS)}")
        if not check_ids or (until_ms is not None and since_ms >= until_ms):
            return []
        upper = " AND start_ms < ?" if until_ms is not None else ""
        args: list[Any] = [tier, self._list(check_ids), self._list(org_ids), since_ms]
        if until_ms is not None:
            args.append(until_ms)
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {', '.join(ROLLUP_COLUMNS[1:3])}, {', '.join(ROLLUP_COLUMNS[4:])}"
                f" FROM rollups WHERE tier = ? AND {self._in('check_id')}"
                f" AND {self._in('organization_id')} AND start_ms >= ?{upper}"
                " ORDER BY check_id, start_ms",
                *args,
            )
        # PERF: tens of thousands of rows per call (a page's or a report's checks). The
        # columns are in Rollup's order and, but for a sketch PostgreSQL may hand back as
        # a memoryview, of its types.
        return [
            Rollup(*r.values()) if type(r["sketch"]) is bytes else Rollup(*_rollup_tuple(r))
            for r in rows
        ]

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


# Positions of the record's free text in `Result.values()`.
_TEXT_AT = tuple(RESULT_FIELDS.index(f) for f in RESULT_TEXT_FIELDS)


def _result_row(r: Result, org_id: int) -> tuple[Any, ...]:
    """A result as the store writes it (`RESULT_COLUMNS` order)."""
    values = list(r.values())
    for i in _TEXT_AT:
        values[i] = storable_text(values[i])
    return (values[0], org_id, *values[1:])


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
