CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL
);

-- Ingest keys are stored as SHA-256 hex digests, never in clear.
CREATE TABLE IF NOT EXISTS ingest_keys (
    key_hash TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES projects (name),
    label TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);

-- Dashboard users; password_hash is an argon2 PHC string. An admin sees every project.
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL,
    projects TEXT NOT NULL -- JSON array of project names
);
