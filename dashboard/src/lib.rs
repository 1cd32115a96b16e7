//! The dashboard: what the on-call engineer reads. This crate serves the JSON
//! API (`/api/v1/...`), authenticated as a dashboard user; the server-rendered
//! pages build on the same handlers and the same metric definitions
//! ([`synchealth_store::metrics`]), so a number on a page and in the API is
//! the same number.

mod api;
mod auth;
mod error;
mod params;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use synchealth_store::SharedStore;

pub use crate::auth::{hash_password, verify_password, AuthCache, CurrentUser};
pub use crate::error::AppError;
pub use crate::params::{QueryParams, DEFAULT_PROJECT};

/// Everything the dashboard handlers share.
#[derive(Debug, Clone)]
pub struct DashboardState {
    /// Where the metrics come from.
    pub store: SharedStore,
    /// Verified credentials, cached (argon2 is slow by design).
    pub auth: Arc<AuthCache>,
}

impl DashboardState {
    /// State over a store.
    pub fn new(store: SharedStore) -> Self {
        DashboardState { auth: Arc::new(AuthCache::new(store.clone())), store }
    }
}

/// The dashboard's routes.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/api/v1/summary", get(api::summary))
        .route("/api/v1/timeseries", get(api::timeseries))
        .route("/api/v1/breakdown", get(api::breakdown))
        .with_state(state)
}
