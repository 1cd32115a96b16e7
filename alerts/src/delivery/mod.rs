//! Delivery of alert notifications to channels: email ([`email`]) and
//! webhooks ([`webhook`]: Slack-compatible, Alertmanager v4, generic JSON).
//!
//! [`Dispatcher::dispatch`] records one [`NotificationRecord`] per channel
//! (status `pending`) and spawns one task per channel, so a slow or failing
//! channel never holds up the others nor the evaluation loop. Each task
//! retries transient failures with exponential backoff (with jitter, by
//! `backon`) and writes the record again after every attempt (`attempts`,
//! `last_error`, then `delivered` or `failed`): that is what the dashboard's
//! Alerts page shows.

pub mod email;
pub mod message;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use synchealth_schema::unix_ms;
use synchealth_store::{NotificationRecord, SharedStore};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

pub use self::email::{EmailConfig, EmailSender, SmtpSecurity};
pub use self::message::{AlertMessage, MessageKind};
pub use self::webhook::{WebhookConfig, WebhookFormat};
use crate::error::{Error, Result};

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
        for channel in channels {
            let sender = match &channel.kind {
                ChannelKind::Email(config) => Sender::Email(EmailSender::new(&channel.name, config)?),
                ChannelKind::Webhook(format, config) => {
                    reqwest::Url::parse(&config.url).map_err(|e| Error::Channel {
                        channel: channel.name.clone(),
                        reason: format!("url {:?}: {e}", config.url),
                    })?;
                    Sender::Webhook(*format, config.clone())
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

    /// Records and starts the delivery of `message` to each of `channels`
    /// (those with `send_resolved = false` skip resolutions). Returns once
    /// every record is stored; the deliveries run on, and their handles
    /// (with each record's id) say how each ended.
    #[tracing::instrument(skip_all, fields(rule = %message.rule, fingerprint = %message.fingerprint, kind = message.kind.as_str()))]
    pub async fn dispatch(
        &self,
        message: &AlertMessage,
        channels: &[String],
    ) -> Result<Vec<(String, JoinHandle<NotificationRecord>)>> {
        let now = unix_ms(OffsetDateTime::now_utc());
        let mut handles = Vec::new();
        for name in channels {
            let mut record = NotificationRecord {
                id: uuid::Uuid::new_v4().to_string(),
                fingerprint: message.fingerprint.clone(),
                rule: message.rule.clone(),
                project: message.project.clone(),
                channel: name.clone(),
                kind: message.kind.as_str().to_string(),
                status: "pending".into(),
                attempts: 0,
                last_error: None,
                created_at_ms: now,
                updated_at_ms: now,
                summary: message.subject(),
            };
            let Some(prepared) = self.channels.get(name) else {
                tracing::warn!(channel = %name, "A rule names a channel that is not configured.");
                record.status = "failed".into();
                record.last_error = Some(format!("channel `{name}` is not configured"));
                self.store.put_notification(&record).await?;
                continue;
            };
            if matches!(message.kind, MessageKind::Resolved(_)) && !prepared.channel.send_resolved {
                continue;
            }
            self.store.put_notification(&record).await?;
            let this = self.clone();
            let message = message.clone();
            let id = record.id.clone();
            handles.push((id, tokio::spawn(async move { this.deliver(record, &message).await })));
        }
        Ok(handles)
    }

    /// Resumes the delivery of a notification left `pending` by a process
    /// that stopped (its attempts count on from the record's), with the
    /// message rebuilt by the caller.
    pub fn resume(&self, record: NotificationRecord, message: AlertMessage) -> JoinHandle<NotificationRecord> {
        let this = self.clone();
        tokio::spawn(async move { this.deliver(record, &message).await })
    }

    /// Delivers one record's message to its channel, retrying transient
    /// failures, recording every attempt. Returns the final record.
    #[tracing::instrument(skip_all, fields(channel = %record.channel, id = %record.id))]
    async fn deliver(&self, mut record: NotificationRecord, message: &AlertMessage) -> NotificationRecord {
        let mut pauses = self.retry.pauses();
        loop {
            let result = self.attempt(&record.channel, &record.id, message).await;
            record.attempts += 1;
            record.updated_at_ms = unix_ms(OffsetDateTime::now_utc());
            let pause = match &result {
                Ok(()) => {
                    record.status = "delivered".into();
                    record.last_error = None;
                    None
                }
                Err(e) => {
                    record.last_error = Some(e.to_string());
                    let pause = if e.is_transient() { pauses.next() } else { None };
                    record.status = if pause.is_some() { "pending" } else { "failed" }.into();
                    pause
                }
            };
            if let Err(e) = self.store.put_notification(&record).await {
                tracing::warn!(error = %e, "Could not record a delivery attempt.");
            }
            match (&result, pause) {
                (Ok(()), _) => {
                    tracing::info!(attempts = record.attempts, "Delivered a notification.");
                    return record;
                }
                (Err(e), Some(pause)) => {
                    tracing::warn!(error = %e, attempts = record.attempts, ?pause, "Delivery failed; retrying.");
                    tokio::time::sleep(pause).await;
                }
                (Err(e), None) => {
                    tracing::error!(error = %e, attempts = record.attempts, "Delivery failed; giving up.");
                    return record;
                }
            }
        }
    }

    async fn attempt(&self, channel: &str, id: &str, message: &AlertMessage) -> Result<()> {
        let Some(prepared) = self.channels.get(channel) else {
            return Err(Error::permanent(format!("channel `{channel}` is not configured")));
        };
        match &prepared.sender {
            Sender::Email(sender) => sender.send(message).await,
            Sender::Webhook(format, config) => {
                let body = webhook::payload(*format, message, channel, id);
                let body = serde_json::to_vec(&body).map_err(|e| Error::permanent(format!("json: {e}")))?;
                webhook::post(&self.http, config, body).await
            }
        }
    }
}
