-- On-call schedules: layers (rotations, restrictions) as JSON; overrides as rows.
CREATE TABLE oncall_schedules (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    timezone         TEXT NOT NULL DEFAULT 'UTC',
    layers           TEXT NOT NULL DEFAULT '[]',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX oncall_schedules_org ON oncall_schedules (organization_id, id);

CREATE TABLE oncall_overrides (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    schedule_id      INTEGER NOT NULL REFERENCES oncall_schedules(id) ON DELETE CASCADE,
    user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    starts_at        REAL NOT NULL,
    ends_at          REAL NOT NULL,
    created_by       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX oncall_overrides_schedule ON oncall_overrides (schedule_id, starts_at);
