-- The native probes report a timing split and type-specific details with each result.

ALTER TABLE results ADD COLUMN dns_ms REAL;
ALTER TABLE results ADD COLUMN connect_ms REAL;
ALTER TABLE results ADD COLUMN tls_ms REAL;
ALTER TABLE results ADD COLUMN first_byte_ms REAL;
ALTER TABLE results ADD COLUMN details TEXT;

-- Verdicts come from several sources; each change keeps their statuses, and whether it
-- happened inside a maintenance window.
ALTER TABLE status_changes ADD COLUMN sources TEXT;
ALTER TABLE status_changes ADD COLUMN in_maintenance INTEGER NOT NULL DEFAULT 0;
