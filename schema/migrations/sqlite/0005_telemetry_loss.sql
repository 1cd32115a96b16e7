-- What client probes report they dropped (buffer full, expired, rejected...),
-- cumulative per device and reason: an update keeps the larger count, so a
-- repeated report changes nothing.
CREATE TABLE IF NOT EXISTS telemetry_loss (
    project TEXT NOT NULL,
    device_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    dropped INTEGER NOT NULL,
    reported_at_ms INTEGER NOT NULL,
    PRIMARY KEY (project, device_id, reason)
);

CREATE INDEX IF NOT EXISTS telemetry_loss_by_time ON telemetry_loss (project, reported_at_ms);
