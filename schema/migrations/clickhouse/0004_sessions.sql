-- Dashboard login sessions. The cookie holds a random token; only its SHA-256
-- is stored, so a copy of the database opens no session. credential_tag ties a
-- session to the password it was opened with: changing the password ends it.
-- A logout is a tombstone row (deleted = 1) with a larger version, read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.sessions (
    token_hash String,
    username String,
    credential_tag String,
    created_at_ms Int64,
    expires_at_ms Int64,
    deleted UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY token_hash
