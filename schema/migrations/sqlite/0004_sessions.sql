-- Dashboard login sessions. The cookie holds a random token; only its SHA-256
-- is stored, so a copy of the database opens no session. credential_tag ties a
-- session to the password it was opened with: changing the password ends it.
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    credential_tag TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at_ms);
