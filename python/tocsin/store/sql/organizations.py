"""Organisations, their projects and settings, and the rows an organisation owns through
the generic registry (`tocsin.store.tables`): insert, get, select, count, update, delete,
link."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from tocsin.slugs import numbered, slugify
from tocsin.store.base import ConflictError, NotFoundError, Row
from tocsin.store.sql.base import Conn, SqlBase, from_json
from tocsin.store.tables import LINKS, TABLES, Table


class OrganizationSql(SqlBase):
    # -- organisations and projects ------------------------------------------------------

    async def create_organization(self, name: str, slug: str | None = None) -> Row:
        now = time.time()
        # Names are not unique: refusing one would tell the caller that an organisation
        # it cannot see has that name. Slugs are: one made from the name is numbered
        # (`acme-2`) when taken; one asked for and taken is a ConflictError.
        base = slug or slugify(name) or "org"
        for attempt in range(1, 50):
            candidate = base if attempt == 1 else numbered(base, attempt)
            try:
                async with self._write() as c:
                    if slug is None and await c.fetchval(
                        "SELECT 1 FROM organizations WHERE slug = ?", candidate
                    ):
                        continue
                    org_id = int(
                        await c.fetchval(
                            "INSERT INTO organizations (name, slug, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?) RETURNING id",
                            name,
                            candidate,
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
            except Exception as exc:
                # Taken by a concurrent create: the next number (or, asked for, refused).
                if not self._is_conflict(exc):
                    raise
                if slug is not None:
                    raise ConflictError("an organisation with that slug already exists") from None
                continue
            return {
                "id": org_id,
                "name": name,
                "slug": candidate,
                "settings": {},
                "default_project_id": project_id,
                "created_at": now,
                "updated_at": now,
            }
        raise ConflictError("no free slug for that name; send one")

    async def list_organizations(self, org_ids: Collection[int]) -> list[Row]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT o.id, o.name, o.slug, o.settings, o.created_at, o.updated_at,"
                " p.id AS default_project_id FROM organizations o"
                " LEFT JOIN projects p ON p.organization_id = o.id AND p.is_default = ?"
                f" WHERE {self._in('o.id')} ORDER BY o.id",
                True,
                self._list(org_ids),
            )
        for r in rows:
            r["settings"] = from_json(r["settings"])
        return rows

    async def organization_by_slug(self, slug: str) -> Row | None:
        async with self._read() as c:
            org_id = await c.fetchval("SELECT id FROM organizations WHERE slug = ?", slug)
        if org_id is None:
            return None
        rows = await self.list_organizations([int(org_id)])
        return rows[0] if rows else None

    async def update_organization(
        self, org_ids: Collection[int], org_id: int, fields: Mapping[str, Any]
    ) -> Row | None:
        unknown = set(fields) - {"name", "slug", "settings"}
        if unknown:
            raise ValueError(f"organizations has no writable column(s) {sorted(unknown)}")
        if org_id not in org_ids:
            return None
        values = dict(fields)
        if "settings" in values:
            values["settings"] = json.dumps(values["settings"])
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._write() as c, self._unique("an organisation with that slug"):
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

    async def scan(self, kind: str, *, after_id: int = 0, limit: int = 500) -> list[Row]:
        table = TABLES[kind]
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT * FROM {kind} WHERE id > ? ORDER BY id LIMIT ?", after_id, limit
            )
        return [self._row(table, r) for r in rows]

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
