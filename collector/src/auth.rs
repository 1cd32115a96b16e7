//! Ingest keys: the bearer token decides the project. Keys ship inside client
//! apps, so they are public and write-only; the store keeps only their
//! SHA-256 (keys are long random strings, so a fast hash is enough). Lookups
//! are cached briefly: a revoked key stops working within `TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use synchealth_schema::ProjectName;
use synchealth_store::SharedStore;

use crate::AppError;

/// How long a lookup (hit or miss) is trusted.
const TTL: Duration = Duration::from_secs(10);

/// Lowercase hex SHA-256 of an ingest key: what the store keeps.
pub fn hash_ingest_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Caches `key hash → project` (or "no such active key").
#[derive(Debug)]
pub struct KeyCache {
    store: SharedStore,
    entries: Mutex<HashMap<String, (Instant, Option<ProjectName>)>>,
}

impl KeyCache {
    /// An empty cache over a store.
    pub fn new(store: SharedStore) -> Self {
        KeyCache { store, entries: Mutex::new(HashMap::new()) }
    }

    /// The project of an `Authorization` header value, or why not.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<ProjectName, AppError> {
        let header = authorization.ok_or(AppError::Unauthorized("missing Authorization: Bearer <ingest key>"))?;
        let key = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AppError::Unauthorized("expected Authorization: Bearer <ingest key>"))?;
        let hash = hash_ingest_key(key);
        if let Some(cached) = self.cached(&hash) {
            return cached.ok_or(AppError::Unauthorized("unknown or revoked ingest key"));
        }
        let found = self.store.find_ingest_key(&hash).await.map_err(|e| AppError::Unavailable(e.to_string()))?;
        let project = found.filter(|k| !k.revoked).map(|k| k.project);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (Instant::now(), project.clone()));
        }
        project.ok_or(AppError::Unauthorized("unknown or revoked ingest key"))
    }

    fn cached(&self, hash: &str) -> Option<Option<ProjectName>> {
        let entries = self.entries.lock().ok()?;
        let (at, project) = entries.get(hash)?;
        (at.elapsed() < TTL).then(|| project.clone())
    }
}
