"""The one storage interface the API, the engine and the notifiers use. Every query
that touches organisation data takes the organisations the caller may see."""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from tocsin.models import Result, Rollup, StatusChange

Row = dict[str, Any]

ROLES = ("OWNER", "ADMIN", "MEMBER", "VIEWER")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user, their role in each organisation, and whether they are a
    superuser (who administers accounts, not organisations)."""

    user_id: int
    email: str
    roles: dict[int, str]
    superuser: bool = False

    @property
    def org_ids(self) -> list[int]:
        return sorted(self.roles)

    @property
    def default_org_id(self) -> int | None:
        return min(self.roles) if self.roles else None


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each tier is kept, in days; None keeps it forever. Raw results and
    minute rollups go by whole UTC days."""

    raw_days: int | None = 14
    minute_days: int | None = 30
    hour_days: int | None = 365
    day_days: int | None = None

    def __post_init__(self) -> None:
        for name in ("raw_days", "minute_days", "hour_days", "day_days"):
            days = getattr(self, name)
            if days is not None and days < 0:
                raise ValueError(f"{name} must be >= 0 or None (forever), not {days}")


@dataclass(frozen=True, slots=True)
class BatchWritten:
    results: int
    changes: int
    rollups: int

    @property
    def rows(self) -> int:
        return self.results + self.changes + self.rollups


@dataclass(frozen=True, slots=True)
class Ping:
    """One heartbeat ping as received: `kind` is success, start, fail, log or exit_code."""

    check_id: int
    kind: str
    received_at: float
    exit_code: int | None = None
    rid: str | None = None
    body: str | None = None
    remote_addr: str | None = None


class InboundEventRow(NamedTuple):
    """One inbound event as stored (`inbound_events`), in its columns' order. An
    `incident_id` below zero names the incident its batch opens at index
    `-incident_id - 1` (`Store.write_inbound_batch`)."""

    organization_id: int
    integration_key_id: int
    incident_id: int | None
    action: str
    dedup_key: str
    source_format: str
    summary: str
    severity: str
    payload: dict[str, Any]
    received_at: float


