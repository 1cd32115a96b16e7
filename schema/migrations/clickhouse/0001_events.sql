-- One row per stored sync attempt. ReplacingMergeTree on (project, event_time, event_id):
-- a retried event has the same sorting key (event_time is stable across retries, see
-- StoredEvent), so duplicate rows collapse at merge time, and queries read with FINAL
-- so they count once before that. Partitioned by day of the corrected time, so
-- retention is a cheap DROP PARTITION on every ClickHouse version.
CREATE TABLE IF NOT EXISTS {db}.events (
    project String,
    event_id UUID,
    device_id String,
    event_time DateTime,
    event_time_ms Int64,
    occurred_at_ms Int64,
    last_success_at_ms Nullable(Int64),
    sent_at_ms Int64,
    received_at_ms Int64,
    clock_skew_ms Int64,
    success UInt8,
    duration_ms UInt64,
    duration_bucket UInt16,
    conflicts UInt32,
    queue_depth UInt32,
    queue_bucket UInt16,
    staleness_ms Nullable(UInt64),
    staleness_bucket UInt16,
    app_version {label},
    os {label},
    os_version {label},
    network {label},
    device_model {label},
    sync_type {label},
    trigger {label},
    error_kind {label},
    error_message String,
    retries UInt32,
    records_up UInt64,
    records_down UInt64,
    bytes_up UInt64,
    bytes_down UInt64,
    sample_rate Float64,
    weight Float64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (project, event_time, event_id)
{ttl};
