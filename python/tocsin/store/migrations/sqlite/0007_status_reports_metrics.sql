-- Status pages: components (a check shown under a display name, in a section) beside the
-- SysTeam clients' flat `check_ids`; subscribers confirm by a link (double opt-in).
ALTER TABLE status_pages ADD COLUMN components TEXT NOT NULL DEFAULT '[]';
ALTER TABLE status_page_subscribers ADD COLUMN confirmed_at REAL;
CREATE INDEX status_page_subscribers_page ON status_page_subscribers (status_page_id, confirmed);

-- Reports, built in the background from the rollups; the document is kept with its row.
CREATE TABLE reports (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL DEFAULT '',
    format           TEXT NOT NULL CHECK (format IN ('json', 'csv', 'html', 'pdf')),
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'done', 'failed')),
    params           TEXT NOT NULL DEFAULT '{}',
    content_type     TEXT,
    document         BLOB,
    size             INTEGER,
    error            TEXT,
    created_by       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    started_at       REAL,
    finished_at      REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX reports_org ON reports (organization_id, id DESC);
CREATE INDEX reports_status ON reports (status);

-- Metrics keys: a scraper's credential for one organisation's metrics, stored hashed.
CREATE TABLE metrics_keys (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    key_hash         TEXT NOT NULL UNIQUE,
    prefix           TEXT NOT NULL,
    created_by       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    last_used_at     REAL,
    revoked_at       REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX metrics_keys_org ON metrics_keys (organization_id, id);
