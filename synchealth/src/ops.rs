//! Liveness and readiness, shared by every role.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use synchealth_store::SharedStore;

/// `/healthz` (the process answers) and `/readyz` (its store answers).
pub(crate) fn router(store: SharedStore) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(store)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(store): State<SharedStore>) -> (StatusCode, Json<Value>) {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready", "store": store.kind()}))),
        Err(e) => {
            tracing::warn!(error = %e, store = store.kind(), "Store unreachable.");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "store": store.kind(), "detail": "store unreachable"})))
        }
    }
}
