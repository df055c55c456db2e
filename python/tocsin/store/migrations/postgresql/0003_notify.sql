-- Schema additions for notify (see the issue); additive only.
SELECT 1; -- placeholder until this migration has content
