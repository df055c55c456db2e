"""The one storage interface the API, the engine and the notifiers use. Every query
that touches organisation data takes the organisations the caller may see."""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from tocsin.models import Result, StatusChange

Row = dict[str, Any]

ROLES = ("OWNER", "ADMIN", "MEMBER", "VIEWER")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user and their role in each organisation."""

    user_id: int
    email: str
    roles: dict[int, str]

    @property
    def org_ids(self) -> list[int]:
        return sorted(self.roles)

    @property
    def default_org_id(self) -> int | None:
        return min(self.roles) if self.roles else None


class NotFoundError(LookupError):
    """The row does not exist for this caller (it may exist in another organisation)."""


class Store(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    # -- identity -------------------------------------------------------------------

    @abc.abstractmethod
    async def count_users(self) -> int: ...

    @abc.abstractmethod
    async def create_user(
        self, email: str, password_hash: str, *, superuser: bool = False
    ) -> int: ...

    @abc.abstractmethod
    async def create_organization(self, name: str) -> Row:
        """Create an organisation with its default project."""

    @abc.abstractmethod
    async def add_membership(self, org_id: int, user_id: int, role: str) -> None: ...

    @abc.abstractmethod
    async def create_token(self, user_id: int, name: str, prefix: str, token_hash: str) -> int: ...

    @abc.abstractmethod
    async def principal_for_token(self, token_hash: str) -> Principal | None: ...

    # -- checks ---------------------------------------------------------------------

    @abc.abstractmethod
    async def default_project(self, org_id: int) -> int: ...

    @abc.abstractmethod
    async def create_check(self, org_id: int, fields: Row) -> Row: ...

    @abc.abstractmethod
    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None: ...

    @abc.abstractmethod
    async def list_checks(
        self, org_ids: Collection[int], *, limit: int, offset: int
    ) -> list[Row]: ...

    @abc.abstractmethod
    async def delete_check(self, org_ids: Collection[int], check_id: int) -> bool: ...

    @abc.abstractmethod
    async def all_checks(self) -> list[Row]:
        """Every check of every organisation: what the engine schedules at start."""

    # -- results --------------------------------------------------------------------

    @abc.abstractmethod
    async def write_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> int:
        """Store results and status changes in one transaction; returns rows written."""

    @abc.abstractmethod
    async def list_results(
        self, org_ids: Collection[int], check_id: int, *, limit: int, before: int | None
    ) -> list[Row]:
        """Newest first; `before` is a result id (keyset pagination)."""
