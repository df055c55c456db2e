"""The organisation-owned tables the store reads and writes generically: which columns a
caller may set, which hold JSON, booleans or secrets, and which point at other
organisation-owned rows (checked to be in the same organisation on every write)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tocsin.models import RESULT_FIELDS


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    json: frozenset[str] = frozenset()
    bools: frozenset[str] = frozenset()
    # JSON columns whose secret values are encrypted at rest (see tocsin.encryption).
    sealed: frozenset[str] = frozenset()
    # column -> table: the referenced row must belong to the same organisation.
    refs: dict[str, str] = field(default_factory=dict)
    # Columns a list may filter on with equality.
    filters: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Link:
    """A many-to-many link between two organisation-owned rows."""

    name: str
    left: str
    left_table: str
    right: str
    right_table: str


def _t(name: str, columns: str, **kw: object) -> Table:
    return Table(name, tuple(columns.split()), **kw)  # type: ignore[arg-type]


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _t("projects", "name description is_default", bools=frozenset({"is_default"})),
        _t(
            "incidents",
            "check_id kind status severity title cause dedup_key sources started_at"
            " acknowledged_at acknowledged_by resolved_at resolved_by integration_key_id"
            " event_count details last_event_at escalation_policy_id escalation_step"
            " escalation_round escalation_due_at service_id",
            json=frozenset({"sources", "details"}),
            refs={
                "check_id": "checks",
                "integration_key_id": "integration_keys",
                "service_id": "services",
            },
            filters=frozenset(
                {"check_id", "status", "kind", "dedup_key", "integration_key_id", "service_id"}
            ),
        ),
        _t(
            "incident_notes",
            "incident_id author_id body",
            refs={"incident_id": "incidents"},
            filters=frozenset({"incident_id"}),
        ),
        _t(
            "incident_events",
            "incident_id kind actor_id detail at",
            json=frozenset({"detail"}),
            refs={"incident_id": "incidents"},
            filters=frozenset({"incident_id"}),
        ),
        _t(
            "maintenance_windows",
            "name description check_ids starts_at duration_s rrule cron timezone is_active"
            " created_by",
            json=frozenset({"check_ids"}),
            bools=frozenset({"is_active"}),
            filters=frozenset({"is_active"}),
        ),
        _t(
            "notification_channels",
            "name channel_type config is_default is_active",
            json=frozenset({"config"}),
            bools=frozenset({"is_default", "is_active"}),
            sealed=frozenset({"config"}),
            filters=frozenset({"channel_type", "is_default", "is_active"}),
        ),
        _t(
            "notification_deliveries",
            "channel_id incident_id check_id event dedup_key payload status attempts"
            " next_attempt_at last_error response_code delivered_at",
            json=frozenset({"payload"}),
            refs={
                "channel_id": "notification_channels",
                "incident_id": "incidents",
                "check_id": "checks",
            },
            filters=frozenset({"channel_id", "incident_id", "check_id", "status"}),
        ),
        _t(
            "status_pages",
            "name slug description is_public logo_url check_ids components owner_team_id",
            json=frozenset({"check_ids", "components"}),
            bools=frozenset({"is_public"}),
            refs={"owner_team_id": "teams"},
            filters=frozenset({"slug", "owner_team_id"}),
        ),
        _t(
            "status_page_subscribers",
            "status_page_id email confirmed token_hash confirmed_at",
            bools=frozenset({"confirmed"}),
            refs={"status_page_id": "status_pages"},
            filters=frozenset({"status_page_id"}),
        ),
        _t(
            "agents",
            "name kind location credential_hash status version load queue_depth"
            " last_heartbeat_at last_batch_seq revoked_at",
            filters=frozenset({"kind", "status", "location"}),
        ),
        _t(
            "agent_registration_tokens",
            "name token_hash prefix location expires_at used_at agent_id",
            refs={"agent_id": "agents"},
        ),
        _t(
            "slos",
            "check_id sli_type target_percentage window_days latency_threshold_ms"
            " notify_on_budget_warn budget_warn_pct notify_on_budget_exhausted"
            " burn_rate_alert_enabled burn_rate_threshold burn_rate_window_minutes"
            " alert_state evaluated_at",
            json=frozenset({"alert_state"}),
            bools=frozenset(
                {"notify_on_budget_warn", "notify_on_budget_exhausted", "burn_rate_alert_enabled"}
            ),
            refs={"check_id": "checks"},
            filters=frozenset({"check_id"}),
        ),
        _t(
            "applications",
            "name roles key_hash prefix revoked_at",
            json=frozenset({"roles"}),
        ),
        _t("systems", "name description owner metadata", json=frozenset({"metadata"})),
        _t(
            "reports",
            "name format status params content_type document size error created_by"
            " started_at finished_at",
            json=frozenset({"params"}),
            filters=frozenset({"status", "format"}),
        ),
        _t(
            "metrics_keys",
            "name key_hash prefix created_by last_used_at revoked_at",
        ),
        _t("system_groups", "name description"),
        _t(
            "oncall_schedules",
            "name description timezone layers owner_team_id",
            json=frozenset({"layers"}),
            refs={"owner_team_id": "teams"},
            filters=frozenset({"owner_team_id"}),
        ),
        _t(
            "oncall_overrides",
            "schedule_id user_id starts_at ends_at created_by",
            refs={"schedule_id": "oncall_schedules"},
            filters=frozenset({"schedule_id"}),
        ),
        _t(
            "escalation_policies",
            "name description steps repeat_count owner_team_id",
            json=frozenset({"steps"}),
            refs={"owner_team_id": "teams"},
            filters=frozenset({"owner_team_id"}),
        ),
        _t(
            "integration_keys",
            "name key_hash prefix escalation_policy_id grouping_type grouping_window_seconds"
            " grouping_field created_by last_event_at revoked_at service_id",
            refs={"escalation_policy_id": "escalation_policies", "service_id": "services"},
            filters=frozenset({"service_id"}),
        ),
        _t(
            "inbound_events",
            "integration_key_id incident_id action dedup_key source_format summary severity"
            " payload received_at",
            json=frozenset({"payload"}),
            refs={"integration_key_id": "integration_keys", "incident_id": "incidents"},
            filters=frozenset({"integration_key_id", "incident_id", "dedup_key"}),
        ),
        _t("teams", "name slug description", filters=frozenset({"slug"})),
        _t(
            "team_members",
            "team_id user_id role",
            refs={"team_id": "teams"},
            filters=frozenset({"team_id", "user_id"}),
        ),
        _t(
            "services",
            "name description repo_url docs_url owner_team_id escalation_policy_id tier"
            " notification_channel_ids slack_channel metadata_json",
            json=frozenset({"notification_channel_ids", "metadata_json"}),
            refs={"owner_team_id": "teams", "escalation_policy_id": "escalation_policies"},
            filters=frozenset({"owner_team_id", "tier"}),
        ),
        _t(
            "playbooks",
            "name description trigger_type trigger_conditions service_id"
            " suppress_default_notifications is_active steps created_by",
            json=frozenset({"trigger_conditions", "steps"}),
            bools=frozenset({"suppress_default_notifications", "is_active"}),
            refs={"service_id": "services"},
            filters=frozenset({"trigger_type", "service_id", "is_active"}),
        ),
        _t(
            "playbook_runs",
            "playbook_id incident_id status steps started_at finished_at",
            json=frozenset({"steps"}),
            refs={"playbook_id": "playbooks", "incident_id": "incidents"},
            filters=frozenset({"playbook_id", "incident_id", "status"}),
        ),
        _t(
            "war_rooms",
            "incident_id title status summary opened_by closed_by opened_at closed_at",
            refs={"incident_id": "incidents"},
            filters=frozenset({"incident_id", "status"}),
        ),
        _t(
            "war_room_members",
            "war_room_id user_id role added_by",
            refs={"war_room_id": "war_rooms"},
            filters=frozenset({"war_room_id", "user_id"}),
        ),
        _t(
            "war_room_entries",
            "war_room_id kind actor_id body at",
            refs={"war_room_id": "war_rooms"},
            filters=frozenset({"war_room_id"}),
        ),
        _t(
            "postmortems",
            "title status incident_ids timeline summary impact root_cause what_went_well"
            " what_went_wrong action_items author_id published_at",
            json=frozenset({"incident_ids", "timeline", "action_items"}),
            filters=frozenset({"status"}),
        ),
        _t(
            "lifecycle_watches",
            "vendor platform resource_id resource_type version notify_on_new notify_90d"
            " notify_30d notify_7d channel_ids last_checked_at known_latest created_by",
            json=frozenset({"channel_ids"}),
            bools=frozenset({"notify_on_new", "notify_90d", "notify_30d", "notify_7d"}),
            filters=frozenset({"platform", "vendor"}),
        ),
        _t(
            "lifecycle_notices",
            "watch_id notice detail at",
            json=frozenset({"detail"}),
            refs={"watch_id": "lifecycle_watches"},
            filters=frozenset({"watch_id"}),
        ),
        _t(
            "slo_events",
            "slo_id check_id kind detail at",
            json=frozenset({"detail"}),
            refs={"slo_id": "slos", "check_id": "checks"},
            filters=frozenset({"slo_id", "check_id"}),
        ),
    )
}

LINKS: dict[str, Link] = {
    link.name: link
    for link in (
        Link("check_channels", "check_id", "checks", "channel_id", "notification_channels"),
        Link("system_checks", "system_id", "systems", "check_id", "checks"),
        Link("system_group_members", "group_id", "system_groups", "system_id", "systems"),
    )
}

# Checks: the common fields are columns, the type-specific settings live in `config`.
CHECK_COLUMNS = (
    "name",
    "type",
    "description",
    "url",
    "host",
    "port",
    "interval",
    "timeout",
    "grace_period",
    "alert_after_failures",
    "runbook_url",
    "escalation_policy_id",
    "owner_team_id",
    "service_id",
    "is_active",
    "tags",
    "assigned_agent_ids",
    "geo_monitoring_enabled",
    "check_source_critical",
    "config",
)
CHECK_JSON = frozenset({"config", "tags", "assigned_agent_ids", "check_source_critical"})
CHECK_BOOLS = frozenset({"is_active", "geo_monitoring_enabled"})
CHECK_READ_COLUMNS = (
    "id",
    "organization_id",
    "project_id",
    "uuid",
    *CHECK_COLUMNS,
    "status",
    "status_changed_at",
    "last_ping_at",
    "created_at",
    "updated_at",
)
CHECK_DEFAULTS: dict[str, object] = {
    "description": "",
    "url": None,
    "host": None,
    "port": None,
    "grace_period": 60,
    "alert_after_failures": 1,
    "runbook_url": None,
    "escalation_policy_id": None,
    "owner_team_id": None,
    "service_id": None,
    "is_active": True,
    "tags": [],
    "assigned_agent_ids": [],
    "geo_monitoring_enabled": False,
    "check_source_critical": {},
    "config": {},
}

# A stored result's columns: the result record (tocsin.models.RESULT_FIELDS) with its
# organisation after the check; `details_json` is stored as `details`.
_COLUMN_OF_FIELD = {"details_json": "details"}
RESULT_COLUMNS: tuple[str, ...] = (
    "check_id",
    "organization_id",
    *(_COLUMN_OF_FIELD.get(f, f) for f in RESULT_FIELDS[1:]),
)

ROLLUP_TIERS: dict[str, int] = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
