-- The browser origins an ingest key may be used from (CORS, issue 18): a JSON array of
-- origins ("https://app.example.com") or ["*"]; empty = no browser origin at all, so a
-- key made before this migration keeps refusing browsers until an operator allows one.
ALTER TABLE ingest_keys ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
