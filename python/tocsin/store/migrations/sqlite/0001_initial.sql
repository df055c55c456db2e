-- Organisations, users, tokens, checks and their results: the walking skeleton's schema.
-- Every row that belongs to an organisation carries organization_id.

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  REAL NOT NULL
);

CREATE TABLE projects (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    is_default       INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    is_superuser   INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL
);

CREATE TABLE memberships (
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role             TEXT NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Personal access tokens: only a SHA-256 of the (high-entropy) token is kept.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    REAL NOT NULL,
    last_used_at  REAL,
    revoked_at    REAL
);

CREATE TABLE checks (
    id                 INTEGER PRIMARY KEY,
    organization_id    INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id         INTEGER NOT NULL REFERENCES projects(id),
    uuid               TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    type               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    url                TEXT,
    interval           INTEGER NOT NULL,
    timeout            INTEGER NOT NULL,
    is_active          INTEGER NOT NULL DEFAULT 1,
    config             TEXT NOT NULL DEFAULT '{}',
    status             TEXT NOT NULL DEFAULT 'UNKNOWN',
    status_changed_at  REAL,
    last_result        TEXT,
    last_checked_at    REAL,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL
);
CREATE INDEX checks_org ON checks (organization_id, id);

-- Raw results. No foreign key: results already buffered for a check that is being
-- deleted must not fail the whole batch; deleting a check deletes its results.
CREATE TABLE results (
    id               INTEGER PRIMARY KEY,
    check_id         INTEGER NOT NULL,
    organization_id  INTEGER NOT NULL,
    source           TEXT NOT NULL,
    started_at       REAL NOT NULL,
    due_at           REAL,
    latency_ms       REAL NOT NULL,
    status           TEXT NOT NULL,
    error_kind       TEXT,
    message          TEXT,
    status_code      INTEGER
);
CREATE INDEX results_check ON results (check_id, id DESC);

CREATE TABLE status_changes (
    id               INTEGER PRIMARY KEY,
    check_id         INTEGER NOT NULL,
    organization_id  INTEGER NOT NULL,
    previous         TEXT NOT NULL,
    current          TEXT NOT NULL,
    at               REAL NOT NULL,
    reason           TEXT
);
CREATE INDEX status_changes_check ON status_changes (check_id, id DESC);
