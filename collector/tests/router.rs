//! The collector's router called in process with `oneshot` (no socket, no
//! server loop): each refusal a client can meet, with its status and JSON
//! shape. The full stack over TCP is tested in `synchealth/tests/it`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use synchealth_collector::{hash_ingest_key, CollectorState, Limits, Pipeline, PipelineConfig};
use synchealth_schema::ProjectName;
use synchealth_store::{IngestKey, SharedStore, SqliteStore};
use tower::ServiceExt;

const KEY: &str = "shk_router_test_key";

/// The router over a fresh embedded store holding one ingest key, as
/// `synchealth/src/roles/collector.rs` builds it (the guards keep the
/// directory and the pipeline alive for the test).
async fn app(limits: Limits) -> (Router, Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    store.migrate().await.unwrap();
    let project = ProjectName::parse("default").unwrap();
    store.ensure_project(&project).await.unwrap();
    let key =
        IngestKey { key_hash: hash_ingest_key(KEY), project, label: "test".into(), created_at_ms: 0, revoked: false };
    store.put_ingest_key(&key).await.unwrap();
    let pipeline = Pipeline::start(store.clone(), PipelineConfig::new(dir.path().join("spool"))).await.unwrap();
    let router = synchealth_collector::router(CollectorState::new(store, limits, pipeline.handle()));
    (router, pipeline, dir)
}

fn post(path: &str) -> axum::http::request::Builder {
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
}

/// Status and JSON body of one request.
async fn send(router: Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_batch_without_a_key_is_a_401() {
    let (router, _pipeline, _dir) = app(Limits::default()).await;
    let request = Request::post("/v1/events")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"events":[]}"#))
        .unwrap();
    let (status, body) = send(router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_body_that_is_not_a_batch_is_a_400() {
    let (router, _pipeline, _dir) = app(Limits::default()).await;
    let (status, body) = send(router, post("/v1/events").body(Body::from(r#"{"not":"a batch"}"#)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_a_413_before_the_body_is_read() {
    let limits = Limits { max_body_bytes: 1024, ..Limits::default() };
    let (router, _pipeline, _dir) = app(limits).await;
    // The body is small: only the declared length is over the limit.
    let request = post("/v1/events").header(header::CONTENT_LENGTH, "4096").body(Body::from("{}")).unwrap();
    let (status, body) = send(router, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_text_body_is_a_415() {
    let (router, _pipeline, _dir) = app(Limits::default()).await;
    let request = Request::post("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"events":[]}"#))
        .unwrap();
    let (status, body) = send(router, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"], "unsupported media type", "{body}");
}

#[tokio::test]
async fn an_unknown_path_is_a_404() {
    let (router, _pipeline, _dir) = app(Limits::default()).await;
    let (status, _) = send(router, post("/v1/nothing").body(Body::from("{}")).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
