-- Each device's latest event per hour, written by the store instead of computed by a
-- materialized view over every insert into events. Migration 0006's device_hour view
-- grouped every inserted event by (hour, device) with an argMax of a tuple, which takes
-- ClickHouse's generic (slow) path on insert and on read; it cost more than the events
-- insert itself. Now Store::insert reduces each block to one row per (project, hour,
-- device) in Rust and writes those rows to device_hour_input (a Null table: nothing is
-- stored there), whose view keeps the max per key in device_hour_latest.
--
-- `latest` is one fixed-width, 68-character text whose text order is the order every
-- read defines for "latest" (the greatest event_time_ms, then the greatest event id as
-- text), so `max` of it is the latest event and merges by plain string comparison:
--   16 hex digits of event_time_ms with its sign bit flipped (so negative times sort
--   first), the 36-character event id, then 16 hex digits packing the values the
--   dashboard reads (bit 63 set so the width is fixed; queue depth in bits 25-56, queue
--   bucket in 13-24, staleness bucket in 1-12, never-synced in bit 0).
-- The store writes the same text in Rust (store/src/clickhouse/device_state.rs) that
-- the partial hours at a window's edges compute from events in SQL.
--
-- The write is idempotent (max of a value already there changes nothing), so the store
-- writes these rows before the events: a crash in between leaves nothing to repair, as
-- the retried insert writes them again.
DROP TABLE IF EXISTS {db}.device_hour_mv;
DROP TABLE IF EXISTS {db}.device_hour;
CREATE TABLE IF NOT EXISTS {db}.device_hour_latest (
    project String,
    hour DateTime,
    device_id String,
    latest AggregateFunction(max, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (project, hour, device_id);
CREATE TABLE IF NOT EXISTS {db}.device_hour_input (
    project String,
    hour DateTime,
    device_id String,
    latest String
) ENGINE = Null;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_hour_input_mv TO {db}.device_hour_latest AS
SELECT project, hour, device_id, maxState(latest) AS latest
FROM {db}.device_hour_input
GROUP BY project, hour, device_id;
-- Backfill from what events holds; harmless to repeat (max), so no emptiness check.
INSERT INTO {db}.device_hour_latest
SELECT project, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour, device_id,
    maxState(concat(hex(bitXor(toUInt64(event_time_ms), 9223372036854775808)), toString(event_id),
        hex(bitOr(bitOr(bitOr(bitOr(bitShiftLeft(toUInt64(queue_depth), 25), bitShiftLeft(toUInt64(queue_bucket), 13)),
            bitShiftLeft(toUInt64(staleness_bucket), 1)), toUInt64(isNull(last_success_at_ms))), 9223372036854775808)))) AS latest
FROM {db}.events
GROUP BY project, hour, device_id
