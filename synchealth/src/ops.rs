//! Liveness and readiness, shared by every role.
//!
//! `/readyz` is what a load balancer asks before sending traffic: the store
//! must answer, and where the collector runs, its spool must be below the
//! high-water mark, so clients move to another collector before this one
//! starts refusing with 503s (and while it still has room for what is in
//! flight). The spool's size, oldest age and the store's health are in the
//! body either way, for whoever is looking.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use synchealth_collector::PipelineHandle;
use synchealth_store::SharedStore;

/// A store that has not answered a ping within this is unreachable, for
/// readiness: a hung store must not hang the probe.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct OpsState {
    store: SharedStore,
    /// Set where the collector runs.
    pipeline: Option<PipelineHandle>,
}

/// `/healthz` (the process answers) and `/readyz` (its store answers, and its
/// spool, if any, is below the high-water mark).
pub(crate) fn router(store: SharedStore, pipeline: Option<PipelineHandle>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(OpsState { store, pipeline })
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, Json<Value>) {
    let store = &state.store;
    // In cluster mode the ping also asks every shard for a live replica
    // (store/src/clickhouse/cluster.rs): a shard with none is named here.
    let mut shards_down = None;
    let reachable = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(synchealth_store::Error::ShardsDown { cluster, shards })) => {
            tracing::warn!(cluster, ?shards, "Cluster shards without a live replica.");
            shards_down = Some(shards);
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, store = store.kind(), "Store unreachable.");
            false
        }
        Err(_) => {
            tracing::warn!(
                store = store.kind(),
                timeout_s = PING_TIMEOUT.as_secs(),
                "Store did not answer a ping in time."
            );
            false
        }
    };
    let mut body = json!({"status": "ready", "store": store.kind()});
    let mut problems = Vec::new();
    if let Some(shards) = shards_down {
        problems.push("a cluster shard has no live replica");
        body["shards_down"] = json!(shards);
    } else if !reachable {
        problems.push("store unreachable");
    }
    if let Some(pipeline) = &state.pipeline {
        let status = pipeline.status();
        if !status.spool_below_high_water() {
            problems.push("spool above its high-water mark");
        }
        body["spool"] = json!({
            "bytes": status.spool_bytes,
            "max_bytes": status.spool_max_bytes,
            "high_water_bytes": status.spool_high_water_bytes,
            "segments": status.spool_segments,
            "oldest_age_seconds": status.spool_oldest_age.map(|age| age.as_secs_f64()),
            "store_healthy": status.store_healthy,
            "queued_requests": status.queued_requests,
        });
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(body))
    } else {
        body["status"] = "unavailable".into();
        body["detail"] = problems.join("; ").into();
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The ops router called with `oneshot` (no socket).

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use synchealth_collector::{Pipeline, PipelineConfig};
    use synchealth_store::SqliteStore;
    use tower::ServiceExt;

    use super::*;

    async fn store(dir: &tempfile::TempDir) -> SharedStore {
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        store.migrate().await.unwrap();
        store
    }

    async fn send(router: Router, method: &str, uri: &str) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_live_process_with_a_reachable_store_is_healthy_and_ready() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(store(&dir).await, None);
        assert_eq!(send(router.clone(), "GET", "/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
        let (status, body) = send(router, "GET", "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ready", "store": "sqlite"}));
    }

    #[tokio::test]
    async fn where_the_collector_runs_readiness_reports_its_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let pipeline = Pipeline::start(store.clone(), PipelineConfig::new(dir.path().join("spool"))).await.unwrap();
        let (status, body) = send(router(store, Some(pipeline.handle())), "GET", "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["spool"]["bytes"], 0, "{body}");
        pipeline.shutdown().await;
    }

    #[tokio::test]
    async fn an_unknown_path_is_a_404_and_a_wrong_method_a_405() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(store(&dir).await, None);
        assert_eq!(send(router.clone(), "GET", "/nothing").await.0, StatusCode::NOT_FOUND);
        assert_eq!(send(router, "POST", "/healthz").await.0, StatusCode::METHOD_NOT_ALLOWED);
    }
}
