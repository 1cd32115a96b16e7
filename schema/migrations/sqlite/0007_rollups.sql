-- The embedded store's dashboard rollups, cut like ClickHouse's: per minute and per
-- hour (Unix seconds, floored) and segment, the per-event sums and the duration
-- histogram; per hour and device, the device's latest event (greatest
-- (event_time_ms, event_id text)). The store keeps them in the transaction that
-- inserts the events and reads a window from them in pieces, whole hours, whole
-- minutes and the raw edges (store/src/sqlite/rollup.rs). They replace migration
-- 0006's covering index, a sixth B-tree of 16 columns on every insert.
--
-- Upgrading: the store fills these tables from the events already stored, in the
-- same transaction, right after these statements (rollup::backfill). That step is
-- Rust because `durations` is a binary encoding SQL cannot write.
DROP INDEX IF EXISTS events_dashboard;

-- durations: the duration histogram, (bucket as u16, sum of weights as f64) pairs,
-- little-endian, in increasing bucket order. One blob per row rather than a row per
-- bucket: a day of 1,000,000 events is then 1,800 hour rows to read instead of 300,000.
CREATE TABLE IF NOT EXISTS rollup_minute (
    project TEXT NOT NULL,
    minute INTEGER NOT NULL,
    app_version TEXT NOT NULL,
    os TEXT NOT NULL,
    network TEXT NOT NULL,
    events INTEGER NOT NULL,
    attempts REAL NOT NULL,
    successes REAL NOT NULL,
    conflicted REAL NOT NULL,
    late INTEGER NOT NULL,
    durations BLOB NOT NULL,
    PRIMARY KEY (project, minute, app_version, os, network)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_hour (
    project TEXT NOT NULL,
    hour INTEGER NOT NULL,
    app_version TEXT NOT NULL,
    os TEXT NOT NULL,
    network TEXT NOT NULL,
    events INTEGER NOT NULL,
    attempts REAL NOT NULL,
    successes REAL NOT NULL,
    conflicted REAL NOT NULL,
    late INTEGER NOT NULL,
    durations BLOB NOT NULL,
    PRIMARY KEY (project, hour, app_version, os, network)
) WITHOUT ROWID;

-- never_synced: the latest event has no last_success_at.
CREATE TABLE IF NOT EXISTS device_hour (
    project TEXT NOT NULL,
    hour INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    latest_time_ms INTEGER NOT NULL,
    latest_event_id TEXT NOT NULL,
    queue_depth INTEGER NOT NULL,
    queue_bucket INTEGER NOT NULL,
    staleness_bucket INTEGER NOT NULL,
    never_synced INTEGER NOT NULL,
    PRIMARY KEY (project, hour, device_id)
) WITHOUT ROWID
