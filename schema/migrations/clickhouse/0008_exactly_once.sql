-- Exactly once in every metric (store/src/clickhouse/dedup.rs has the whole design).
--
-- ClickHouse cannot refuse a row whose event id is already stored, and the rollups
-- (0006) count every row inserted into events, for good. Store::insert therefore looks
-- up every event id of a block before writing it (exact, not a filter of recent ids),
-- and what that look-up cannot see, two collectors writing the same event in the same
-- instant, it finds right after its own write and compensates before acknowledging:
--
-- events.insert_id: which write a row came from (random per insert; 0 before this
-- migration), so two copies of one event can be told apart.
--
-- event_copies: every row ever inserted into events, with what it adds to the per-event
-- sums. Plain MergeTree, so unlike events (ReplacingMergeTree) it never collapses two
-- copies: the partial minutes at a window's edges are read from it, as they must count
-- exactly what the rollups count (every copy) before the compensation.
--
-- event_ids: the same rows by device time (occurred_at, whole seconds), which two copies
-- of an event share whatever skew correction each got: the look-ups read it.
--
-- event_duplicates: one row per stored copy beyond an event's first (the first is the
-- copy received first, ties broken by the smaller insert_id), with what that copy added.
-- Every aggregate subtracts these rows. ReplacingMergeTree read with FINAL: writing the
-- same compensation twice (two collectors both saw both copies) changes nothing.
-- same_key says the copy shares its sorting key (event_time) with the first copy, so
-- `events FINAL` already shows it once; the reads of events exclude the other ones.
CREATE TABLE IF NOT EXISTS {db}.event_copies (
    project String,
    event_time DateTime,
    event_id UUID,
    insert_id UInt64,
    event_time_ms Int64,
    received_at_ms Int64,
    app_version {label},
    os {label},
    network {label},
    success UInt8,
    conflicts UInt32,
    duration_bucket UInt16,
    weight Float64
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (project, event_time, event_id);
CREATE TABLE IF NOT EXISTS {db}.event_ids (
    project String,
    occurred_at DateTime,
    event_id UUID,
    insert_id UInt64,
    event_time DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (project, occurred_at, event_id);
CREATE TABLE IF NOT EXISTS {db}.event_duplicates (
    project String,
    event_time DateTime,
    event_id UUID,
    insert_id UInt64,
    event_time_ms Int64,
    same_key UInt8,
    late UInt8,
    app_version {label},
    os {label},
    network {label},
    success UInt8,
    conflicts UInt32,
    duration_bucket UInt16,
    weight Float64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (project, event_time, event_id, insert_id);
-- Hours an interrupted write may have left in part of the rollups: every aggregate reads
-- them from event_copies instead.
CREATE TABLE IF NOT EXISTS {db}.suspect_hours (
    project String,
    hour DateTime
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (project, hour);
-- 18.16 has no ADD COLUMN IF NOT EXISTS: the store treats "already exists" as done.
ALTER TABLE {db}.events ADD COLUMN insert_id UInt64;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_copies_mv TO {db}.event_copies AS
SELECT project, event_time, event_id, insert_id, event_time_ms, received_at_ms, app_version, os, network,
    success, conflicts, duration_bucket, weight
FROM {db}.events;
-- Named to sort after every other view on events: 18.16 pushes a block to the views in
-- order of their names, so a row in event_ids means the whole write went through (a
-- server that dies in between keeps what it had committed; see dedup.rs).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stored_ids_mv TO {db}.event_ids AS
SELECT project, toDateTime(toUInt32(greatest(intDiv(occurred_at_ms, 1000), 0))) AS occurred_at, event_id, insert_id,
    event_time
FROM {db}.events;
-- What events holds from before (duplicates that merged away are gone with their
-- evidence; those still unmerged are copied as they are, as the rollups count them).
-- Only into an empty table, so running this again adds nothing; stop ingest while an
-- existing deployment migrates (README, "Upgrading").
INSERT INTO {db}.event_copies
SELECT project, event_time, event_id, insert_id, event_time_ms, received_at_ms, app_version, os, network,
    success, conflicts, duration_bucket, weight
FROM {db}.events
WHERE (SELECT count() FROM {db}.event_copies) = 0;
INSERT INTO {db}.event_ids
SELECT project, toDateTime(toUInt32(greatest(intDiv(occurred_at_ms, 1000), 0))) AS occurred_at, event_id, insert_id,
    event_time
FROM {db}.events
WHERE (SELECT count() FROM {db}.event_ids) = 0
