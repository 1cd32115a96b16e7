-- What an event says about its conflicts, its oldest pending change and its custom
-- dimensions (issue 19), kept so that nothing a client sends is lost:
-- queue_oldest_at_ms: SyncEvent.queue_oldest_at on the device clock (NULL: empty queue);
-- queue_lag_ms: StoredEvent.queue_lag_ms, occurred_at - queue_oldest_at, never negative;
-- conflict_*: SyncEvent.conflict_details as parallel arrays, one element per detail in
-- the event's order (kind and resolution in their wire spelling);
-- dimension_keys/values: SyncEvent.dimensions as parallel arrays sorted by key.
-- Arrays rather than Nested or Map: 18.16 has no Map, and a Nested column's dotted
-- names would not survive the `?fields` column lists of the clickhouse crate.
-- Rows stored before this migration read back with no details, no queue time and no
-- dimensions, which is what they were stored with.
-- 18.16 has no ADD COLUMN IF NOT EXISTS: the store treats "already exists" as done.
ALTER TABLE {db}.events ADD COLUMN queue_oldest_at_ms Nullable(Int64);
ALTER TABLE {db}.events ADD COLUMN queue_lag_ms Nullable(UInt64);
ALTER TABLE {db}.events ADD COLUMN conflict_entity Array(String);
ALTER TABLE {db}.events ADD COLUMN conflict_kind Array(String);
ALTER TABLE {db}.events ADD COLUMN conflict_resolution Array(String);
ALTER TABLE {db}.events ADD COLUMN conflict_count Array(UInt32);
ALTER TABLE {db}.events ADD COLUMN dimension_keys Array(String);
ALTER TABLE {db}.events ADD COLUMN dimension_values Array(String)
