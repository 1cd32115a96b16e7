-- Per (project, hour, device, segment) the device's latest event among its events of
-- that hour with that segment (app version, OS, network): the greatest
-- (event_time_ms, event_id text), as in device_hour (migration 0007), which it
-- refines. Why (issue 16): a filtered or broken-down dashboard query needs each
-- device's latest event among the events of one segment, which device_hour cannot
-- say (a device's latest event of an hour may be in another segment), so those
-- queries read every event of the window. A device's latest in a set of segments is
-- the latest of its rows for those segments, ties on time broken by the event id's
-- text. Rows exist only for the segments a device had in an hour, so the table grows
-- with the events, not with the product of the dimensions' cardinalities.
--
-- Key order: the reader loads one (project, hour) at a time, in decreasing
-- device_id order, and groups a device's rows together (store/src/sqlite/
-- segment_cache.rs): (project, hour, device_id, ...) makes that one contiguous range
-- read backwards, with no sort. The segment columns last make the key unique.
-- Retention deletes by (project, hour < cutoff), also a prefix of the key.
--
-- The store upserts the rows in the transaction that inserts the events
-- (store/src/sqlite/device_state.rs); never_synced: the latest event has no
-- last_success_at.
CREATE TABLE IF NOT EXISTS device_segment_hour (
    project TEXT NOT NULL,
    hour INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    app_version TEXT NOT NULL,
    os TEXT NOT NULL,
    network TEXT NOT NULL,
    latest_time_ms INTEGER NOT NULL,
    latest_event_id TEXT NOT NULL,
    queue_depth INTEGER NOT NULL,
    queue_bucket INTEGER NOT NULL,
    staleness_bucket INTEGER NOT NULL,
    never_synced INTEGER NOT NULL,
    PRIMARY KEY (project, hour, device_id, app_version, os, network)
) WITHOUT ROWID;

-- Upgrading: filled from the events already stored, in this migration's transaction.
-- Emptied first, so that applying it again gives the same table. The hour is the
-- floor of event_time_ms to a whole hour, in Unix seconds, as in Rust's div_euclid
-- (SQLite's integer division truncates toward zero). The ORDER BY is the metrics'
-- "latest": the event id compared as text (BINARY collation), as everywhere.
DELETE FROM device_segment_hour;
INSERT INTO device_segment_hour (project, hour, device_id, app_version, os, network, latest_time_ms,
    latest_event_id, queue_depth, queue_bucket, staleness_bucket, never_synced)
SELECT project, hour, device_id, app_version, os, network, event_time_ms, event_id, queue_depth,
    queue_bucket, staleness_bucket, never_synced
FROM (
    SELECT project, device_id, app_version, os, network, event_time_ms, event_id, queue_depth,
        queue_bucket, staleness_bucket, last_success_at_ms IS NULL AS never_synced,
        (event_time_ms - ((event_time_ms % 3600000) + 3600000) % 3600000) / 1000 AS hour,
        ROW_NUMBER() OVER (
            PARTITION BY project, (event_time_ms - ((event_time_ms % 3600000) + 3600000) % 3600000),
                device_id, app_version, os, network
            ORDER BY event_time_ms DESC, event_id DESC
        ) AS rn
    FROM events
)
WHERE rn = 1;
