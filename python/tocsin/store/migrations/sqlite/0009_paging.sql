-- Paging: people's contact methods and notification rules, escalation policies,
-- integration keys and the inbound events they receive. Inbound incidents are rows of
-- `incidents` (kind 'inbound'); an incident's escalation state (policy, next step,
-- round, when it is due) lives on its row, written with the incident's own changes.
CREATE TABLE contact_methods (
    id                    INTEGER PRIMARY KEY,
    user_id               INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind                  TEXT NOT NULL,
    value                 TEXT NOT NULL,
    label                 TEXT NOT NULL DEFAULT '',
    verified              INTEGER NOT NULL DEFAULT 0,
    verification_hash     TEXT,
    verification_sent_at  REAL,
    verified_at           REAL,
    created_at            REAL NOT NULL,
    updated_at            REAL NOT NULL
);
CREATE INDEX contact_methods_user ON contact_methods (user_id, id);
CREATE UNIQUE INDEX contact_methods_verification ON contact_methods (verification_hash)
    WHERE verification_hash IS NOT NULL;

CREATE TABLE notification_rules (
    id                 INTEGER PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    contact_method_id  INTEGER NOT NULL REFERENCES contact_methods(id) ON DELETE CASCADE,
    delay_minutes      INTEGER NOT NULL DEFAULT 0,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL
);
CREATE INDEX notification_rules_user ON notification_rules (user_id, delay_minutes, id);

CREATE TABLE escalation_policies (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    steps            TEXT NOT NULL DEFAULT '[]',
    repeat_count     INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX escalation_policies_org ON escalation_policies (organization_id, id);

CREATE TABLE integration_keys (
    id                       INTEGER PRIMARY KEY,
    organization_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                     TEXT NOT NULL,
    key_hash                 TEXT NOT NULL UNIQUE,
    prefix                   TEXT NOT NULL,
    escalation_policy_id     INTEGER REFERENCES escalation_policies(id) ON DELETE SET NULL,
    grouping_type            TEXT NOT NULL DEFAULT 'dedup_key',
    grouping_window_seconds  INTEGER NOT NULL DEFAULT 0,
    grouping_field           TEXT,
    created_by               INTEGER REFERENCES users(id) ON DELETE SET NULL,
    last_event_at            REAL,
    revoked_at               REAL,
    created_at               REAL NOT NULL,
    updated_at               REAL NOT NULL
);
CREATE INDEX integration_keys_org ON integration_keys (organization_id, id);

CREATE TABLE inbound_events (
    id                  INTEGER PRIMARY KEY,
    organization_id     INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    integration_key_id  INTEGER REFERENCES integration_keys(id) ON DELETE SET NULL,
    incident_id         INTEGER REFERENCES incidents(id) ON DELETE SET NULL,
    action              TEXT NOT NULL,
    dedup_key           TEXT NOT NULL,
    source_format       TEXT NOT NULL DEFAULT 'native',
    summary             TEXT NOT NULL DEFAULT '',
    severity            TEXT NOT NULL DEFAULT 'critical',
    payload             TEXT NOT NULL DEFAULT '{}',
    received_at         REAL NOT NULL,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL
);
CREATE INDEX inbound_events_incident ON inbound_events (incident_id, id);
CREATE INDEX inbound_events_key ON inbound_events (integration_key_id, dedup_key, id);

-- Before this migration a check's escalation_policy_id was stored unchecked and meant
-- nothing (there were no policies): cleared, so no check starts following a policy that
-- happens to get its number.
UPDATE checks SET escalation_policy_id = NULL WHERE escalation_policy_id IS NOT NULL;

ALTER TABLE incidents ADD COLUMN integration_key_id INTEGER
    REFERENCES integration_keys(id) ON DELETE SET NULL;
ALTER TABLE incidents ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
ALTER TABLE incidents ADD COLUMN last_event_at REAL;
ALTER TABLE incidents ADD COLUMN escalation_policy_id INTEGER;
ALTER TABLE incidents ADD COLUMN escalation_step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN escalation_round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN escalation_due_at REAL;
-- Inbound grouping may keep several open incidents of one dedup key (grouping `none`);
-- the dedup lookup goes by integration key.
DROP INDEX incidents_open_dedup;
CREATE INDEX incidents_inbound_dedup ON incidents (integration_key_id, dedup_key)
    WHERE dedup_key IS NOT NULL;
CREATE INDEX incidents_escalating ON incidents (escalation_due_at)
    WHERE escalation_due_at IS NOT NULL;
