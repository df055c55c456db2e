-- Invitations: an ADMIN invites an email address into an organisation with a role; the
-- account with that email becomes a member only when it accepts. Keyed by email, not by
-- account, so inviting never needs to know (or tell) whether the email has an account.
-- A declined invitation keeps its row (declined_at) until it expires: the organisation
-- is not told, since only an existing account can decline.
CREATE TABLE invitations (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
    invited_by       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    expires_at       REAL NOT NULL,
    declined_at      REAL,
    UNIQUE (organization_id, email)
);
-- An account's own pending invitations are found by its email.
CREATE INDEX invitations_email ON invitations (email);
CREATE INDEX invitations_invited_by ON invitations (invited_by);
