//! Ingest keys: the bearer token decides the project. Keys ship inside client
//! apps, so they are public and write-only; the store keeps only their
//! SHA-256 (keys are long random strings, so a fast hash is enough). Lookups
//! are cached briefly: a revoked key stops working within [`KEY_CACHE_TTL`]
//! (`synchealth keys revoke` runs in another process, so the cache cannot be
//! told; the TTL is short instead, which costs one indexed lookup per active
//! key per TTL).
//!
//! A key travels in `Authorization: Bearer <key>`, or, for browsers'
//! `navigator.sendBeacon` and header-less `fetch(keepalive)` which cannot
//! set that header without a preflight, in the query as `?ingest_key=<key>`
//! ([`KeySource::Query`]). Keys are public anyway (they ship in the app);
//! what the query costs is that URLs land in access logs, so the collector
//! logs paths only (`synchealth/src/startup.rs`), and a proxy in front of it
//! should do the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::{header, HeaderMap, Uri};
use sha2::{Digest, Sha256};
use synchealth_schema::ProjectName;
use synchealth_store::SharedStore;

use crate::ingest::header_str;
use crate::AppError;

/// The query parameter that may carry the key (sendBeacon cannot set headers).
pub const QUERY_KEY_PARAMETER: &str = "ingest_key";

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
    /// Browser origins the key may be used from (`*`: any); see `cors.rs`.
    pub allowed_origins: Arc<Vec<String>>,
}

/// Where a request's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `Authorization: Bearer <key>`.
    Header,
    /// `?ingest_key=<key>`: a beacon, whose body may be `text/plain`.
    Query,
}

/// What a lookup found: the key's project and origins, or no active key.
type Grant = Option<(ProjectName, Arc<Vec<String>>)>;

/// Caches `key hash → project` (or "no such active key").
#[derive(Debug)]
pub struct KeyCache {
    store: SharedStore,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Grant)>>,
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
        self.look_up(key).await
    }

    /// The key of a request, from its `Authorization` header, else from its
    /// query's `ingest_key` (the header wins when both are given).
    pub async fn authenticate_request(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(Authenticated, KeySource), AppError> {
        if let Some(authorization) = header_str(headers, header::AUTHORIZATION) {
            return Ok((self.authenticate_key(Some(authorization)).await?, KeySource::Header));
        }
        let query = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|_| AppError::Unauthorized("the query string does not parse"))?;
        match query.0.get(QUERY_KEY_PARAMETER).map(|k| k.trim()).filter(|k| !k.is_empty()) {
            Some(key) => Ok((self.look_up(key).await?, KeySource::Query)),
            None => {
                Err(AppError::Unauthorized("missing Authorization: Bearer <ingest key> (or ?ingest_key= for beacons)"))
            }
        }
    }

    async fn look_up(&self, key: &str) -> Result<Authenticated, AppError> {
        let hash = hash_ingest_key(key);
        let found = |grant: Grant, key_hash: String| {
            let (project, allowed_origins) = grant.ok_or(AppError::Unauthorized("unknown or revoked ingest key"))?;
            Ok(Authenticated { project, key_hash, allowed_origins })
        };
        if let Some(cached) = self.cached(&hash) {
            return found(cached, hash);
        }
        let project = match tokio::time::timeout(LOOKUP_TIMEOUT, self.store.find_ingest_key(&hash)).await {
            Ok(Ok(found)) => found.filter(|k| !k.revoked).map(|k| (k.project, Arc::new(k.allowed_origins))),
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
        found(project, hash)
    }

    /// The last answer for a key, however old.
    fn last_known(&self, hash: &str) -> Option<Grant> {
        let entries = self.entries.lock().ok()?;
        entries.get(hash).map(|(_, project)| project.clone())
    }

    fn cached(&self, hash: &str) -> Option<Grant> {
        let entries = self.entries.lock().ok()?;
        let (at, project) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| project.clone())
    }
}
