-- The Conflicts and Errors views read only conflicted or failed attempts (a few
-- percent of events): partial indexes by time hold just those, so the views read
-- them instead of every event of the window. Written only for such events, at the
-- end of the time order, so ingest barely pays for them.
CREATE INDEX IF NOT EXISTS events_conflicted ON events (project, event_time_ms) WHERE conflicts > 0;
CREATE INDEX IF NOT EXISTS events_failed ON events (project, event_time_ms) WHERE success = 0
