//! The dashboard: what the on-call engineer reads. This crate serves the JSON
//! API (`/api/v1/...`), authenticated as a dashboard user; the server-rendered
//! pages build on the same handlers and the same metric definitions
//! ([`synchealth_store::metrics`]), so a number on a page and in the API is
//! the same number. Pages need a login session (`session`: stored sessions,
//! CSRF tokens); everything but the login page answers only to a user.

pub mod api;
mod auth;
mod charts;
mod error;
mod format;
mod pages;
mod params;
mod session;
pub mod stats;
pub mod throttle;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use synchealth_alerts::Rule;
use synchealth_store::SharedStore;

pub use crate::auth::{hash_password, verify_password, AuthCache, AuthPolicy, CurrentUser, PasswordVerifier};
pub use crate::error::AppError;
pub use crate::params::{QueryParams, DEFAULT_PROJECT};
pub use crate::session::{SecureCookies, Viewer};

/// Everything the dashboard handlers share.
#[derive(Debug, Clone)]
pub struct DashboardState {
    /// Where the metrics come from.
    pub store: SharedStore,
    /// Verified credentials, cached (argon2 is slow by design), the
    /// bounded password verifier and the failed-login throttle.
    pub auth: Arc<AuthCache>,
    /// The configured alert rules: tile colours, chart threshold lines and
    /// the Alerts page.
    pub rules: Arc<Vec<Rule>>,
    /// When session cookies are `Secure`.
    pub secure_cookies: SecureCookies,
    /// The names of the configured notification channels, when known: a
    /// rule naming another one is shown with "no channel configured".
    pub channels: Option<Arc<std::collections::BTreeSet<String>>>,
}

impl DashboardState {
    /// State over a store.
    pub fn new(store: SharedStore) -> Self {
        DashboardState {
            auth: Arc::new(AuthCache::new(store.clone())),
            store,
            rules: Arc::new(Rule::defaults()),
            secure_cookies: SecureCookies::default(),
            channels: None,
        }
    }

    /// With the names of the configured notification channels (default:
    /// unknown, and no rule is flagged).
    pub fn with_channels(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.channels = Some(Arc::new(names.into_iter().collect()));
        self
    }

    /// With the configured alert rules (default: the shipped ones).
    pub fn with_rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = Arc::new(rules);
        self
    }

    /// With an authentication policy (default: [`AuthPolicy::default`]).
    pub fn with_auth_policy(mut self, policy: AuthPolicy) -> Self {
        self.auth = Arc::new(AuthCache::with_policy(self.store.clone(), policy));
        self
    }

    /// With a cookie policy (default: [`SecureCookies::Auto`]).
    pub fn with_secure_cookies(mut self, secure_cookies: SecureCookies) -> Self {
        self.secure_cookies = secure_cookies;
        self
    }
}

/// The dashboard's routes.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/api/v1/summary", get(api::summary))
        .route("/api/v1/timeseries", get(api::timeseries))
        .route("/api/v1/breakdown", get(api::breakdown))
        .route("/api/v1/breakdown.csv", get(api::breakdown_csv_route))
        .route("/api/v1/overview", get(api::overview::overview_route))
        .route("/api/v1/health", get(api::overview::health_route))
        .route("/api/v1/releases", get(api::releases::releases))
        .route("/api/v1/conflicts", get(api::signals::conflicts))
        .route("/api/v1/errors", get(api::signals::errors))
        .route("/api/v1/devices", get(api::devices::devices))
        .route("/api/v1/devices.csv", get(api::devices::devices_csv_route))
        .route("/api/v1/devices/{id}", get(api::devices::device))
        .route("/", get(pages::overview::page))
        .route("/breakdown", get(pages::breakdown::page))
        .route("/releases", get(pages::releases::page))
        .route("/conflicts", get(pages::conflicts::page))
        .route("/errors", get(pages::errors::page))
        .route("/devices", get(pages::devices::page))
        .route("/devices/{id}", get(pages::devices::device))
        .route("/alerts", get(pages::alerts::page))
        .route("/alerts/silences", post(pages::alerts::add_silence))
        .route("/alerts/silences/remove", post(pages::alerts::remove_silence))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .fallback(pages::fallback)
        .with_state(state)
}
