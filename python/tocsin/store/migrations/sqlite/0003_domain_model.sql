-- The whole domain model, so later features add rows rather than redesign tables.
-- Every row that belongs to an organisation carries organization_id; times are Unix
-- seconds (REAL), rollup bucket starts are Unix milliseconds.

ALTER TABLE organizations ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE organizations ADD COLUMN updated_at REAL;

ALTER TABLE projects ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE projects ADD COLUMN updated_at REAL;

ALTER TABLE users ADD COLUMN full_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN is_active INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN notification_preferences TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN updated_at REAL;

ALTER TABLE api_tokens ADD COLUMN expires_at REAL;
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Checks: the common fields as columns (filters and the engine read them), the
-- type-specific settings in `config` (secret values inside it are encrypted).
ALTER TABLE checks ADD COLUMN host TEXT;
ALTER TABLE checks ADD COLUMN port INTEGER;
ALTER TABLE checks ADD COLUMN grace_period INTEGER NOT NULL DEFAULT 60;
ALTER TABLE checks ADD COLUMN alert_after_failures INTEGER NOT NULL DEFAULT 1;
ALTER TABLE checks ADD COLUMN runbook_url TEXT;
ALTER TABLE checks ADD COLUMN escalation_policy_id INTEGER;
ALTER TABLE checks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE checks ADD COLUMN assigned_agent_ids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE checks ADD COLUMN geo_monitoring_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checks ADD COLUMN check_source_critical TEXT NOT NULL DEFAULT '{}';
ALTER TABLE checks ADD COLUMN last_ping_at REAL;
CREATE INDEX checks_org_type ON checks (organization_id, type, id);
CREATE INDEX checks_org_status ON checks (organization_id, status, id);
CREATE INDEX checks_project ON checks (project_id);

