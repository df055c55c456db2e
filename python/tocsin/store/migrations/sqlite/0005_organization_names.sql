-- tocsin: foreign-keys-off
-- Organisation names are no longer unique: two organisations may share a name, and
-- creating or renaming one must not reveal that an organisation the caller cannot see
-- has that name. SQLite drops a column constraint by rebuilding the table (its
-- documented procedure, run with foreign key enforcement off so nothing cascades).
CREATE TABLE organizations_new (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}',
    updated_at  REAL
);
INSERT INTO organizations_new (id, name, created_at, settings, updated_at)
    SELECT id, name, created_at, settings, updated_at FROM organizations;
DROP TABLE organizations;
ALTER TABLE organizations_new RENAME TO organizations;
