-- Each device's latest event per hour and segment (app version, OS, network): what the
-- dashboard's filtered and broken-down per-device figures read for whole hours, as
-- device_hour_latest (migration 0007) is for the unfiltered ones. A filter keeps the
-- rows of the matching segments and a breakdown groups them by one dimension; a
-- device's latest in a group is the greatest `latest` among its rows there, which is
-- the same answer as reading events, to the tie on the event id text.
--
-- Rows exist only for the segments a device had in an hour (a phone moving from wifi
-- to cellular makes two), so the table grows with events, never with the product of
-- the dimensions' cardinalities. `latest` is migration 0007's text; the store writes
-- these rows, reduced per block in Rust, before the events, like device_hour_latest.
CREATE TABLE IF NOT EXISTS {db}.device_segment_hour (
    project String,
    hour DateTime,
    device_id String,
    app_version String,
    os String,
    network String,
    latest AggregateFunction(max, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (project, hour, device_id, app_version, os, network);
CREATE TABLE IF NOT EXISTS {db}.device_segment_hour_input (
    project String,
    hour DateTime,
    device_id String,
    app_version String,
    os String,
    network String,
    latest String
) ENGINE = Null;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_segment_hour_input_mv TO {db}.device_segment_hour AS
SELECT project, hour, device_id, app_version, os, network, maxState(latest) AS latest
FROM {db}.device_segment_hour_input
GROUP BY project, hour, device_id, app_version, os, network;
-- Backfill from what events holds; harmless to repeat (max), so no emptiness check.
INSERT INTO {db}.device_segment_hour
SELECT project, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour, device_id,
    CAST(app_version AS String) AS app_version, CAST(os AS String) AS os, CAST(network AS String) AS network,
    maxState(concat(hex(bitXor(toUInt64(event_time_ms), 9223372036854775808)), toString(event_id),
        hex(bitOr(bitOr(bitOr(bitOr(bitShiftLeft(toUInt64(queue_depth), 25), bitShiftLeft(toUInt64(queue_bucket), 13)),
            bitShiftLeft(toUInt64(staleness_bucket), 1)), toUInt64(isNull(last_success_at_ms))), 9223372036854775808)))) AS latest
FROM {db}.events
GROUP BY project, hour, device_id, app_version, os, network
