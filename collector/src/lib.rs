//! The collector: the ingest API every client app in the fleet talks to.
//!
//! `POST /v1/events` takes a batch of SyncEvents (JSON, optionally gzip),
//! authenticated by an ingest key that decides the project. Each event is
//! validated on its own: bad ones are rejected with their index, field and
//! reason, good ones are stamped with the collector's clock and stored. The
//! answer (`accepted`, `duplicates`, `rejected`) is sent only once the store
//! has the events durably: an acknowledged event is never lost.

mod auth;
mod error;
mod ingest;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use synchealth_store::SharedStore;

pub use crate::auth::{hash_ingest_key, KeyCache};
pub use crate::error::AppError;
pub use crate::ingest::IngestResponse;

/// Limits the ingest endpoint enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, compressed or decompressed, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 5 * 1024 * 1024 }
    }
}

/// Everything the ingest handlers share.
#[derive(Debug, Clone)]
pub struct CollectorState {
    /// Where events go.
    pub store: SharedStore,
    /// Ingest key lookups, cached.
    pub keys: Arc<KeyCache>,
    /// Body limits.
    pub limits: Limits,
}

impl CollectorState {
    /// State over a store, with default limits.
    pub fn new(store: SharedStore, limits: Limits) -> Self {
        let keys = Arc::new(KeyCache::new(store.clone()));
        CollectorState { store, keys, limits }
    }
}

/// The collector's routes.
pub fn router(state: CollectorState) -> Router {
    // The body limit is enforced while reading, so an oversized upload is cut
    // off at the limit instead of being buffered whole.
    let body_limit = DefaultBodyLimit::max(state.limits.max_body_bytes);
    Router::new().route("/v1/events", post(ingest::post_events).layer(body_limit)).with_state(state)
}
