//! Dashboard users: HTTP Basic or the pages' session cookie on the API
//! (sessions and the login page: [`crate::session`]). Passwords are argon2 hashes; a verified
//! `Authorization` header is remembered for a short while by its SHA-256, so
//! a dashboard polling the API does not pay argon2 on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::header;
use base64::Engine;
use sha2::{Digest, Sha256};
use synchealth_schema::ProjectName;
use synchealth_store::{SharedStore, User};

use crate::{AppError, DashboardState};

/// How long a verified header is trusted without re-checking the store.
const TTL: Duration = Duration::from_secs(60);

/// An argon2id PHC string for a password.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Hashing only fails on parameters we do not set; an unusable hash
        // locks the account instead of crashing.
        .unwrap_or_default()
}

/// Whether `password` matches a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// The authenticated dashboard user of a request.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl CurrentUser {
    /// Whether the user may read a project.
    pub fn may_read(&self, project: &ProjectName) -> bool {
        self.0.admin || self.0.projects.contains(project)
    }
}

/// Verified Basic credentials, by the SHA-256 of the header.
#[derive(Debug)]
pub struct AuthCache {
    store: SharedStore,
    verified: Mutex<HashMap<[u8; 32], (Instant, User)>>,
}

impl AuthCache {
    /// An empty cache.
    pub fn new(store: SharedStore) -> Self {
        AuthCache { store, verified: Mutex::new(HashMap::new()) }
    }

    /// The user behind an `Authorization: Basic` header value.
    pub async fn basic(&self, header_value: &str) -> Result<User, AppError> {
        let digest: [u8; 32] = Sha256::digest(header_value.as_bytes()).into();
        if let Some(user) = self.cached(&digest) {
            return Ok(user);
        }
        let encoded = header_value.strip_prefix("Basic ").ok_or(AppError::Unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or(AppError::Unauthorized)?;
        let (username, password) = decoded.split_once(':').ok_or(AppError::Unauthorized)?;
        let user = self.store.find_user(username).await?.ok_or(AppError::Unauthorized)?;
        let phc = user.password_hash.clone();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc)).await.unwrap_or(false);
        if !ok {
            return Err(AppError::Unauthorized);
        }
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() > 1000 {
                verified.clear();
            }
            verified.insert(digest, (Instant::now(), user.clone()));
        }
        Ok(user)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<User> {
        let verified = self.verified.lock().ok()?;
        let (at, user) = verified.get(digest)?;
        (at.elapsed() < TTL).then(|| user.clone())
    }
}

impl FromRequestParts<DashboardState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Self::Rejection> {
        if let Some(header_value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            return state.auth.basic(header_value).await.map(CurrentUser);
        }
        // A logged-in browser reads the API with its session (the JSON
        // links on the pages); a GET changes nothing, so no CSRF token.
        let token = crate::session::cookie(&parts.headers, crate::session::SESSION_COOKIE).ok_or(AppError::Unauthorized)?;
        crate::session::user_of(state, &token).await?.map(CurrentUser).ok_or(AppError::Unauthorized)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let phc = hash_password("correct horse");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