class NotFoundError(LookupError):
    """The row does not exist for this caller (it may exist in another organisation).
    `field` names the reference at fault when a write points at a foreign row."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(ValueError):
    """The write breaks a uniqueness rule (a slug, a name, a second open incident)."""


class StoreUnavailableError(ConnectionError):
    """The database cannot be reached right now."""


class Store(abc.ABC):
    """Implemented once over SQL for SQLite and PostgreSQL (tocsin.store.sql); the same
    contract tests run against both."""

    backend: str
    # Database sessions begun so far (reads and write transactions), for the operational
    # metrics.
    reads: int = 0
    writes: int = 0

    @abc.abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect and apply pending migrations (unless `migrate` is false); refuse a
        database newer than the code."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    # -- identity -------------------------------------------------------------------

    @abc.abstractmethod
    async def count_users(self) -> int: ...

    @abc.abstractmethod
    async def create_user(
        self, email: str, password_hash: str, *, superuser: bool = False, full_name: str = ""
    ) -> int: ...

    @abc.abstractmethod
    async def get_user(self, user_id: int) -> Row | None: ...

    @abc.abstractmethod
    async def user_by_email(self, email: str) -> Row | None: ...

    @abc.abstractmethod
    async def update_user(self, user_id: int, fields: Mapping[str, Any]) -> Row | None: ...

    @abc.abstractmethod
    async def create_organization(self, name: str, slug: str | None = None) -> Row:
        """Create an organisation with its default project. Its slug is `slug` (a
        ConflictError when taken) or made from the name (numbered when taken)."""

    @abc.abstractmethod
    async def list_organizations(self, org_ids: Collection[int]) -> list[Row]: ...

    @abc.abstractmethod
    async def organization_by_slug(self, slug: str) -> Row | None:
        """The organisation with that slug (callers check membership)."""

    @abc.abstractmethod
    async def update_organization(
        self, org_ids: Collection[int], org_id: int, fields: Mapping[str, Any]
    ) -> Row | None: ...

    @abc.abstractmethod
    async def delete_organization(self, org_ids: Collection[int], org_id: int) -> bool:
        """Delete the organisation and everything it owns."""

    @abc.abstractmethod
    async def add_membership(self, org_id: int, user_id: int, role: str) -> None:
        """Add the user (or change their role); their invitation to the organisation, if
        any, is used up."""

    @abc.abstractmethod
    async def list_members(self, org_ids: Collection[int], org_id: int) -> list[Row]: ...

    # Invitations are addressed to an email, not to an account: creating one neither
    # needs nor tells whether the email has an account. An invitation counts (is listed,
    # may be accepted) while it has not expired and its inviter still holds a role that
    # may grant its role (OWNER for OWNER, ADMIN or OWNER otherwise).

    @abc.abstractmethod
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
        """Invite `email` into the organisation with `role`, or refresh its invitation
        (role, inviter, expiry; a declined one is pending again). Nothing is stored when
        the email is already a member's (False). The organisation's invitations expired by
        `now` are removed. ConflictError when the organisation already has `limit` pending
        invitations and this is a new one."""

    @abc.abstractmethod
    async def list_invitations(
        self,
        org_ids: Collection[int],
        org_id: int,
        now: float,
        *,
        invitation_id: int | None = None,
        email: str | None = None,
    ) -> list[Row]:
        """The organisation's invitations that count (optionally one id, or one email),
        declined ones included: the organisation is not told of a decline."""

    @abc.abstractmethod
    async def revoke_invitation(
        self, org_ids: Collection[int], org_id: int, invitation_id: int
    ) -> bool: ...

    @abc.abstractmethod
    async def user_invitations(self, user_id: int, now: float) -> list[Row]:
        """The invitations that count addressed to the (active) user's email, not
        declined, with the organisation's name and the inviter's email."""

    @abc.abstractmethod
    async def accept_invitation(self, user_id: int, invitation_id: int, now: float) -> Row | None:
        """In one transaction: the user becomes a member with the invitation's role (a
        member already keeps their role) and the invitation is used up. Returns
        `organization_id` and `role`; None when it is not one of `user_invitations`."""

    @abc.abstractmethod
    async def decline_invitation(self, user_id: int, invitation_id: int, now: float) -> bool:
        """Mark one of `user_invitations` declined; False when it is not one of them."""

    @abc.abstractmethod
    async def create_token(
        self,
        user_id: int,
        name: str,
        prefix: str,
        token_hash: str,
        *,
        expires_at: float | None = None,
    ) -> int: ...

    @abc.abstractmethod
    async def list_tokens(self, user_id: int) -> list[Row]: ...

    @abc.abstractmethod
    async def revoke_token(self, user_id: int, token_id: int) -> bool: ...

    @abc.abstractmethod
    async def principal_for_token(self, token_hash: str) -> Principal | None: ...

    @abc.abstractmethod
    async def touch_token(self, token_hash: str, at: float) -> None:
        """Record that a token was used at `at` (never moves last_used_at back)."""

    @abc.abstractmethod
    async def principal_for_user(self, user_id: int) -> Principal | None:
        """The principal of an active user (sessions resolve to it); None when the user
        is missing or inactive."""

    @abc.abstractmethod
    async def password_hash(self, user_id: int) -> str | None: ...

    @abc.abstractmethod
    async def list_users(self, *, limit: int, offset: int) -> list[Row]:
        """Every user, by id (for superusers: users are not organisation-owned)."""

    @abc.abstractmethod
    async def delete_user(self, user_id: int) -> bool:
        """Delete the user with their memberships and tokens. ConflictError when they
        are the only OWNER of an organisation."""

    @abc.abstractmethod
    async def set_member_role(
        self, org_ids: Collection[int], org_id: int, user_id: int, role: str
    ) -> bool:
        """Change an existing member's role; False when not a member. ConflictError when
        it would leave the organisation without an OWNER."""

    @abc.abstractmethod
    async def remove_membership(self, org_ids: Collection[int], org_id: int, user_id: int) -> bool:
        """ConflictError when it would leave the organisation without an OWNER."""

    @abc.abstractmethod
    async def organization_usage(self, org_ids: Collection[int], org_id: int) -> Row | None:
        """Counts of what the organisation holds: checks, results_stored, agents,
        projects, members."""

    @abc.abstractmethod
    async def delete_project(self, org_ids: Collection[int], project_id: int) -> bool:
        """ConflictError for the default project or one that still holds checks."""

    # -- organisation-owned rows (tocsin.store.tables.TABLES) --------------------------

    @abc.abstractmethod
    async def insert(self, kind: str, org_id: int, fields: Mapping[str, Any]) -> Row: ...

    @abc.abstractmethod
    async def get(self, kind: str, org_ids: Collection[int], row_id: int) -> Row | None: ...

    @abc.abstractmethod
    async def scan(self, kind: str, *, after_id: int = 0, limit: int = 500) -> list[Row]:
        """Rows of every organisation, by id, after `after_id` (for the server's own
        background work, never for a caller: callers read through their organisations)."""

    @abc.abstractmethod
    async def select(
        self,
        kind: str,
        org_ids: Collection[int],
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Row]: ...

    @abc.abstractmethod
    async def count(
        self, kind: str, org_ids: Collection[int], *, where: Mapping[str, Any] | None = None
    ) -> int: ...

    @abc.abstractmethod
    async def update(
        self, kind: str, org_ids: Collection[int], row_id: int, fields: Mapping[str, Any]
    ) -> Row | None: ...

    @abc.abstractmethod
    async def delete(self, kind: str, org_ids: Collection[int], row_id: int) -> bool: ...

    @abc.abstractmethod
    async def link(self, kind: str, org_id: int, left: int, right: int) -> None:
        """Link two rows of one organisation (idempotent); NotFoundError if either is
        not that organisation's."""

    @abc.abstractmethod
    async def unlink(self, kind: str, org_ids: Collection[int], left: int, right: int) -> bool: ...

    @abc.abstractmethod
    async def linked(self, kind: str, org_ids: Collection[int], left: int) -> list[int]: ...

    # -- checks ---------------------------------------------------------------------

    @abc.abstractmethod
    async def default_project(self, org_id: int) -> int: ...

    @abc.abstractmethod
    async def create_check(self, org_id: int, fields: Mapping[str, Any]) -> Row: ...

    @abc.abstractmethod
    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None: ...

    @abc.abstractmethod
    async def get_checks(self, org_ids: Collection[int], check_ids: Collection[int]) -> list[Row]:
        """The checks with these ids in these organisations, in one read, by id (ids of
        missing checks or of other organisations are left out)."""

    @abc.abstractmethod
    async def check_states(self, org_ids: Collection[int], check_ids: Collection[int]) -> list[Row]:
        """`id`, `name`, `is_active`, the stored `status` and `created_at` of these checks,
        in one read of the checks alone, by id (what a status page shows of a
        component)."""

    @abc.abstractmethod
    async def check_by_uuid(self, uuid: str) -> Row | None:
        """For public endpoints (pings, badges): the uuid is the secret."""

    @abc.abstractmethod
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
    ) -> list[Row]: ...

    @abc.abstractmethod
    async def update_check(
        self, org_ids: Collection[int], check_id: int, fields: Mapping[str, Any]
    ) -> Row | None: ...

    @abc.abstractmethod
    async def delete_check(self, org_ids: Collection[int], check_id: int) -> bool: ...

    @abc.abstractmethod
    async def all_checks(self) -> list[Row]:
        """Every check of every organisation: what the engine schedules at start."""

    @abc.abstractmethod
    async def check_sources(self, org_ids: Collection[int], check_id: int) -> dict[str, str]:
        """The latest status each source reported for the check."""

    @abc.abstractmethod
    async def record_pings(self, pings: Sequence[Ping]) -> list[bool]:
        """Keep heartbeat pings (with their run logs) and move each check's
        `last_ping_at`, all in one transaction. Pings are public (the check's uuid is the
        secret), so they are keyed by the check alone; False for a check that no longer
        exists."""

    @abc.abstractmethod
    async def list_pings(
        self, org_ids: Collection[int], check_id: int, *, limit: int, before: int | None
    ) -> list[Row]:
        """Newest first; `before` is a ping id (keyset pagination)."""

    # -- results and rollups ----------------------------------------------------------

    @abc.abstractmethod
    async def write_batch(
        self,
        results: Sequence[Result],
        changes: Sequence[StatusChange],
        rollups: Sequence[Rollup] = (),
    ) -> BatchWritten:
        """Store results, status changes and closed minute rollups (merged into the hour
        and day tiers) in one transaction. Rows of checks deleted meanwhile are skipped."""

    @abc.abstractmethod
    async def list_results(
        self, org_ids: Collection[int], check_id: int, *, limit: int, before: int | None
    ) -> list[Row]:
        """Newest first; `before` is a result id (keyset pagination)."""

    @abc.abstractmethod
    async def list_rollups(
        self,
        org_ids: Collection[int],
        check_id: int,
        tier: str,
        *,
        since_ms: int,
        until_ms: int | None = None,
    ) -> list[Rollup]:
        """Buckets of one tier (`minute`, `hour`, `day`) starting in [since, until)."""

    @abc.abstractmethod
    async def list_rollups_of(
        self,
        org_ids: Collection[int],
        check_ids: Collection[int],
        tier: str,
        *,
        since_ms: int,
        until_ms: int | None = None,
    ) -> list[Rollup]:
        """`list_rollups` of many checks in one read, by check then start (checks of
        other organisations have none)."""

    @abc.abstractmethod
    async def enforce_retention(self, policy: Retention, now: float) -> dict[str, int]:
        """Remove what the policy no longer keeps; returns rows (or partitions) removed
        per tier."""

    # -- agents -----------------------------------------------------------------------

    @abc.abstractmethod
    async def register_agent(
        self, token_hash: str, fields: Mapping[str, Any], now: float
    ) -> Row | None:
        """Use a registration token (unused, unexpired) and create its agent (`name`,
        `kind`, `location`, `credential_hash`, `version`) in its organisation, in one
        transaction; a location on the token binds (the agent's `location` counts only
        when the token has none); a geo agent's location is added to the geo locations. None when
        the token is unknown, used or expired."""

    @abc.abstractmethod
    async def agent_by_credential(self, credential_hash: str) -> Row | None:
        """The agent (of any organisation) holding this credential, unless revoked."""

    @abc.abstractmethod
    async def accept_agent_batch(
        self, org_id: int, agent_id: int, seq: int, rows: Sequence[tuple[Any, ...]]
    ) -> bool:
        """Store a batch of an agent's results exactly once: when `seq` is above the
        agent's last accepted batch, its result rows (RESULT_COLUMNS order, organisation
        `org_id`) and the new sequence number are written in one transaction and True is
        returned; a replayed or older batch (or a revoked agent) changes nothing and
        returns False. A batch with a row for a check that is not the agent's (not of
        `org_id`, not assigned to it, not geo-monitored for a geo agent) is refused whole:
        NotFoundError(field="results"), nothing stored, the sequence number unchanged."""

    @abc.abstractmethod
    async def agent_checks(self, org_id: int, agent_id: int, geo: bool) -> list[Row]:
        """The organisation's active checks an agent runs: assigned to it, or (`geo`)
        with geo monitoring enabled."""

    @abc.abstractmethod
    async def assignment_version(self, org_id: int) -> str:
        """A value that changes whenever any check of the organisation changes."""

    @abc.abstractmethod
    async def mark_agents_offline(self, heard_before: float) -> list[Row]:
        """Set online agents last heard before `heard_before` offline; returns them."""

    @abc.abstractmethod
    async def list_geo_locations(self) -> list[Row]:
        """Every geo location (shared by all organisations)."""

    @abc.abstractmethod
    async def source_results(
        self, org_ids: Collection[int], check_id: int, since: float
    ) -> list[Row]:
        """`source, status, started_at, latency_ms` of a check's raw results since
        `since`, oldest first."""

    # -- notifications ----------------------------------------------------------------

    @abc.abstractmethod
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
        """Insert an incident (`incident_id` None) or update one, add its timeline event
        (`kind`, `actor_id`, `at`, `detail`) and its notification outbox rows, in ONE
        transaction. Each outbox row gives `channel_id`, `event`, `dedup_key` (with
        `{incident}` standing for the incident's id), `payload` (gets `incident_id`),
        `status`, `next_attempt_at`, optionally `check_id`; a row whose channel is no
        longer the organisation's, or whose dedup_key exists, is skipped. An update of an
        incident missing, or not in `only_if_status`, changes nothing and returns None.
        ConflictError when the insert breaks the one-open-incident rule."""

    @abc.abstractmethod
    async def write_incident_batch(self, ops: Sequence[Mapping[str, Any]]) -> list[Row | None]:
        """Several `write_incident_change`s in ONE transaction, in order; each op is a
        dict of its arguments plus `org_id`, and may give `ref` (the index of an earlier
        op) instead of `incident_id` to change the incident that op wrote. One result
        per op. A ConflictError rolls the whole batch back."""

    @abc.abstractmethod
    async def check_incidents_between(
        self,
        org_ids: Collection[int],
        check_ids: Collection[int],
        *,
        since: float,
        until: float,
        limit: int,
    ) -> list[Row]:
        """Incidents of these checks open at some time in [since, until) (begun before
        `until`, not resolved before `since`), newest first, at most `limit`."""

    @abc.abstractmethod
    async def claim_deliveries(self, now: float, limit: int, lease: float) -> list[Row]:
        """Due outbox rows (pending, or sending with an expired lease) of every
        organisation, marked `sending` until `now + lease` with `attempts` counted."""

    @abc.abstractmethod
    async def settle_deliveries(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Set the fields (status, next_attempt_at, last_error, response_code,
        delivered_at) of outbox rows still `sending` (others are left alone), in one
        transaction."""

    @abc.abstractmethod
    async def open_check_incidents(self, check_ids: Collection[int] | None = None) -> list[Row]:
        """Every unresolved incident of a check, of every organisation (for reminders), or
        only those of `check_ids`."""

    @abc.abstractmethod
    async def escalating_incidents(self) -> list[tuple[int, float]]:
        """`(incident id, due time)` of every open incident with an escalation step
        pending, of every organisation (re-armed at start-up)."""

    @abc.abstractmethod
    async def incidents_by_id(self, ids: Collection[int]) -> list[Row]:
        """The incidents with these ids, of any organisation (the escalation's own
        reads; never for a caller's request)."""

    @abc.abstractmethod
    async def delete_escalation_policy(
        self, org_ids: Collection[int], policy_id: int
    ) -> list[int] | None:
        """Delete the policy and clear it from the organisation's checks, in one
        transaction (integration keys drop it by their foreign key): the ids of the
        checks that named it, or None when there is no such policy."""

    @abc.abstractmethod
    async def channel_checks(self, org_ids: Collection[int], channel_id: int) -> list[int]:
        """The checks linked to a notification channel (`check_channels`)."""

    @abc.abstractmethod
    async def channel_routes(
        self, org_ids: Collection[int], check_ids: Collection[int]
    ) -> tuple[list[tuple[int, int]], list[Row]]:
        """For routing many transitions at once: the `(check_id, channel_id)` links of
        these checks, and the channels that can hear of them (the linked ones and the
        default ones of these organisations), with two reads."""

    # -- status pages (store/sql/status_pages.py) -----------------------------------------

    # Subscribers (notify/subscribers.py): outbox rows with no channel are mails to them.

    @abc.abstractmethod
    async def status_page_by_slug(self, slug: str) -> Row | None:
        """The status page with this slug (slugs are unique across the server), of
        whichever organisation, public or not: what the public routes start from."""

    @abc.abstractmethod
    async def subscribe(
        self,
        page: Mapping[str, Any],
        email: str,
        token_hash: str,
        now: float,
        *,
        resend_after: float,
        max_subscribers: int,
        delivery: Any,
    ) -> tuple[Row | None, str]:
        """Subscribe `email` to `page` (unconfirmed, with `token_hash`), in ONE transaction
        with its confirmation mail (`delivery(subscriber_row)`: an outbox row as for
        `queue_deliveries`). Answers (row, what): `new`; `renewed` (unconfirmed, the
        token replaced: its last mail is older than `resend_after` seconds); `recent` or
        `confirmed` (nothing changed, no mail); (None, `full`) when the page has
        `max_subscribers` already."""

    @abc.abstractmethod
    async def subscribed_pages(self) -> list[Row]:
        """The public status pages (of every organisation) that have a confirmed
        subscriber."""

    @abc.abstractmethod
    async def subscriber_by_id(self, subscriber_id: int) -> Row | None:
        """A subscriber of any page (its unsubscribe token names it): the row or None."""

    @abc.abstractmethod
    async def subscriber(self, page_id: int, subscriber_id: int) -> Row | None: ...

    @abc.abstractmethod
    async def confirm_subscriber(
        self, page_id: int, subscriber_id: int, token_hash: str, issued_after: float, now: float
    ) -> Row | None:
        """Confirm the subscriber if `token_hash` is its token and it was issued after
        `issued_after` (or it is confirmed already); None otherwise."""

    @abc.abstractmethod
    async def delete_subscriber(self, page_id: int, subscriber_id: int) -> bool: ...

    @abc.abstractmethod
    async def confirmed_subscribers(
        self, page_ids: Collection[int], *, after_id: int = 0, limit: int = 1000
    ) -> list[Row]:
        """Confirmed subscribers of these pages with an id above `after_id`, by id."""

    @abc.abstractmethod
    async def purge_unconfirmed_subscribers(self, before: float) -> int:
        """Remove the unconfirmed subscribers whose last token was issued before `before`."""

    @abc.abstractmethod
    async def queue_deliveries(self, org_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Outbox rows outside an incident change (`event`, `dedup_key`, `payload`,
        optionally `channel_id`, `check_id`, `status`, `next_attempt_at`), in one
        transaction; a row whose dedup_key exists is skipped."""

    # -- feedback (store/sql/feedback.py) -------------------------------------------------

    @abc.abstractmethod
    async def create_feedback(
        self, user_id: int, org_id: int | None, kind: str, message: str, page: str | None
    ) -> Row:
        """Store a user's feedback (`status` new)."""

    @abc.abstractmethod
    async def list_feedback(
        self,
        *,
        user_id: int | None,
        status: str | None,
        kind: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Row], int]:
        """Newest first, with the total; `user_id` None: everyone's."""

    @abc.abstractmethod
    async def get_feedback(self, feedback_id: int) -> Row | None: ...

    @abc.abstractmethod
    async def update_feedback(self, feedback_id: int, fields: Mapping[str, Any]) -> Row | None:
        """Triage: `status`, `response`, `responded_by`, `responded_at`."""

    # -- reports (store/sql/reports.py) ---------------------------------------------------

    @abc.abstractmethod
    async def report_checks(
        self, org_ids: Collection[int], *, project_id: int | None = None
    ) -> list[Row]:
        """Every check of these organisations (of one project if given), by id."""

    @abc.abstractmethod
    async def list_reports(
        self, org_ids: Collection[int], *, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        """Reports without their document, newest first, and how many there are."""

    @abc.abstractmethod
    async def report_meta(self, org_ids: Collection[int], report_id: int) -> Row | None:
        """A report without its document."""

    @abc.abstractmethod
    async def unfinished_reports(self) -> list[Row]:
        """Every `pending` or `running` report of every organisation (id,
        organization_id, status), oldest first: what a restart picks up."""

    # -- metrics keys (store/sql/metrics.py) ----------------------------------------------

    @abc.abstractmethod
    async def metrics_key_by_hash(self, key_hash: str) -> Row | None:
        """The metrics key (of any organisation, revoked or not: `revoked_at` says) with
        this SHA-256 hash: `id`, `organization_id`, `name`, `prefix`, `last_used_at`,
        `revoked_at`."""

    @abc.abstractmethod
    async def touch_metrics_key(self, key_id: int, at: float) -> None: ...

    @abc.abstractmethod
    async def pending_deliveries(self) -> int:
        """Outbox rows not yet settled (pending or sending), of every organisation."""

    # -- profile: contact methods and notification rules (store/sql/profile.py) ---------
    # A user's own rows (not an organisation's). Contact method values are sealed at rest
    # and come back in clear; `verified` is a boolean.

    @abc.abstractmethod
    async def list_contact_methods(
        self, user_ids: Collection[int], *, verified_only: bool = False
    ) -> list[Row]:
        """The contact methods of these users (only verified ones if asked), by user and
        id."""

    @abc.abstractmethod
    async def get_contact_method(self, user_id: int, method_id: int) -> Row | None:
        """The user's contact method, or None (missing, or another user's)."""

    @abc.abstractmethod
    async def create_contact_method(
        self, user_id: int, fields: Mapping[str, Any], *, limit: int
    ) -> Row | None:
        """Add a contact method (`kind`, `value`, `label`, `verified`, `verified_at`,
        `verification_hash`, `verification_sent_at`); None when the user has `limit`
        already. NotFoundError for a user that does not exist."""

    @abc.abstractmethod
    async def update_contact_method(
        self, user_id: int, method_id: int, fields: Mapping[str, Any]
    ) -> Row | None:
        """Change the user's contact method (the fields of `create_contact_method`); None
        when it is not theirs."""

    @abc.abstractmethod
    async def delete_contact_method(self, user_id: int, method_id: int) -> bool:
        """Remove the user's contact method and the notification rules naming it."""

    @abc.abstractmethod
    async def renew_verification(
        self, user_id: int, method_id: int, token_hash: str, now: float, *, resend_after: float
    ) -> tuple[Row | None, float]:
        """Give the user's unverified contact method a new token issued `now`, unless its
        last one was issued less than `resend_after` seconds ago. Answers (row, 0) when
        renewed, (row, seconds to wait) when too soon, (row, 0) unchanged when it is
        verified already, (None, 0) when it is not the user's."""

    @abc.abstractmethod
    async def contact_method_by_token(self, token_hash: str, issued_after: float) -> Row | None:
        """The unverified contact method (of any user) whose token has this hash and was
        issued after `issued_after`."""

    @abc.abstractmethod
    async def verify_contact_method(
        self, token_hash: str, issued_after: float, now: float
    ) -> Row | None:
        """Mark verified the unverified contact method whose token has this hash and was
        issued after `issued_after` (the token is used up); None when there is none."""

    @abc.abstractmethod
    async def list_notification_rules(self, user_ids: Collection[int]) -> list[Row]:
        """The notification rules of these users (`contact_method_id`, `delay_minutes`),
        by user, delay and id."""

    @abc.abstractmethod
    async def replace_notification_rules(
        self, user_id: int, rules: Sequence[tuple[int, int]]
    ) -> list[Row]:
        """Replace the user's rules with `(contact method id, delay in minutes)` each, in
        one transaction; NotFoundError (its `field`: `notification_rules.{i}.
        contact_method_id`) when a method is not the user's."""

    # -- paging: integration keys and inbound events (store/sql/paging.py) --------------

    @abc.abstractmethod
    async def integration_key_by_hash(self, key_hash: str) -> Row | None:
        """The integration key (of any organisation, revoked or not: `revoked_at` says)
        with this SHA-256 hash, every column but the hash."""

    @abc.abstractmethod
    async def open_inbound_incidents(self) -> list[Row]:
        """Every inbound incident not resolved, of every organisation, oldest first; each
        with `aliases`: the dedup keys that joined it by grouping (its `grouped`
        timeline events), besides its own."""

    @abc.abstractmethod
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
        """Apply a batch of inbound events in ONE transaction, with a fixed number of
        statements: insert `new_incidents` (incident columns and `organization_id`),
        update incidents (`(id, fields)`, fields among status, severity, title,
        acknowledged_at, resolved_at, event_count, last_event_at and
        escalation_due_at: one that sets `status` ACKNOWLEDGED changes only an OPEN
        incident, RESOLVED only one not resolved yet), insert the events,
        the timeline events `(organization_id, incident_id, kind, detail, at)` and the
        outbox rows `(organization_id, incident_id, delivery)` (as planned by
        `Router.plan`), and move each key's `last_event_at` forward. An incident id
        below zero names `new_incidents[-id - 1]`. Returns the new incidents' ids."""

    @abc.abstractmethod
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
        """A page of inbound incidents, newest first, and how many match: `text` in the
        title (any letter case), started at or after `since` and before `until`."""
