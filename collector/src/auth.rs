//! Ingest keys: the bearer token decides the project. Keys ship inside client
//! apps, so they are public and write-only; the store keeps only their
//! SHA-256 (keys are long random strings, so a fast hash is enough). Lookups
//! are cached briefly: a revoked key stops working within [`KEY_CACHE_TTL`]
//! (`synchealth keys revoke` runs in another process, so the cache cannot be
//! told; the TTL is short instead, which costs one indexed lookup per active
//! key per TTL).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use synchealth_schema::ProjectName;
use synchealth_store::SharedStore;

use crate::AppError;

/// How long a lookup (hit or miss) is trusted: the longest a revoked key
/// keeps working, and a new key may stay refused after a failed try.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// How long a key lookup may take before the last known answer is used.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Lowercase hex SHA-256 of an ingest key: what the store keeps.
pub fn hash_ingest_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Who an authenticated ingest request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The project the key writes to.
    pub project: ProjectName,
    /// SHA-256 of the key, lowercase hex: what per-key limits are keyed by.
    pub key_hash: String,
}

/// Caches `key hash → project` (or "no such active key").
#[derive(Debug)]
pub struct KeyCache {
    store: SharedStore,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Option<ProjectName>)>>,
}

impl KeyCache {
    /// An empty cache over a store, trusting lookups for [`KEY_CACHE_TTL`].
    pub fn new(store: SharedStore) -> Self {
        Self::with_ttl(store, KEY_CACHE_TTL)
    }

    /// An empty cache trusting lookups for `ttl` (zero: no caching).
    pub fn with_ttl(store: SharedStore, ttl: Duration) -> Self {
        KeyCache { store, ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The project of an `Authorization` header value, or why not.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<ProjectName, AppError> {
        self.authenticate_key(authorization).await.map(|auth| auth.project)
    }

    /// The project and key hash of an `Authorization` header value, or why not.
    pub async fn authenticate_key(&self, authorization: Option<&str>) -> Result<Authenticated, AppError> {
        let header = authorization.ok_or(AppError::Unauthorized("missing Authorization: Bearer <ingest key>"))?;
        let key = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AppError::Unauthorized("expected Authorization: Bearer <ingest key>"))?;
        let hash = hash_ingest_key(key);
        if let Some(cached) = self.cached(&hash) {
            let project = cached.ok_or(AppError::Unauthorized("unknown or revoked ingest key"))?;
            return Ok(Authenticated { project, key_hash: hash });
        }
        let project = match tokio::time::timeout(LOOKUP_TIMEOUT, self.store.find_ingest_key(&hash)).await {
            Ok(Ok(found)) => found.filter(|k| !k.revoked).map(|k| k.project),
            // The store is down or hung: a key it vouched for before keeps
            // working, so its events reach the spool instead of a 503. That
            // is exactly when the spool matters; a revocation made during the
            // outage takes effect once the store answers again.
            failed => match self.last_known(&hash) {
                Some(project) => {
                    tracing::warn!(outcome = ?failed.map(|r| r.map(|_| ())), "Key lookup failed; using the last known answer.");
                    project
                }
                None => {
                    let reason = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("key lookup took longer than {LOOKUP_TIMEOUT:?}"),
                    };
                    return Err(AppError::Unavailable(reason));
                }
            },
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash.clone(), (Instant::now(), project.clone()));
        }
        let project = project.ok_or(AppError::Unauthorized("unknown or revoked ingest key"))?;
        Ok(Authenticated { project, key_hash: hash })
    }

    /// The last answer for a key, however old.
    fn last_known(&self, hash: &str) -> Option<Option<ProjectName>> {
        let entries = self.entries.lock().ok()?;
        entries.get(hash).map(|(_, project)| project.clone())
    }

    fn cached(&self, hash: &str) -> Option<Option<ProjectName>> {
        let entries = self.entries.lock().ok()?;
        let (at, project) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| project.clone())
    }
}
