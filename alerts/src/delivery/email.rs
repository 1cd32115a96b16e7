//! Email over SMTP with lettre's async transport on tokio, TLS by rustls:
//! plain (a local relay, Mailpit in development), STARTTLS (port 587) or
//! implicit TLS (port 465), with optional authentication. Each message is
//! `multipart/alternative` with a text and an HTML part, and one email tells
//! of every segment of a rule that changed in one evaluation.
//!
//! Headers, so mail clients and auto-responders behave:
//! - `Auto-Submitted: auto-generated` (RFC 3834): no vacation replies, no
//!   bounce loops;
//! - `Message-ID: <synchealth.{group}.{created_ms}@{from's domain}>`,
//!   derived from the rule, project and channel (`group`, a hash) and the
//!   notification's creation time, stored with its record: the same for
//!   every attempt and a resumed delivery (receivers drop the repeat), and
//!   computable later without storing it;
//! - a repeat or resolution threads under the firing email of its segments:
//!   `In-Reply-To` and `References` name the firing emails' Message-IDs,
//!   found from their stored notification records.

use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::AlertGroup;
use crate::error::{Error, Result};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// No encryption: only for a relay on the same host or network.
    None,
    /// Plain connection upgraded with STARTTLS (refused if the server cannot).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// An email channel's settings.
#[derive(Clone)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub host: String,
    /// SMTP port; default 25 (none), 587 (STARTTLS) or 465 (TLS).
    pub port: Option<u16>,
    /// Connection security.
    pub security: SmtpSecurity,
    /// User name, if the server wants authentication.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// The sender, e.g. `synchealth <alerts@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// A PEM certificate (a private CA, or the server's self-signed one) to
    /// trust beside the built-in roots, for STARTTLS and TLS.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A ready email channel: the transport and the parsed addresses.
#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender").field("from", &self.from).field("to", &self.to).finish_non_exhaustive()
    }
}

impl EmailSender {
    /// Builds the transport; checks the addresses.
    pub fn new(channel: &str, config: &EmailConfig) -> Result<EmailSender> {
        let bad = |reason: String| Error::Channel { channel: channel.to_string(), reason };
        let from: Mailbox = config.from.parse().map_err(|e| bad(format!("from {:?}: {e}", config.from)))?;
        let to = config
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().map_err(|e| bad(format!("to {t:?}: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        if to.is_empty() {
            return Err(bad("no recipients (`to`)".into()));
        }
        let tls = match &config.ca_file {
            Some(path) if config.security != SmtpSecurity::None => {
                let pem = std::fs::read(path).map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
                let ca = Certificate::from_pem(&pem).map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
                let params = TlsParameters::builder(config.host.clone())
                    .add_root_certificate(ca)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                Some(params)
            }
            _ => None,
        };
        let dangerous = || AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host);
        let builder = match (config.security, tls) {
            (SmtpSecurity::None, _) => dangerous().port(config.port.unwrap_or(25)),
            (SmtpSecurity::StartTls, Some(params)) => {
                dangerous().port(config.port.unwrap_or(587)).tls(Tls::Required(params))
            }
            (SmtpSecurity::Tls, Some(params)) => dangerous().port(config.port.unwrap_or(465)).tls(Tls::Wrapper(params)),
            (SmtpSecurity::StartTls, None) => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(|e| bad(e.to_string()))?
                .port(config.port.unwrap_or(587)),
            (SmtpSecurity::Tls, None) => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| bad(e.to_string()))?
                .port(config.port.unwrap_or(465)),
        };
        let builder = builder.timeout(Some(config.timeout));
        let builder = match (&config.username, &config.password) {
            (Some(user), password) => {
                builder.credentials(Credentials::new(user.clone(), password.clone().unwrap_or_default()))
            }
            (None, _) => builder,
        };
        Ok(EmailSender { transport: builder.build(), from, to })
    }

    /// The domain of Message-IDs: the sender's.
    pub fn domain(&self) -> &str {
        self.from.email.domain()
    }

    /// The email for a group, with its thread's headers.
    pub fn email(&self, group: &AlertGroup, thread: &Thread) -> Result<Message> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(group.subject())
            .message_id(Some(thread.message_id.clone()))
            .header(AutoSubmitted("auto-generated".into()));
        if !thread.replies_to.is_empty() {
            let ids = thread.replies_to.join(" ");
            builder = builder.in_reply_to(ids.clone()).references(ids);
        }
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(group.text_body(), group.html_body()))
            .map_err(|e| Error::permanent(format!("building the email: {e}")))
    }

    /// One attempt: SMTP 5xx replies are permanent, the rest (connection
    /// refused, timeouts, 4xx) transient.
    #[tracing::instrument(skip_all, fields(message_id = %thread.message_id))]
    pub async fn send(&self, group: &AlertGroup, thread: &Thread) -> Result<()> {
        let email = self.email(group, thread)?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Error::permanent(format!("smtp: {e}"))),
            Err(e) => Err(Error::transient(format!("smtp: {e}"))),
        }
    }
}

/// Where an email sits in its thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// Its own `Message-ID`, angle brackets included.
    pub message_id: String,
    /// The Message-IDs of the firing emails it follows up (a repeat, a
    /// resolution); empty for a firing email.
    pub replies_to: Vec<String>,
}

/// `<synchealth.{group}.{created_ms}@{domain}>`: the Message-ID of the email
/// a notification record created at `created_ms` went out in, `group` being
/// [`crate::instance::group_fingerprint`] of its rule, project and channel.
pub fn message_id(group: &str, created_ms: i64, domain: &str) -> String {
    format!("<synchealth.{group}.{created_ms}@{domain}>")
}

/// `Auto-Submitted` (RFC 3834), which lettre has no type for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AutoSubmitted(String);

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(s: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}
