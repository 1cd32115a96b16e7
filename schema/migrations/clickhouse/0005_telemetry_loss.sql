-- What client probes report they dropped (buffer full, expired, rejected...),
-- cumulative per device and reason. The version is the cumulative count itself:
-- merges keep the largest, and among equal counts the last inserted (the latest
-- report). Reads aggregate with max() so unmerged rows count once.
CREATE TABLE IF NOT EXISTS {db}.telemetry_loss (
    project String,
    device_id String,
    reason String,
    dropped UInt64,
    reported_at_ms Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project, device_id, reason);
