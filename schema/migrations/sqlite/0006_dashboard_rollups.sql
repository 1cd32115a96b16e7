-- A covering index for the dashboard's aggregates: every column they read, after the
-- window's (project, event_time_ms), so an overview scans one index range in order
-- instead of looking each row up in the table (store/src/sqlite/mod.rs, aggregate).
CREATE INDEX IF NOT EXISTS events_dashboard ON events (
    project, event_time_ms, device_id, event_id, success, conflicts, weight, duration_bucket,
    queue_depth, queue_bucket, staleness_bucket, last_success_at_ms, received_at_ms,
    app_version, os, network
)
