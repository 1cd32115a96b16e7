-- The fingerprint of each event's error message (synchealth_schema::error_fingerprint:
-- the message with numbers, ids, hex and quoted values taken out), computed when the
-- event is stored, so the Errors page groups occurrences of one error without
-- reading every message. Rows stored before this migration have an empty
-- fingerprint; the Errors page groups them by their error kind alone.
ALTER TABLE {db}.events ADD COLUMN error_fingerprint String