-- What changes with every result lives in a table of its own, so the ingest path never
-- rewrites the wide checks row: the latest result of each source of each check (a
-- check's page reads it, never the results).
CREATE TABLE check_latest (
    check_id         INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
    organization_id  INTEGER NOT NULL,
    source           TEXT NOT NULL,
    started_at       REAL NOT NULL,
    due_at           REAL,
    latency_ms       REAL NOT NULL,
    status           TEXT NOT NULL,
    error_kind       TEXT,
    message          TEXT,
    status_code      INTEGER,
    dns_ms           REAL,
    connect_ms       REAL,
    tls_ms           REAL,
    first_byte_ms    REAL,
    details          TEXT,
    PRIMARY KEY (check_id, source)
) WITHOUT ROWID;
INSERT INTO check_latest (check_id, organization_id, source, started_at, latency_ms, status,
                          error_kind, message, status_code)
    SELECT id, organization_id, COALESCE(json_extract(last_result, '$.source'), 'central'),
           last_checked_at, COALESCE(json_extract(last_result, '$.latency_ms'), 0),
           COALESCE(json_extract(last_result, '$.status'), 'UNKNOWN'),
           json_extract(last_result, '$.error_kind'), json_extract(last_result, '$.message'),
           json_extract(last_result, '$.status_code')
    FROM checks WHERE last_result IS NOT NULL AND last_checked_at IS NOT NULL;
ALTER TABLE checks DROP COLUMN last_result;
ALTER TABLE checks DROP COLUMN last_checked_at;


-- Retention deletes raw results by age.
CREATE INDEX results_started ON results (started_at);
CREATE INDEX status_changes_at ON status_changes (at);

-- Rollup tiers (minute, hour, day) of each check's verdict timeline.
CREATE TABLE rollups (
    tier             TEXT NOT NULL CHECK (tier IN ('minute', 'hour', 'day')),
    check_id         INTEGER NOT NULL,
    start_ms         INTEGER NOT NULL,
    organization_id  INTEGER NOT NULL,
    span_ms          INTEGER NOT NULL,
    runs_up          INTEGER NOT NULL,
    runs_down        INTEGER NOT NULL,
    runs_degraded    INTEGER NOT NULL,
    downtime_ms      INTEGER NOT NULL,
    excluded_ms      INTEGER NOT NULL,
    incidents        INTEGER NOT NULL,
    sketch           BLOB NOT NULL,
    PRIMARY KEY (tier, check_id, start_ms)
) WITHOUT ROWID;
CREATE INDEX rollups_age ON rollups (tier, start_ms);

-- Heartbeat pings (with their run logs, up to 100 KB each).
CREATE TABLE pings (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL,
    check_id         INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    exit_code        INTEGER,
    rid              TEXT,
    body             TEXT,
    remote_addr      TEXT,
    duration_ms      REAL,
    received_at      REAL NOT NULL
);
CREATE INDEX pings_check ON pings (check_id, id DESC);
CREATE INDEX pings_received ON pings (received_at);

CREATE TABLE incidents (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    check_id         INTEGER REFERENCES checks(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL DEFAULT 'check',
    status           TEXT NOT NULL DEFAULT 'OPEN'
                     CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity         TEXT NOT NULL DEFAULT 'critical',
    title            TEXT NOT NULL,
    cause            TEXT,
    dedup_key        TEXT,
    sources          TEXT NOT NULL DEFAULT '{}',
    started_at       REAL NOT NULL,
    acknowledged_at  REAL,
    acknowledged_by  INTEGER,
    resolved_at      REAL,
    resolved_by      INTEGER,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX incidents_org ON incidents (organization_id, started_at DESC);
CREATE INDEX incidents_check ON incidents (check_id, started_at DESC);
-- At most one open incident per check, and per inbound dedup key.
CREATE UNIQUE INDEX incidents_open_check ON incidents (check_id) WHERE status != 'RESOLVED' AND check_id IS NOT NULL;
CREATE UNIQUE INDEX incidents_open_dedup ON incidents (organization_id, dedup_key) WHERE status != 'RESOLVED' AND dedup_key IS NOT NULL;

CREATE TABLE incident_notes (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    incident_id      INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    author_id        INTEGER,
    body             TEXT NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX incident_notes_incident ON incident_notes (incident_id, id);

CREATE TABLE incident_events (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    incident_id      INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    actor_id         INTEGER,
    detail           TEXT NOT NULL DEFAULT '{}',
    at               REAL NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, at, id);

CREATE TABLE maintenance_windows (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    check_ids        TEXT NOT NULL DEFAULT '[]',
    starts_at        REAL NOT NULL,
    duration_s       INTEGER NOT NULL,
    rrule            TEXT,
    cron             TEXT,
    timezone         TEXT NOT NULL DEFAULT 'UTC',
    is_active        INTEGER NOT NULL DEFAULT 1,
    created_by       INTEGER,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX maintenance_windows_org ON maintenance_windows (organization_id, id);

CREATE TABLE notification_channels (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    channel_type     TEXT NOT NULL,
    config           TEXT NOT NULL DEFAULT '{}',
    is_default       INTEGER NOT NULL DEFAULT 0,
    is_active        INTEGER NOT NULL DEFAULT 1,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX notification_channels_org ON notification_channels (organization_id, id);

CREATE TABLE check_channels (
    check_id         INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
    channel_id       INTEGER NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    organization_id  INTEGER NOT NULL,
    PRIMARY KEY (check_id, channel_id)
) WITHOUT ROWID;
CREATE INDEX check_channels_channel ON check_channels (channel_id);

-- The notification outbox: written in the transaction of the incident change that
-- causes it, delivered by a worker; dedup_key makes a transition deliver once.
CREATE TABLE notification_deliveries (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    channel_id       INTEGER REFERENCES notification_channels(id) ON DELETE SET NULL,
    incident_id      INTEGER REFERENCES incidents(id) ON DELETE SET NULL,
    check_id         INTEGER,
    event            TEXT NOT NULL,
    dedup_key        TEXT NOT NULL UNIQUE,
    payload          TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'delivered', 'failed', 'suppressed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    response_code    INTEGER,
    delivered_at     REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (status, next_attempt_at);
CREATE INDEX notification_deliveries_org ON notification_deliveries (organization_id, id DESC);

CREATE TABLE status_pages (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    slug             TEXT NOT NULL UNIQUE,
    description      TEXT NOT NULL DEFAULT '',
    is_public        INTEGER NOT NULL DEFAULT 1,
    logo_url         TEXT,
    check_ids        TEXT NOT NULL DEFAULT '[]',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX status_pages_org ON status_pages (organization_id, id);

CREATE TABLE status_page_subscribers (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    status_page_id   INTEGER NOT NULL REFERENCES status_pages(id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    confirmed        INTEGER NOT NULL DEFAULT 0,
    token_hash       TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    UNIQUE (status_page_id, email)
);

-- Geo locations are the platform's own probing places, shared by every organisation.
CREATE TABLE geo_locations (
    id           INTEGER PRIMARY KEY,
    code         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    region       TEXT NOT NULL DEFAULT '',
    is_active    INTEGER NOT NULL DEFAULT 1,
    created_at   REAL NOT NULL
);

CREATE TABLE agents (
    id                 INTEGER PRIMARY KEY,
    organization_id    INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL DEFAULT 'private' CHECK (kind IN ('private', 'geo')),
    location           TEXT,
    credential_hash    TEXT UNIQUE,
    status             TEXT NOT NULL DEFAULT 'offline',
    version            TEXT,
    load               REAL,
    queue_depth        INTEGER,
    last_heartbeat_at  REAL,
    last_batch_seq     INTEGER NOT NULL DEFAULT 0,
    revoked_at         REAL,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL
);
CREATE INDEX agents_org ON agents (organization_id, id);

CREATE TABLE agent_registration_tokens (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL DEFAULT '',
    token_hash       TEXT NOT NULL UNIQUE,
    prefix           TEXT NOT NULL,
    location         TEXT,
    expires_at       REAL,
    used_at          REAL,
    agent_id         INTEGER REFERENCES agents(id) ON DELETE SET NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX agent_registration_tokens_org ON agent_registration_tokens (organization_id, id);

CREATE TABLE slos (
    id                          INTEGER PRIMARY KEY,
    organization_id             INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    check_id                    INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
    sli_type                    TEXT NOT NULL DEFAULT 'availability'
                                CHECK (sli_type IN ('availability', 'latency')),
    target_percentage           REAL NOT NULL,
    window_days                 INTEGER NOT NULL DEFAULT 30,
    latency_threshold_ms        REAL,
    notify_on_budget_warn       INTEGER NOT NULL DEFAULT 1,
    budget_warn_pct             REAL NOT NULL DEFAULT 25,
    notify_on_budget_exhausted  INTEGER NOT NULL DEFAULT 1,
    burn_rate_alert_enabled     INTEGER NOT NULL DEFAULT 0,
    burn_rate_threshold         REAL NOT NULL DEFAULT 2,
    burn_rate_window_minutes    INTEGER NOT NULL DEFAULT 60,
    created_at                  REAL NOT NULL,
    updated_at                  REAL NOT NULL
);
CREATE INDEX slos_check ON slos (check_id);

-- Application keys (`ck_…`) for the Checkstack plugin surfaces, stored hashed.
CREATE TABLE applications (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    roles            TEXT NOT NULL DEFAULT '[]',
    key_hash         TEXT NOT NULL UNIQUE,
    prefix           TEXT NOT NULL,
    revoked_at       REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX applications_org ON applications (organization_id, id);

-- The Checkstack catalog: systems group checks, groups group systems.
CREATE TABLE systems (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    owner            TEXT,
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX systems_org ON systems (organization_id, id);

CREATE TABLE system_groups (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX system_groups_org ON system_groups (organization_id, id);

CREATE TABLE system_group_members (
    group_id         INTEGER NOT NULL REFERENCES system_groups(id) ON DELETE CASCADE,
    system_id        INTEGER NOT NULL REFERENCES systems(id) ON DELETE CASCADE,
    organization_id  INTEGER NOT NULL,
    PRIMARY KEY (group_id, system_id)
) WITHOUT ROWID;

CREATE TABLE system_checks (
    system_id        INTEGER NOT NULL REFERENCES systems(id) ON DELETE CASCADE,
    check_id         INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
    organization_id  INTEGER NOT NULL,
    PRIMARY KEY (system_id, check_id)
) WITHOUT ROWID;
CREATE INDEX system_checks_check ON system_checks (check_id);
