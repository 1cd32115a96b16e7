-- Projects, ingest keys and users change rarely and are read through caches;
-- ReplacingMergeTree(version) keeps the newest version of each row, read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.projects (
    name String,
    created_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name;

-- Ingest keys are stored as SHA-256 hex digests, never in clear.
CREATE TABLE IF NOT EXISTS {db}.ingest_keys (
    key_hash String,
    project String,
    label String,
    created_at DateTime,
    -- DateTime is whole seconds and DateTime64 does not exist on 18.16: the exact
    -- creation time the store hands back is kept here.
    created_at_ms Int64,
    revoked UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY key_hash;

-- Dashboard users; password_hash is an argon2 PHC string. An admin sees every project.
CREATE TABLE IF NOT EXISTS {db}.users (
    username String,
    password_hash String,
    admin UInt8,
    projects Array(String),
    deleted UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY username;
