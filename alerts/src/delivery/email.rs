//! Email over SMTP with lettre's async transport on tokio, TLS by rustls:
//! plain (a local relay, Mailpit in development), STARTTLS (port 587) or
//! implicit TLS (port 465), with optional authentication. Each message is
//! `multipart/alternative` with a text and an HTML part.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::AlertMessage;
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

    /// The email for a message.
    pub fn email(&self, message: &AlertMessage) -> Result<Message> {
        let mut builder = Message::builder().from(self.from.clone()).subject(message.subject());
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(message.text_body(), message.html_body()))
            .map_err(|e| Error::permanent(format!("building the email: {e}")))
    }

    /// One attempt: SMTP 5xx replies are permanent, the rest (connection
    /// refused, timeouts, 4xx) transient.
    #[tracing::instrument(skip_all, fields(fingerprint = %message.fingerprint))]
    pub async fn send(&self, message: &AlertMessage) -> Result<()> {
        let email = self.email(message)?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Error::permanent(format!("smtp: {e}"))),
            Err(e) => Err(Error::transient(format!("smtp: {e}"))),
        }
    }
}
