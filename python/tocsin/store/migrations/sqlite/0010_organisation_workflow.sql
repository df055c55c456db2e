-- The organisation around incidents (docs/teams.md, services.md, playbooks.md,
-- war-rooms.md, postmortems.md, lifecycle.md, feedback.md, slo-alerts.md): teams and
-- what they own, services, playbooks and their runs, war rooms, postmortems, lifecycle
-- watches, feedback, organisation slugs and the SLO alert state.

-- Organisations are found by slug too (unique; generated from the name).
ALTER TABLE organizations ADD COLUMN slug TEXT;
UPDATE organizations SET slug = 'org-' || id WHERE slug IS NULL;
CREATE UNIQUE INDEX organizations_slug ON organizations (slug);

CREATE TABLE teams (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    slug             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE UNIQUE INDEX teams_org_slug ON teams (organization_id, slug);

CREATE TABLE team_members (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    team_id          INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role             TEXT NOT NULL DEFAULT 'member',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE UNIQUE INDEX team_members_team_user ON team_members (team_id, user_id);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE services (
    id                        INTEGER PRIMARY KEY,
    organization_id           INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                      TEXT NOT NULL,
    description               TEXT NOT NULL DEFAULT '',
    repo_url                  TEXT,
    docs_url                  TEXT,
    owner_team_id             INTEGER REFERENCES teams(id) ON DELETE SET NULL,
    escalation_policy_id      INTEGER REFERENCES escalation_policies(id) ON DELETE SET NULL,
    tier                      TEXT,
    notification_channel_ids  TEXT NOT NULL DEFAULT '[]',
    slack_channel             TEXT,
    metadata_json             TEXT NOT NULL DEFAULT '{}',
    created_at                REAL NOT NULL,
    updated_at                REAL NOT NULL
);
CREATE INDEX services_org ON services (organization_id, id);

-- What a team owns, and which service a check or an integration key belongs to.
ALTER TABLE checks ADD COLUMN owner_team_id INTEGER REFERENCES teams(id) ON DELETE SET NULL;
ALTER TABLE checks ADD COLUMN service_id INTEGER REFERENCES services(id) ON DELETE SET NULL;
CREATE INDEX checks_owner_team ON checks (owner_team_id) WHERE owner_team_id IS NOT NULL;
CREATE INDEX checks_service ON checks (service_id) WHERE service_id IS NOT NULL;
ALTER TABLE oncall_schedules ADD COLUMN owner_team_id INTEGER
    REFERENCES teams(id) ON DELETE SET NULL;
ALTER TABLE escalation_policies ADD COLUMN owner_team_id INTEGER
    REFERENCES teams(id) ON DELETE SET NULL;
ALTER TABLE status_pages ADD COLUMN owner_team_id INTEGER
    REFERENCES teams(id) ON DELETE SET NULL;
ALTER TABLE integration_keys ADD COLUMN service_id INTEGER
    REFERENCES services(id) ON DELETE SET NULL;
ALTER TABLE incidents ADD COLUMN service_id INTEGER REFERENCES services(id) ON DELETE SET NULL;

CREATE TABLE playbooks (
    id                              INTEGER PRIMARY KEY,
    organization_id                 INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                            TEXT NOT NULL,
    description                     TEXT NOT NULL DEFAULT '',
    trigger_type                    TEXT NOT NULL,
    trigger_conditions              TEXT NOT NULL DEFAULT '{}',
    service_id                      INTEGER REFERENCES services(id) ON DELETE SET NULL,
    suppress_default_notifications  INTEGER NOT NULL DEFAULT 0,
    is_active                       INTEGER NOT NULL DEFAULT 1,
    steps                           TEXT NOT NULL DEFAULT '[]',
    created_by                      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at                      REAL NOT NULL,
    updated_at                      REAL NOT NULL
);
CREATE INDEX playbooks_org ON playbooks (organization_id, id);

-- One run per (playbook, incident): a playbook runs at most once for an incident.
CREATE TABLE playbook_runs (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    playbook_id      INTEGER REFERENCES playbooks(id) ON DELETE SET NULL,
    incident_id      INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    status           TEXT NOT NULL DEFAULT 'running',
    steps            TEXT NOT NULL DEFAULT '[]',
    started_at       REAL NOT NULL,
    finished_at      REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE UNIQUE INDEX playbook_runs_once ON playbook_runs (playbook_id, incident_id);
CREATE INDEX playbook_runs_incident ON playbook_runs (incident_id);
CREATE INDEX playbook_runs_unfinished ON playbook_runs (status) WHERE status = 'running';

CREATE TABLE war_rooms (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    incident_id      INTEGER REFERENCES incidents(id) ON DELETE SET NULL,
    title            TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'open',
    summary          TEXT,
    opened_by        INTEGER REFERENCES users(id) ON DELETE SET NULL,
    closed_by        INTEGER REFERENCES users(id) ON DELETE SET NULL,
    opened_at        REAL NOT NULL,
    closed_at        REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX war_rooms_org ON war_rooms (organization_id, id);
CREATE INDEX war_rooms_incident ON war_rooms (incident_id);

CREATE TABLE war_room_members (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    war_room_id      INTEGER NOT NULL REFERENCES war_rooms(id) ON DELETE CASCADE,
    user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role             TEXT NOT NULL DEFAULT 'participant',
    added_by         INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE UNIQUE INDEX war_room_members_room_user ON war_room_members (war_room_id, user_id);

-- A war room's running log: who joined and left, notes, what playbooks did, the close.
CREATE TABLE war_room_entries (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    war_room_id      INTEGER NOT NULL REFERENCES war_rooms(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    actor_id         INTEGER REFERENCES users(id) ON DELETE SET NULL,
    body             TEXT NOT NULL DEFAULT '',
    at               REAL NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX war_room_entries_room ON war_room_entries (war_room_id, id);

CREATE TABLE postmortems (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    title            TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'draft',
    incident_ids     TEXT NOT NULL DEFAULT '[]',
    timeline         TEXT NOT NULL DEFAULT '[]',
    summary          TEXT NOT NULL DEFAULT '',
    impact           TEXT NOT NULL DEFAULT '',
    root_cause       TEXT NOT NULL DEFAULT '',
    what_went_well   TEXT NOT NULL DEFAULT '',
    what_went_wrong  TEXT NOT NULL DEFAULT '',
    action_items     TEXT NOT NULL DEFAULT '[]',
    author_id        INTEGER REFERENCES users(id) ON DELETE SET NULL,
    published_at     REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX postmortems_org ON postmortems (organization_id, id);

CREATE TABLE lifecycle_watches (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    vendor           TEXT NOT NULL DEFAULT '',
    platform         TEXT NOT NULL,
    resource_id      TEXT,
    resource_type    TEXT,
    version          TEXT,
    notify_on_new    INTEGER NOT NULL DEFAULT 1,
    notify_90d       INTEGER NOT NULL DEFAULT 0,
    notify_30d       INTEGER NOT NULL DEFAULT 1,
    notify_7d        INTEGER NOT NULL DEFAULT 1,
    channel_ids      TEXT NOT NULL DEFAULT '[]',
    last_checked_at  REAL,
    known_latest     TEXT,
    created_by       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX lifecycle_watches_org ON lifecycle_watches (organization_id, id);

-- Each notice a watch gave (`eol:{cycle}:{days}d`, `new:{version}`): never twice.
CREATE TABLE lifecycle_notices (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    watch_id         INTEGER NOT NULL REFERENCES lifecycle_watches(id) ON DELETE CASCADE,
    notice           TEXT NOT NULL,
    detail           TEXT NOT NULL DEFAULT '{}',
    at               REAL NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE UNIQUE INDEX lifecycle_notices_once ON lifecycle_notices (watch_id, notice);

-- Feedback from users to the operators of this server (superusers triage it).
CREATE TABLE feedback (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER REFERENCES organizations(id) ON DELETE SET NULL,
    user_id          INTEGER REFERENCES users(id) ON DELETE SET NULL,
    kind             TEXT NOT NULL,
    message          TEXT NOT NULL,
    page             TEXT,
    status           TEXT NOT NULL DEFAULT 'new',
    response         TEXT,
    responded_by     INTEGER REFERENCES users(id) ON DELETE SET NULL,
    responded_at     REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX feedback_user ON feedback (user_id, id);
CREATE INDEX feedback_status ON feedback (status, id);

-- An SLO's alert state (which of warning / exhausted / burning holds now, since when):
-- a crossing is told once, when the state turns on.
ALTER TABLE slos ADD COLUMN alert_state TEXT NOT NULL DEFAULT '{}';
ALTER TABLE slos ADD COLUMN evaluated_at REAL;

-- An SLO's timeline: each state change (turned on or off) with the figures then.
CREATE TABLE slo_events (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    slo_id           INTEGER NOT NULL REFERENCES slos(id) ON DELETE CASCADE,
    check_id         INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    detail           TEXT NOT NULL DEFAULT '{}',
    at               REAL NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX slo_events_check ON slo_events (check_id, id);
