//! Delivery of alert notifications to channels: email ([`email`]),
//! webhooks ([`webhook`]: Slack-compatible, Alertmanager v4, generic JSON)
//! and the tools on-call teams live in ([`pagerduty`], [`opsgenie`],
//! [`jira`], [`teams`]), all HTTP
//! exchanges through [`http`], so every channel fails and retries alike.
//!
//! [`Dispatcher::dispatch`] takes what one evaluation says about one rule in
//! one project ([`AlertGroup`]), records one [`NotificationRecord`] per
//! changed instance and channel (status `pending`), and spawns one task per
//! channel, which sends the whole group as one message (email, Slack,
//! Alertmanager; the generic webhook's schema is one instance per request,
//! and incident tools key an incident by instance, so those get one task
//! per instance), so a slow or failing channel never
//! holds up the others nor the evaluation loop. Each task retries transient
//! failures with exponential backoff (with jitter, by `backon`; never
//! sooner than a throttling service's `Retry-After`) and writes
//! its records again after every attempt (`attempts`, `last_error`, then
//! `delivered` or `failed`): that is what the dashboard's Alerts page shows.
//! A notice to a channel that is not configured is recorded as
//! [`UNCONFIGURED`], without any attempt.
//!
//! `synchealth_notifications_total{channel, outcome}` counts notices sent
//! and failed (given up on) per configured channel, from zero at start.

pub mod email;
pub mod http;
pub mod jira;
pub mod message;
pub mod opsgenie;
pub mod pagerduty;
pub mod teams;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use synchealth_schema::unix_ms;
use synchealth_store::{NotificationRecord, SharedStore};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

pub use self::email::{EmailConfig, EmailSender, SmtpSecurity, Thread};
pub use self::jira::{JiraAuth, JiraConfig};
pub use self::message::{AlertGroup, AlertMessage, MessageKind, TEST_RULE};
pub use self::opsgenie::{OpsgenieConfig, Region, Responder};
pub use self::pagerduty::PagerDutyConfig;
pub use self::teams::TeamsConfig;
pub use self::webhook::{WebhookConfig, WebhookFormat};
use crate::error::{Error, Result};
use crate::instance::group_fingerprint;

/// Notices that reached their channel (`outcome="sent"`) or were given up
/// on (`outcome="failed"`), by channel; one per notice, so an email with
/// three segments counts three.
const NOTIFICATIONS: &str = "synchealth_notifications_total";

/// The status of a notification to a channel no configuration defines: not
/// sent, not failed (the dashboard says "no channel configured").
pub const UNCONFIGURED: &str = "unconfigured";

/// How many of a project's latest notifications are searched for the firing
/// email a repeat or resolution threads under.
const THREAD_SCAN: u32 = 1000;

/// A delivery in flight: the ids of the records it delivers, and its task,
/// which ends with their final records.
#[derive(Debug)]
pub struct Delivery {
    /// The records' ids.
    pub ids: Vec<String>,
    /// The task.
    pub handle: JoinHandle<Vec<NotificationRecord>>,
}

/// A configured channel.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Its name, as rules refer to it.
    pub name: String,
    /// Whether it is told when an alert resolves.
    pub send_resolved: bool,
    /// Where and how.
    pub kind: ChannelKind,
}

/// The kinds of channel.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    /// Email over SMTP.
    Email(EmailConfig),
    /// A webhook with one of the payload formats.
    Webhook(WebhookFormat, WebhookConfig),
    /// PagerDuty's Events API v2.
    PagerDuty(PagerDutyConfig),
    /// Opsgenie's Alert API v2.
    Opsgenie(OpsgenieConfig),
    /// A Microsoft Teams webhook, with an Adaptive Card.
    Teams(TeamsConfig),
    /// Jira's REST API v2: an issue per alert instance.
    Jira(JiraConfig),
}

/// Retries of a failing delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first pause.
    pub initial: Duration,
    /// The longest pause (pauses double up to it).
    pub max_delay: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { initial: Duration::from_secs(1), max_delay: Duration::from_secs(60), max_attempts: 10 }
    }
}

