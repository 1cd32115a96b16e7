-- Alerting: instance states, notifications with their delivery status,
-- silences, and the evaluator lease (see store/src/clickhouse/alerting.rs).
-- Every table is ReplacingMergeTree(version): a write is a new row with a
-- larger version, read back with FINAL. Absent optional text is ''.
CREATE TABLE IF NOT EXISTS {db}.alert_instances (
    project String,
    fingerprint String,
    rule String,
    segment String,
    state String,
    value Nullable(Float64),
    threshold Float64,
    since_ms Int64,
    last_evaluated_ms Int64,
    last_notified_ms Nullable(Int64),
    clear_since_ms Nullable(Int64),
    verdict String,
    events UInt64,
    severity String,
    silenced_until_ms Nullable(Int64),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project, fingerprint);

CREATE TABLE IF NOT EXISTS {db}.notifications (
    id String,
    fingerprint String,
    rule String,
    project String,
    channel String,
    kind String,
    status String,
    attempts UInt32,
    last_error String,
    created_at_ms Int64,
    updated_at_ms Int64,
    summary String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;

CREATE TABLE IF NOT EXISTS {db}.silences (
    id String,
    rule String,
    project String,
    segment String,
    starts_at_ms Int64,
    ends_at_ms Int64,
    created_by String,
    comment String,
    deleted UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- Lease claims: one row per (lease, term, claimant); the earliest claim of the
-- latest term holds the lease (the algorithm and its limits are documented in
-- store/src/clickhouse/alerting.rs).
CREATE TABLE IF NOT EXISTS {db}.lease_claims (
    name String,
    term UInt64,
    holder String,
    claimed_at_ms Int64,
    expires_ms Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (name, term, holder)
