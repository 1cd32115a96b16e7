-- A device's events are found through the hours it had events in, not through an
-- index on every event. events_by_device (project, device_id, event_time_ms) took one
-- entry per event at a random place (every device of the fleet is interleaved), so a
-- batch of N events dirtied up to N pages of it and each commit wrote most of the
-- index to the WAL: the largest single cost of ingest (`synchealth bench ingest
-- --phases embedded`: 41,700 events/s with it, 54,200 without).
--
-- device_hour (migration 0007) already holds one row per (project, hour, device) in
-- the insert's transaction; this index on it is written once per new (device, hour),
-- not per event. A device's recent events are then read hour by hour, newest first,
-- through events_by_time (store/src/sqlite/mod.rs, device_events), and the window
-- edges that looked a device up read the edge's events instead (rollup.rs).
DROP INDEX IF EXISTS events_by_device;
CREATE INDEX IF NOT EXISTS device_hour_by_device ON device_hour (project, device_id, hour);
