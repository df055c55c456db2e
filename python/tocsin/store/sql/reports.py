"""The store's part for reports built in the background: the rows a report reads in
bulk (the checks of a project or organisation; many checks' rollups are
`list_rollups_of`, store/sql/checks.py, and the incidents of a period
`check_incidents_between`, store/sql/incidents.py), and the report rows without their
document (lists) or every unfinished one (a restart)."""

from __future__ import annotations

from collections.abc import Collection

from tocsin.store.base import Row
from tocsin.store.sql.base import CHECK_SELECT, SqlBase
from tocsin.store.tables import TABLES

# Every column of a report but the document.
REPORT_META = (
    "id, organization_id, name, format, status, params, content_type, size, error,"
    " created_by, started_at, finished_at, created_at, updated_at"
)


class ReportSql(SqlBase):
    async def report_checks(
        self, org_ids: Collection[int], *, project_id: int | None = None
    ) -> list[Row]:
        """Every check of these organisations (of one project if given), by id."""
        where, args = f"{self._in('c.organization_id')}", [self._list(org_ids)]
        if project_id is not None:
            where += " AND c.project_id = ?"
            args.append(project_id)
        async with self._read() as c:
            rows = await c.fetch(f"SELECT {CHECK_SELECT} WHERE {where} ORDER BY c.id", *args)
        return [self._check_row(r) for r in rows]

    async def list_reports(
        self, org_ids: Collection[int], *, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {REPORT_META} FROM reports WHERE {self._in('organization_id')}"
                " ORDER BY id DESC LIMIT ? OFFSET ?",
                self._list(org_ids),
                limit,
                offset,
            )
            total = await c.fetchval(
                f"SELECT COUNT(*) FROM reports WHERE {self._in('organization_id')}",
                self._list(org_ids),
            )
        table = TABLES["reports"]
        return [self._row(table, r) for r in rows], int(total or 0)

    async def report_meta(self, org_ids: Collection[int], report_id: int) -> Row | None:
        async with self._read_point() as c:
            row = await c.fetchrow(
                f"SELECT {REPORT_META} FROM reports WHERE id = ? AND {self._in('organization_id')}",
                report_id,
                self._list(org_ids),
            )
        return self._row(TABLES["reports"], row) if row else None

    async def unfinished_reports(self) -> list[Row]:
        async with self._read() as c:
            return await c.fetch(
                "SELECT id, organization_id, status FROM reports"
                " WHERE status IN ('pending', 'running') ORDER BY id"
            )


__all__ = ["REPORT_META", "ReportSql"]
