-- The browser origins an ingest key may be used from (CORS, issue 18): origins
-- ("https://app.example.com") or ['*']; empty = no browser origin at all, so a key made
-- before this migration keeps refusing browsers until an operator allows one.
-- 18.16 has no ADD COLUMN IF NOT EXISTS: the store treats "already exists" as done.
ALTER TABLE {db}.ingest_keys ADD COLUMN allowed_origins Array(String);
