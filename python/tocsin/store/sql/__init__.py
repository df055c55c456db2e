"""The store written once in SQL that SQLite and PostgreSQL both speak. A backend supplies
connections (`Conn`), how a list parameter is matched, and its own bulk paths (COPY,
partitions); everything else, and so every organisation scope, lives here.

`SqlStore` is composed of one class per area, each in a module of its own over the
shared plumbing of `base` (connections, row shaping, migrations):

- `identity`: users, memberships, invitations, API tokens;
- `organizations`: organisations, projects, settings, generic organisation-owned rows;
- `checks`: checks, pings, results, status changes, rollups, retention;
- `agents`: agent registration, result batches, assignments, liveness;
- `incidents`: incident changes with their timeline events and outbox rows;
- `notifications`: claiming and settling deliveries, channel routing;
- `status_pages`: status pages and their subscribers;
- `reports`: reports built in the background;
- `metrics`: metrics keys;
- `profile`: a user's contact methods and notification rules;
- `paging`: integration keys, inbound events, pending escalations."""

from __future__ import annotations

from tocsin.store.sql.agents import AgentSql
from tocsin.store.sql.base import (
    DAY,
    LATEST_READ,
    LATEST_SET,
    LIKE,
    Conn,
    SqlBase,
    contains_pattern,
    day_floor,
)
from tocsin.store.sql.checks import ROLLUP_COLUMNS, CheckSql
from tocsin.store.sql.feedback import FeedbackSql
from tocsin.store.sql.identity import IdentitySql
from tocsin.store.sql.incidents import IncidentSql
from tocsin.store.sql.metrics import MetricsSql
from tocsin.store.sql.notifications import NotificationSql
from tocsin.store.sql.organizations import OrganizationSql
from tocsin.store.sql.paging import PagingSql
from tocsin.store.sql.profile import ProfileSql
from tocsin.store.sql.reports import ReportSql
from tocsin.store.sql.status_pages import StatusPageSql


class SqlStore(
    IdentitySql,
    OrganizationSql,
    CheckSql,
    AgentSql,
    IncidentSql,
    NotificationSql,
    StatusPageSql,
    ReportSql,
    MetricsSql,
    ProfileSql,
    PagingSql,
    FeedbackSql,
):
    """The whole `Store` over SQL; a backend (`SqliteStore`, `PostgresStore`) subclasses it
    and implements the abstract methods of `SqlBase`."""


__all__ = [
    "DAY",
    "LATEST_READ",
    "LATEST_SET",
    "LIKE",
    "ROLLUP_COLUMNS",
    "Conn",
    "SqlBase",
    "SqlStore",
    "contains_pattern",
    "day_floor",
]
