-- The ticket each alert instance's firing episode has in a ticketing channel (Jira,
-- issue 21): kept beside the alert's state, so a restart of the alerts role neither
-- opens a second issue nor forgets the first. One row per (project, fingerprint,
-- channel, episode): the store inserts with OR IGNORE, so the first key stays.
CREATE TABLE IF NOT EXISTS alert_tickets (
    project TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    channel TEXT NOT NULL,
    episode_ms INTEGER NOT NULL,
    ticket_key TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (project, fingerprint, channel, episode_ms)
) WITHOUT ROWID;
