//! The alerts crate's error (rule validation has its own [`crate::RuleError`],
//! which points at a key of the config file).

/// What evaluating or delivering can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] synchealth_store::Error),
    /// A channel's configuration cannot work (bad address, bad URL...).
    #[error("channel `{channel}`: {reason}")]
    Channel {
        /// The channel's name.
        channel: String,
        /// What is wrong.
        reason: String,
    },
    /// One delivery attempt failed.
    #[error("delivery failed ({}): {reason}", if *transient { "transient" } else { "permanent" })]
    Send {
        /// Worth retrying (connection refused, 5xx, SMTP 4xx) or not (4xx,
        /// SMTP 5xx, a message that cannot be built).
        transient: bool,
        /// What happened.
        reason: String,
    },
    /// The service asked us to slow down (HTTP 429, or 503 with
    /// `Retry-After`): retried, but not before it said.
    #[error("delivery throttled (retry after {}s): {reason}", retry_after.as_secs())]
    Throttled {
        /// The service's `Retry-After`.
        retry_after: std::time::Duration,
        /// What happened.
        reason: String,
    },
}

impl Error {
    /// A failure worth retrying.
    pub fn transient(reason: impl Into<String>) -> Error {
        Error::Send { transient: true, reason: reason.into() }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(reason: impl Into<String>) -> Error {
        Error::Send { transient: false, reason: reason.into() }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Send { transient: true, .. } | Error::Store(_) | Error::Throttled { .. })
    }

    /// How long the service asked us to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Result with the alerts crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
