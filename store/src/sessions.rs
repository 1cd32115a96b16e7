//! Dashboard login sessions, kept in the store rather than in the process so
//! that a session survives a restart and works on every dashboard replica
//! behind a load balancer, and so that a logout ends the session everywhere
//! at once (a signed cookie could not be revoked before it expires).
//!
//! The cookie carries a random token; the store keeps only its SHA-256
//! (`token_hash`), so whoever reads the database or a backup opens no
//! session.

/// One login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie's token, lowercase hex.
    pub token_hash: String,
    /// The user it belongs to.
    pub username: String,
    /// A digest of the password hash the user had at login: once the
    /// password changes, the session no longer matches and is refused.
    pub credential_tag: String,
    /// Opened at, Unix milliseconds.
    pub created_at_ms: i64,
    /// Refused from this time on, Unix milliseconds.
    pub expires_at_ms: i64,
}
