-- Notifications: notification_channels, check_channels and notification_deliveries (the
-- outbox, unique dedup_key) are created by 0001_schema.sql. Deliveries of one incident to one
-- channel go out in order: the worker looks for an earlier unsent one by this index.
CREATE INDEX notification_deliveries_order
    ON notification_deliveries (incident_id, channel_id, id);
-- The worker claims the unsent rows that are due, oldest first: this index gives them in
-- that order without sorting every unsent row (a burst leaves tens of thousands).
CREATE INDEX notification_deliveries_unsent
    ON notification_deliveries (next_attempt_at, id) WHERE status IN ('pending', 'sending');
