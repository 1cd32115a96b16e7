-- Pre-aggregates for the dashboard, fed by materialized views on every insert into
-- events (store/src/clickhouse/rollup.rs reads them). They are exact because the store
-- writes only rows it has checked are new (Store::insert drops stored duplicates
-- before writing), so a view fed with those rows counts each event once, as FINAL
-- does on events. Bucket starts are computed from Unix seconds, not the server's
-- time zone, so an hour is an hour in every zone. Partitioned by day like events, so
-- retention drops the same partitions.
--
-- rollup_minute: per minute and segment, the per-event sums and the duration
-- histogram (durationMap is summed as a map by SummingMergeTree; reads use sumMap).
CREATE TABLE IF NOT EXISTS {db}.rollup_minute (
    project String,
    minute DateTime,
    app_version String,
    os String,
    network String,
    events UInt64,
    attempts Float64,
    successes Float64,
    conflicted Float64,
    late UInt64,
    durationMap Nested(bucket UInt16, weight Float64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (project, minute, app_version, os, network);
-- rollup_hour: the same per hour, for whole hours of long windows (a day of minutes
-- per segment holds nearly as many histogram entries as the events themselves).
CREATE TABLE IF NOT EXISTS {db}.rollup_hour (
    project String,
    hour DateTime,
    app_version String,
    os String,
    network String,
    events UInt64,
    attempts Float64,
    successes Float64,
    conflicted Float64,
    late UInt64,
    durationMap Nested(bucket UInt16, weight Float64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (project, hour, app_version, os, network);
-- device_hour: per hour and device, the state of its latest event (the greatest
-- (event_time_ms, event_id as text), as every read defines it).
CREATE TABLE IF NOT EXISTS {db}.device_hour (
    project String,
    hour DateTime,
    device_id String,
    latest AggregateFunction(argMax, Tuple(Int64, String, UInt32, UInt16, UInt16, UInt8), Tuple(Int64, String))
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (project, hour, device_id);
-- The late threshold (300000 ms) is synchealth_store::metrics::LATE_ARRIVAL_MS.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_minute_mv TO {db}.rollup_minute AS
SELECT project, toDateTime(intDiv(toUInt32(event_time), 60) * 60) AS minute,
    toString(app_version) AS app_version, toString(os) AS os, toString(network) AS network,
    count() AS events, sum(weight) AS attempts, sumIf(weight, success = 1) AS successes,
    sumIf(weight, conflicts > 0) AS conflicted,
    countIf(received_at_ms - event_time_ms > 300000) AS late,
    tupleElement(sumMap([duration_bucket], [weight]) AS durations, 1) AS `durationMap.bucket`,
    tupleElement(durations, 2) AS `durationMap.weight`
FROM {db}.events
GROUP BY project, minute, app_version, os, network;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_hour_mv TO {db}.rollup_hour AS
SELECT project, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour,
    toString(app_version) AS app_version, toString(os) AS os, toString(network) AS network,
    count() AS events, sum(weight) AS attempts, sumIf(weight, success = 1) AS successes,
    sumIf(weight, conflicts > 0) AS conflicted,
    countIf(received_at_ms - event_time_ms > 300000) AS late,
    tupleElement(sumMap([duration_bucket], [weight]) AS durations, 1) AS `durationMap.bucket`,
    tupleElement(durations, 2) AS `durationMap.weight`
FROM {db}.events
GROUP BY project, hour, app_version, os, network;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_hour_mv TO {db}.device_hour AS
SELECT project, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour, device_id,
    argMaxState((event_time_ms, toString(event_id), queue_depth, queue_bucket, staleness_bucket,
        toUInt8(isNull(last_success_at_ms))), (event_time_ms, toString(event_id))) AS latest
FROM {db}.events
GROUP BY project, hour, device_id;
-- Backfill what events held before the views existed; only into empty rollups, so
-- running this again adds nothing. Stop ingest while an existing deployment migrates
-- (README, "Upgrading"): rows written between the views' creation and this copy
-- would be counted twice.
INSERT INTO {db}.rollup_minute
SELECT project, toDateTime(intDiv(toUInt32(event_time), 60) * 60) AS minute,
    toString(app_version) AS app_version, toString(os) AS os, toString(network) AS network,
    count() AS events, sum(weight) AS attempts, sumIf(weight, success = 1) AS successes,
    sumIf(weight, conflicts > 0) AS conflicted,
    countIf(received_at_ms - event_time_ms > 300000) AS late,
    tupleElement(sumMap([duration_bucket], [weight]) AS durations, 1) AS `durationMap.bucket`,
    tupleElement(durations, 2) AS `durationMap.weight`
FROM {db}.events FINAL
WHERE (SELECT count() FROM {db}.rollup_minute) = 0
GROUP BY project, minute, app_version, os, network;
INSERT INTO {db}.rollup_hour
SELECT project, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour,
    toString(app_version) AS app_version, toString(os) AS os, toString(network) AS network,
    count() AS events, sum(weight) AS attempts, sumIf(weight, success = 1) AS successes,
    sumIf(weight, conflicts > 0) AS conflicted,
    countIf(received_at_ms - event_time_ms > 300000) AS late,
    tupleElement(sumMap([duration_bucket], [weight]) AS durations, 1) AS `durationMap.bucket`,
    tupleElement(durations, 2) AS `durationMap.weight`
FROM {db}.events FINAL
WHERE (SELECT count() FROM {db}.rollup_hour) = 0
GROUP BY project, hour, app_version, os, network;
INSERT INTO {db}.device_hour
SELECT project, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour, device_id,
    argMaxState((event_time_ms, toString(event_id), queue_depth, queue_bucket, staleness_bucket,
        toUInt8(isNull(last_success_at_ms))), (event_time_ms, toString(event_id))) AS latest
FROM {db}.events FINAL
WHERE (SELECT count() FROM {db}.device_hour) = 0
GROUP BY project, hour, device_id