impl RetryPolicy {
    /// The pauses between attempts, `max_attempts - 1` of them.
    fn pauses(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

enum Sender {
    Email(EmailSender),
    Webhook(WebhookFormat, WebhookConfig),
    PagerDuty(PagerDutyConfig),
    Opsgenie(OpsgenieConfig),
    Teams(TeamsConfig),
    Jira(JiraConfig),
}

impl Sender {
    /// Whether the channel is told about one instance per request (the
    /// generic schema; incident tools, which key incidents by instance).
    fn per_instance(&self) -> bool {
        matches!(
            self,
            Sender::Webhook(WebhookFormat::Generic, _) | Sender::PagerDuty(_) | Sender::Opsgenie(_) | Sender::Jira(_)
        )
    }
}

struct Prepared {
    channel: Channel,
    sender: Sender,
}

/// Delivers notifications to the configured channels.
#[derive(Clone)]
pub struct Dispatcher {
    store: SharedStore,
    channels: Arc<BTreeMap<String, Prepared>>,
    retry: RetryPolicy,
    http: reqwest::Client,
    public_url: String,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Prepares every channel (parses addresses, builds transports).
    /// `public_url` is the dashboard's address as people reach it.
    pub fn new(store: SharedStore, channels: Vec<Channel>, retry: RetryPolicy, public_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("synchealth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Channel { channel: "*".into(), reason: format!("http client: {e}") })?;
        let mut prepared = BTreeMap::new();
        for channel in &channels {
            for outcome in ["sent", "failed"] {
                metrics::counter!(NOTIFICATIONS, "channel" => channel.name.clone(), "outcome" => outcome).increment(0);
            }
        }
        for channel in channels {
            let sender = match &channel.kind {
                ChannelKind::Email(config) => Sender::Email(EmailSender::new(&channel.name, config)?),
                ChannelKind::Webhook(format, config) => {
                    parse_url(&channel.name, &config.url)?;
                    Sender::Webhook(*format, config.clone())
                }
                ChannelKind::PagerDuty(config) => {
                    parse_url(&channel.name, &config.url)?;
                    Sender::PagerDuty(config.clone())
                }
                ChannelKind::Opsgenie(config) => {
                    parse_url(&channel.name, &config.api_url)?;
                    Sender::Opsgenie(config.clone())
                }
                ChannelKind::Teams(config) => {
                    parse_url(&channel.name, &config.url)?;
                    Sender::Teams(config.clone())
                }
                ChannelKind::Jira(config) => {
                    parse_url(&channel.name, &config.base_url)?;
                    Sender::Jira(config.clone())
                }
            };
            prepared.insert(channel.name.clone(), Prepared { channel, sender });
        }
        Ok(Dispatcher {
            store,
            channels: Arc::new(prepared),
            retry,
            http,
            public_url: public_url.trim_end_matches('/').to_string(),
        })
    }

    /// The dashboard's public address.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether a channel of that name is configured.
    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    /// Records and starts the delivery of `group` to each of `channels`
    /// (those with `send_resolved = false` skip resolutions). Returns once
    /// every record is stored; the deliveries run on, and their handles say
    /// how each ended.
    #[tracing::instrument(skip_all, fields(rule = %group.lead().rule, project = %group.lead().project, notices = group.changed().len()))]
    pub async fn dispatch(&self, group: &AlertGroup, channels: &[String]) -> Result<Vec<Delivery>> {
        let now = unix_ms(OffsetDateTime::now_utc());
        let mut deliveries = Vec::new();
        for name in channels {
            let Some(prepared) = self.channels.get(name) else {
                // Not a failed delivery: nothing was tried. The shipped rules
                // name `email` and `chat` before anyone configured them; the
                // role warned once at start.
                tracing::debug!(channel = %name, "No channel of that name is configured; recorded, not sent.");
                for message in group.changed() {
                    let mut record = new_record(message, name, now);
                    record.status = UNCONFIGURED.into();
                    self.store.put_notification(&record).await?;
                }
                continue;
            };
            let send_resolved = prepared.channel.send_resolved;
            let Some(group) = group.filtered(|m| send_resolved || !matches!(m.kind, MessageKind::Resolved(_))) else {
                continue;
            };
            let units = if prepared.sender.per_instance() {
                group.changed().iter().cloned().map(AlertGroup::single).collect()
            } else {
                vec![group]
            };
            for unit in units {
                let records: Vec<NotificationRecord> =
                    unit.changed().iter().map(|m| new_record(m, name, now)).collect();
                for record in &records {
                    self.store.put_notification(record).await?;
                }
                deliveries.push(self.resume(records, unit));
            }
        }
        Ok(deliveries)
    }

    /// Starts delivering `records` (one channel's, of one group; a record
    /// left `pending` by a process that stopped counts its attempts on) with
    /// the group rebuilt by the caller.
    pub fn resume(&self, records: Vec<NotificationRecord>, group: AlertGroup) -> Delivery {
        let this = self.clone();
        let ids = records.iter().map(|r| r.id.clone()).collect();
        Delivery { ids, handle: tokio::spawn(async move { this.deliver(records, &group).await }) }
    }

    /// Delivers one channel's records of a group, retrying transient
    /// failures, recording every attempt. Returns the final records.
    #[tracing::instrument(skip_all, fields(channel = %records[0].channel, id = %records[0].id))]
    async fn deliver(&self, mut records: Vec<NotificationRecord>, group: &AlertGroup) -> Vec<NotificationRecord> {
        let channel = records[0].channel.clone();
        let thread = self.thread(&records[0], group).await;
        let mut pauses = self.retry.pauses();
        loop {
            let result = self.attempt(&channel, &records[0].id, group, &thread).await;
            let updated_at_ms = unix_ms(OffsetDateTime::now_utc());
            let pause = match &result {
                Ok(()) => None,
                // Never sooner than a throttling service asked.
                Err(e) if e.is_transient() => pauses.next().map(|p| p.max(e.retry_after().unwrap_or_default())),
                Err(_) => None,
            };
            for record in &mut records {
                record.attempts += 1;
                record.updated_at_ms = updated_at_ms;
                match &result {
                    Ok(()) => {
                        record.status = "delivered".into();
                        record.last_error = None;
                    }
                    Err(e) => {
                        record.last_error = Some(e.to_string());
                        record.status = if pause.is_some() { "pending" } else { "failed" }.into();
                    }
                }
                if let Err(e) = self.store.put_notification(record).await {
                    tracing::warn!(error = %e, "Could not record a delivery attempt.");
                }
            }
            let attempts = records[0].attempts;
            let outcome = match (&result, pause) {
                (Ok(()), _) => Some("sent"),
                (Err(_), None) => Some("failed"),
                (Err(_), Some(_)) => None,
            };
            if let Some(outcome) = outcome {
                // One per notice (record), as the dashboard counts them.
                metrics::counter!(NOTIFICATIONS, "channel" => channel.clone(), "outcome" => outcome)
                    .increment(records.len() as u64);
            }
            match (&result, pause) {
                (Ok(()), _) => {
                    tracing::info!(attempts, notices = records.len(), "Delivered a notification.");
                    return records;
                }
                (Err(e), Some(pause)) => {
                    tracing::warn!(error = %e, attempts, ?pause, "Delivery failed; retrying.");
                    tokio::time::sleep(pause).await;
                }
                (Err(e), None) => {
                    tracing::error!(error = %e, attempts, "Delivery failed; giving up.");
                    return records;
                }
            }
        }
    }

    /// An email's place in its thread: its Message-ID from its first
    /// record, and for repeats and resolutions the firing emails of their
    /// segments, found from the latest earlier `firing` record of each
    /// fingerprint on this channel. `None` for webhooks.
    async fn thread(&self, record: &NotificationRecord, group: &AlertGroup) -> Option<Thread> {
        let Some(Prepared { sender: Sender::Email(sender), .. }) = self.channels.get(&record.channel) else {
            return None;
        };
        let key = group_fingerprint(&record.rule, record.project.as_str(), &record.channel);
        let message_id = email::message_id(&key, record.created_at_ms, sender.domain());
        let mut replies_to = Vec::new();
        let follow_ups: Vec<&AlertMessage> = group
            .changed()
            .iter()
            .filter(|m| matches!(m.kind, MessageKind::Repeat | MessageKind::Resolved(_)))
            .collect();
        if !follow_ups.is_empty() {
            let earlier = match self.store.notifications(Some(&record.project), THREAD_SCAN).await {
                Ok(earlier) => earlier,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not look up the firing email to thread under.");
                    Vec::new()
                }
            };
            for m in follow_ups {
                let firing = earlier
                    .iter()
                    .filter(|n| n.channel == record.channel && n.fingerprint == m.fingerprint && n.kind == "firing")
                    .filter(|n| n.created_at_ms < record.created_at_ms)
                    .max_by_key(|n| n.created_at_ms);
                if let Some(firing) = firing {
                    let id = email::message_id(&key, firing.created_at_ms, sender.domain());
                    if !replies_to.contains(&id) {
                        replies_to.push(id);
                    }
                }
            }
        }
        Some(Thread { message_id, replies_to })
    }

    async fn attempt(&self, channel: &str, id: &str, group: &AlertGroup, thread: &Option<Thread>) -> Result<()> {
        let Some(prepared) = self.channels.get(channel) else {
            return Err(Error::permanent(format!("channel `{channel}` is not configured")));
        };
        match (&prepared.sender, thread) {
            (Sender::Email(sender), Some(thread)) => sender.send(group, thread).await,
            (Sender::Email(_), None) => Err(Error::permanent("no thread for an email")),
            (Sender::Webhook(format, config), _) => {
                let body = webhook::payload(*format, group, channel, id);
                let body = serde_json::to_vec(&body).map_err(|e| Error::permanent(format!("json: {e}")))?;
                webhook::post(&self.http, config, body).await
            }
            (Sender::PagerDuty(config), _) => pagerduty::send(&self.http, config, group.lead(), id).await,
            (Sender::Opsgenie(config), _) => opsgenie::send(&self.http, config, group.lead(), id).await,
            (Sender::Teams(config), _) => teams::send(&self.http, config, group).await,
            (Sender::Jira(config), _) => jira::send(&self.http, &self.store, config, channel, group.lead()).await,
        }
    }
}

/// Checks a configured URL, which must parse (the error does not print it:
/// some carry a token).
fn parse_url(channel: &str, url: &str) -> Result<()> {
    reqwest::Url::parse(url)
        .map(drop)
        .map_err(|e| Error::Channel { channel: channel.to_string(), reason: format!("url: {e}") })
}

/// A new `pending` record of one notice to one channel.
fn new_record(message: &AlertMessage, channel: &str, now_ms: i64) -> NotificationRecord {
    NotificationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        fingerprint: message.fingerprint.clone(),
        rule: message.rule.clone(),
        project: message.project.clone(),
        channel: channel.to_string(),
        kind: message.kind.as_str().to_string(),
        status: "pending".into(),
        attempts: 0,
        last_error: None,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        summary: message.subject(),
    }
}
