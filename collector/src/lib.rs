//! The collector: the ingest API every client app in the fleet talks to.
//!
//! `POST /v1/events` takes a batch of SyncEvents (JSON, optionally gzip),
//! authenticated by an ingest key that decides the project. Each event is
//! validated on its own: bad ones are rejected with their index, field and
//! reason, good ones are stamped with the collector's clock and stored, with
//! only the custom dimensions their project declared (`dimensions.rs`). The
//! answer (`accepted`, `duplicates`, `rejected`, and `ignored_dimensions`
//! when some were dropped) is sent only once the events are durable, in the
//! store or in the local spool ([`pipeline`]): an acknowledged event is
//! never lost.
//! `POST /v1/logs` takes the same events as OTLP/HTTP log records, from apps
//! that already run an OpenTelemetry SDK (`otlp.rs` has the mapping).
//! Both answer browsers (CORS, with origins allowed per key: `cors.rs`), and
//! take the key from `?ingest_key=` when a beacon cannot send a header.

mod auth;
mod body;
mod cors;
mod dimensions;
mod error;
mod ingest;
mod metric_labels;
mod otlp;
pub mod pipeline;
mod rate_limit;

use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use synchealth_store::SharedStore;

pub use crate::auth::{hash_ingest_key, Authenticated, KeyCache, KeySource, KEY_CACHE_TTL, QUERY_KEY_PARAMETER};
pub use crate::body::InFlightBudget;
pub use crate::cors::{origin_allowed, parse_allowed_origin, MAX_AGE_SECONDS};
pub use crate::dimensions::{DimensionCache, IgnoredDimensions, DIMENSIONS_CACHE_TTL};
pub use crate::error::AppError;
pub use crate::ingest::IngestResponse;
pub use crate::metric_labels::set_per_project_metrics;
#[doc(hidden)]
pub use crate::otlp::decode_and_map_for_fuzzing;
pub use crate::pipeline::{Acknowledge, Pipeline, PipelineConfig, PipelineHandle, PipelineStatus, SubmitError};
pub use crate::rate_limit::{IngestRateLimiter, RateLimit};

/// Limits the ingest endpoint enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, compressed or decompressed, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one batch; more is a 413.
    pub max_events_per_batch: usize,
    /// Events per second and burst per ingest key; `None` = unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Request body bytes held at once across all ingest requests; a body
    /// that would pass it is answered 503 with `Retry-After`.
    pub max_body_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 5 * 1024 * 1024,
            max_events_per_batch: synchealth_schema::MAX_BATCH_EVENTS,
            rate_limit: RateLimit::from_settings(20_000, 100_000),
            max_body_bytes_in_flight: DEFAULT_BODY_BYTES_IN_FLIGHT,
        }
    }
}

/// The default of [`Limits::max_body_bytes_in_flight`]: 128 MiB, 25 bodies
/// of the largest size at once, thousands of a probe's usual batches.
pub const DEFAULT_BODY_BYTES_IN_FLIGHT: usize = 128 * 1024 * 1024;

/// Everything the ingest handlers share.
#[derive(Debug, Clone)]
pub struct CollectorState {
    /// Where events go.
    pub store: SharedStore,
    /// Ingest key lookups, cached.
    pub keys: Arc<KeyCache>,
    /// Each project's declared dimensions, cached: the others are not stored.
    pub dimensions: Arc<DimensionCache>,
    /// Body limits.
    pub limits: Limits,
    /// Per-ingest-key rate limit (from `limits.rate_limit`).
    pub rate_limiter: Arc<IngestRateLimiter>,
    /// Where accepted events go: batched into the store, or spooled.
    pub pipeline: PipelineHandle,
    /// Body bytes held across requests (from `limits.max_body_bytes_in_flight`).
    pub in_flight: InFlightBudget,
}

impl CollectorState {
    /// State over a store and the pipeline that writes to it.
    pub fn new(store: SharedStore, limits: Limits, pipeline: PipelineHandle) -> Self {
        let keys = Arc::new(KeyCache::new(store.clone()));
        let dimensions = Arc::new(DimensionCache::new(store.clone()));
        let rate_limiter = Arc::new(IngestRateLimiter::new(limits.rate_limit));
        let in_flight = InFlightBudget::new(limits.max_body_bytes_in_flight);
        CollectorState { store, keys, dimensions, limits, rate_limiter, pipeline, in_flight }
    }
}

/// The collector's routes.
pub fn router(state: CollectorState) -> Router {
    // The handlers read bodies themselves (`body.rs`), after the key check,
    // within `max_body_bytes` and the budget of bytes in flight.
    // `route_layer`: the CORS headers go on these routes' answers only, not
    // on the dashboard's or the 404 fallback.
    Router::new()
        .route("/v1/events", post(ingest::post_events).options(cors::preflight))
        .route("/v1/logs", post(otlp::post_logs).options(cors::preflight))
        .route_layer(axum::middleware::from_fn(cors::headers))
        .with_state(state)
}
