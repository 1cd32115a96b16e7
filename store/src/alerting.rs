//! What the alerts role keeps in the store: the state of every alert
//! instance (so a restart neither re-sends nor forgets), every notification
//! and delivery attempt (shown on the dashboard's Alerts page), silences, and
//! the lease that lets one of several evaluator replicas work at a time.
//!
//! These are plain records; their meaning lives in the `synchealth-alerts`
//! crate. States and kinds are strings here so the store (and the dashboard
//! reading it) does not depend on the alerts crate.

use synchealth_schema::ProjectName;

/// One alert instance (rule × project × segment) as last evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertInstanceRecord {
    /// The instance's stable identity within its project (see
    /// `synchealth_alerts::AlertKey::fingerprint`). The store keys records
    /// by `(project, fingerprint)`.
    pub fingerprint: String,
    /// The rule's name.
    pub rule: String,
    /// The project evaluated.
    pub project: ProjectName,
    /// The segment for a `group_by` rule, as `dimension=value`
    /// (`app_version=2.3.0`); `None` for a rule without `group_by`.
    pub segment: Option<String>,
    /// `ok`, `pending`, `firing` or `resolved`.
    pub state: String,
    /// The metric's value at the last evaluation; `None` when there was
    /// nothing to measure.
    pub value: Option<f64>,
    /// The rule's threshold.
    pub threshold: f64,
    /// Unix ms: when the current state began (pending: first breach;
    /// firing: the start of pending; resolved: the resolution; ok: the last
    /// change to ok, or the first evaluation).
    pub since_ms: i64,
    /// Unix ms of the last evaluation.
    pub last_evaluated_ms: i64,
    /// Unix ms at which the last firing or repeat notification was due.
    pub last_notified_ms: Option<i64>,
    /// While a firing alert recovers: since when the condition has not held
    /// (it resolves `keep_firing_for` after that).
    pub clear_since_ms: Option<i64>,
    /// How the last observation read: `holds`, `clear`,
    /// `insufficient_data`, or empty before the first evaluation.
    pub verdict: String,
    /// Stored events in the last evaluation's window.
    pub events: u64,
    /// The rule's severity (`page`, `chat`, `ticket`...).
    pub severity: String,
    /// Unix ms until which a silence withholds this instance's
    /// notifications, as of the last evaluation.
    pub silenced_until_ms: Option<i64>,
}

/// One notification to one channel, with its delivery status. Written when
/// created and again after every delivery attempt (same `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// Unique id (a UUID), the same across the record's updates.
    pub id: String,
    /// The alert instance's fingerprint (empty for a test notification).
    pub fingerprint: String,
    /// The rule's name (`test` for a test notification).
    pub rule: String,
    /// The project concerned.
    pub project: ProjectName,
    /// The channel's name in the settings.
    pub channel: String,
    /// `firing`, `resolved`, `repeat` or `test`.
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// Unix ms when the notification was created.
    pub created_at_ms: i64,
    /// Unix ms of the last update (the last attempt).
    pub updated_at_ms: i64,
    /// One line: the email subject / chat text.
    pub summary: String,
}

/// The ticket an alert instance's firing episode has in a ticketing
/// channel (Jira): kept beside the alert's state so that a restart neither
/// opens a second ticket nor forgets the first. The store keeps the first
/// key written for `(project, fingerprint, channel, episode_ms)`: a second
/// write of the same episode is ignored (SQLite) or read past (ClickHouse,
/// where the oldest row wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    /// The project.
    pub project: ProjectName,
    /// The alert instance's fingerprint.
    pub fingerprint: String,
    /// The channel's name in the settings.
    pub channel: String,
    /// Unix ms: when the firing episode started (the same in every notice
    /// of the episode), so the next episode gets a ticket of its own.
    pub episode_ms: i64,
    /// The ticket's key in the service (`OPS-123`).
    pub ticket_key: String,
    /// Unix ms when the ticket was created.
    pub created_at_ms: i64,
}

/// A silence: a rule's notifications (optionally one segment's) withheld
/// for a while; the alert states still change and show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// Unique id (a UUID).
    pub id: String,
    /// The rule silenced.
    pub rule: String,
    /// The project it applies to.
    pub project: ProjectName,
    /// `dimension=value` to silence one segment only; `None` for every
    /// instance of the rule.
    pub segment: Option<String>,
    /// Unix ms, inclusive.
    pub starts_at_ms: i64,
    /// Unix ms, exclusive.
    pub ends_at_ms: i64,
    /// Who created it (a dashboard user, or `cli`).
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether the silence is in force at `now_ms` for an instance of
    /// `rule` in `project` with `segment`.
    pub fn covers(&self, project: &ProjectName, rule: &str, segment: Option<&str>, now_ms: i64) -> bool {
        self.project == *project
            && self.rule == rule
            && self.starts_at_ms <= now_ms
            && now_ms < self.ends_at_ms
            && self.segment.as_deref().is_none_or(|s| Some(s) == segment)
    }
}

/// The name of the lease evaluator replicas contend for.
pub const EVALUATOR_LEASE: &str = "alerts-evaluator";
