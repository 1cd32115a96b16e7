-- The ticket each alert instance's firing episode has in a ticketing channel (Jira,
-- issue 21), so a restart of the alerts role neither opens a second issue nor forgets
-- the first (see store/src/clickhouse/alerting.rs). A new table rather than columns on
-- alert_instances: ALTER ... ON CLUSTER is broken on 18.16, and cluster mode replicates
-- this table to every node as it does the rest of the control plane. A plain
-- MergeTree: a ticket written twice is two rows, and reads take the oldest.
CREATE TABLE IF NOT EXISTS {db}.alert_tickets (
    project String,
    fingerprint String,
    channel String,
    episode_ms Int64,
    ticket_key String,
    created_at_ms Int64
) ENGINE = MergeTree
ORDER BY (project, fingerprint, channel, episode_ms)
