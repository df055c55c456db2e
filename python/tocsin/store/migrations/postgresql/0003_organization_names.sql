-- Organisation names are no longer unique: two organisations may share a name, and
-- creating or renaming one must not reveal that an organisation the caller cannot see
-- has that name.
ALTER TABLE organizations DROP CONSTRAINT IF EXISTS organizations_name_key;
