-- Alerting: instance states, notifications with their delivery status,
-- silences, and the evaluator lease (see store/src/alerting.rs).
CREATE TABLE IF NOT EXISTS alert_instances (
    project TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    segment TEXT,
    state TEXT NOT NULL,
    value REAL,
    threshold REAL NOT NULL,
    since_ms INTEGER NOT NULL,
    last_evaluated_ms INTEGER NOT NULL,
    last_notified_ms INTEGER,
    clear_since_ms INTEGER,
    verdict TEXT NOT NULL,
    events INTEGER NOT NULL,
    severity TEXT NOT NULL,
    silenced_until_ms INTEGER,
    PRIMARY KEY (project, fingerprint)
);

CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    project TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    summary TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (created_at_ms);

CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    project TEXT NOT NULL,
    segment TEXT,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL
);

-- One row per lease: who holds it and until when.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
