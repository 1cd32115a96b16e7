-- What an event says about its conflicts, its oldest pending change and its custom
-- dimensions (issue 19), kept so that nothing a client sends is lost:
-- queue_oldest_at_ms: SyncEvent.queue_oldest_at on the device clock (NULL: empty queue);
-- queue_lag_ms: StoredEvent.queue_lag_ms, occurred_at - queue_oldest_at, never negative;
-- conflict_details: the wire format's JSON array, in the event's order (NULL: none);
-- dimensions: the wire format's JSON object, keys sorted (NULL: none).
-- Rows stored before this migration read back with no details, no queue time and no
-- dimensions, which is what they were stored with. The migration runs in one
-- transaction with its record (migrate.rs), so it is never half applied and rerun.
ALTER TABLE events ADD COLUMN queue_oldest_at_ms INTEGER;
ALTER TABLE events ADD COLUMN queue_lag_ms INTEGER;
ALTER TABLE events ADD COLUMN conflict_details TEXT;
ALTER TABLE events ADD COLUMN dimensions TEXT
