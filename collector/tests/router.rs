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
use synchealth_store::{Accounts, Aggregates, IngestKey, SharedStore, SqliteStore};
use tower::ServiceExt;

const KEY: &str = "shk_router_test_key";

/// The router over a fresh embedded store holding one ingest key, as
/// `synchealth/src/roles/collector.rs` builds it (the guards keep the
/// directory and the pipeline alive for the test).
async fn app(limits: Limits) -> (Router, Pipeline, tempfile::TempDir) {
    app_with_origins(limits, &[]).await
}

/// The same, with the key usable from the browser `origins`.
async fn app_with_origins(limits: Limits, origins: &[&str]) -> (Router, Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    store.migrate().await.unwrap();
    let project = ProjectName::parse("default").unwrap();
    store.ensure_project(&project).await.unwrap();
    let key = IngestKey {
        key_hash: hash_ingest_key(KEY),
        project,
        label: "test".into(),
        created_at_ms: 0,
        revoked: false,
        allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
    };
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

const APP: &str = "https://app.example.com";

fn batch() -> String {
    let event = serde_json::json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "device_id": "browser-1",
        "occurred_at": "2026-01-01T00:00:00Z", "success": true, "duration_ms": 12,
        "app_version": "1.0.0", "os": "web",
    });
    serde_json::json!({"sent_at": "2026-01-01T00:00:01Z", "events": [event]}).to_string()
}

/// Status, headers and JSON body of one request.
async fn send_full(router: Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = router.oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_preflight_is_answered_for_any_origin_with_the_probe_headers_and_a_max_age() {
    let (router, _pipeline, _dir) = app_with_origins(Limits::default(), &[APP]).await;
    for path in ["/v1/events", "/v1/logs"] {
        // No key on a preflight, so it cannot be the key's origins that decide.
        let request = Request::options(path)
            .header(header::ORIGIN, "https://elsewhere.example.org")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type, content-encoding")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send_full(router.clone(), request).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://elsewhere.example.org");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        for h in ["authorization", "content-type", "content-encoding"] {
            assert!(allowed.contains(h), "{allowed}");
        }
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "7200");
        assert_eq!(headers[header::VARY], "origin");
    }
}

#[tokio::test]
async fn a_post_from_an_allowed_origin_is_stored_and_its_answer_readable_by_the_page() {
    let (router, _pipeline, _dir) = app_with_origins(Limits::default(), &[APP]).await;
    let request = post("/v1/events").header(header::ORIGIN, APP).body(Body::from(batch())).unwrap();
    let (status, headers, body) = send_full(router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    assert_eq!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], "retry-after");
}

#[tokio::test]
async fn a_post_from_an_origin_its_key_does_not_allow_is_a_403_without_the_allow_header() {
    let (router, _pipeline, _dir) = app_with_origins(Limits::default(), &[APP]).await;
    for path in ["/v1/events", "/v1/logs"] {
        let request = post(path).header(header::ORIGIN, "https://evil.example.org").body(Body::from(batch())).unwrap();
        let (status, headers, body) = send_full(router.clone(), request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"], "origin not allowed");
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "the browser must refuse it too");
    }
}

#[tokio::test]
async fn a_key_without_origins_refuses_every_browser_but_not_a_native_app() {
    let (router, _pipeline, _dir) = app(Limits::default()).await;
    let browser = post("/v1/events").header(header::ORIGIN, APP).body(Body::from(batch())).unwrap();
    assert_eq!(send_full(router.clone(), browser).await.0, StatusCode::FORBIDDEN);
    let native = post("/v1/events").body(Body::from(batch())).unwrap();
    let (status, headers, _) = send_full(router, native).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let (router, _pipeline, _dir) = app_with_origins(Limits::default(), &["*"]).await;
    let request = post("/v1/events").header(header::ORIGIN, "http://localhost:5173").body(Body::from(batch())).unwrap();
    let (status, headers, _) = send_full(router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:5173");
}

#[tokio::test]
async fn a_beacon_with_the_key_in_the_query_and_a_text_body_is_stored() {
    let (router, _pipeline, _dir) = app_with_origins(Limits::default(), &[APP]).await;
    let request = Request::post(format!("/v1/events?ingest_key={KEY}"))
        .header(header::ORIGIN, APP)
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from(batch()))
        .unwrap();
    let (status, _, body) = send_full(router.clone(), request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    // The query key obeys the same origin rule.
    let elsewhere = Request::post(format!("/v1/events?ingest_key={KEY}"))
        .header(header::ORIGIN, "https://evil.example.org")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(batch()))
        .unwrap();
    assert_eq!(send_full(router, elsewhere).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_wrong_key_in_the_query_is_a_401_the_page_can_read() {
    let (router, _pipeline, _dir) = app_with_origins(Limits::default(), &[APP]).await;
    let request = Request::post("/v1/events?ingest_key=shk_wrong")
        .header(header::ORIGIN, APP)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(batch()))
        .unwrap();
    let (status, headers, body) = send_full(router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
}

/// The event's stored copy, read back through a second connection to the
/// store file (the pipeline may still be writing it: polled for 10 s).
async fn stored_event(dir: &tempfile::TempDir, device: &str) -> synchealth_schema::StoredEvent {
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let project = ProjectName::parse("default").unwrap();
    for _ in 0..200 {
        if let Some(event) = store.device_events(&project, device, 1).await.unwrap().pop() {
            return event;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no stored event of {device}");
}

#[tokio::test]
async fn conflict_details_queue_time_and_dimensions_posted_to_either_endpoint_are_stored_exactly() {
    let (router, _pipeline, dir) = app(Limits::default()).await;
    declare_dimensions(&dir, &["engine", "plan"]).await;
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |offset_s: i64| {
        (now + time::Duration::seconds(offset_s)).format(&time::format_description::well_known::Rfc3339).unwrap()
    };
    let event = serde_json::json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "device_id": "json-1",
        "occurred_at": at(-60), "success": false, "duration_ms": 1200, "app_version": "2.0.0", "os": "ios",
        "conflict_details": [
            {"entity": "todo", "kind": "update_update", "resolution": "last_write_wins", "count": 2},
            {"entity": "list", "kind": "update_delete", "resolution": "unresolved", "count": 1}
        ],
        "queue_oldest_at": at(-360),
        "dimensions": {"engine": "powersync", "plan": "pro"},
    });
    let body = serde_json::json!({"sent_at": at(-59), "events": [event.clone()]}).to_string();
    let (status, answer) = send(router.clone(), post("/v1/events").body(Body::from(body)).unwrap()).await;
    assert_eq!((status, &answer["accepted"]), (StatusCode::OK, &Value::from(1)), "{answer}");
    let stored = stored_event(&dir, "json-1").await;
    assert_eq!(stored.event, synchealth_schema::SyncEvent::from_json(event).unwrap());
    assert_eq!(stored.event.conflict_details.len(), 2);
    assert_eq!(stored.queue_lag_ms, Some(300_000));

    let string = |key: &str, value: &str| serde_json::json!({"key": key, "value": {"stringValue": value}});
    let logs = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [string("sync.device_id", "otlp-1"), string("sync.dimension.engine", "electric")]},
        "scopeLogs": [{"logRecords": [{"attributes": [
            string("sync.event_id", &uuid::Uuid::now_v7().to_string()),
            string("sync.occurred_at", &at(-30)),
            {"key": "sync.success", "value": {"boolValue": true}},
            {"key": "sync.duration_ms", "value": {"intValue": "80"}},
            string("sync.app_version", "2.0.0"),
            string("sync.os", "android"),
            string("sync.conflict_details",
                r#"[{"entity": "note", "kind": "insert_insert", "resolution": "crdt_merge", "count": 3}]"#),
            string("sync.queue_oldest_at", &at(-90)),
            string("sync.dimension.plan", "free"),
        ]}]}]
    }]});
    let (status, answer) = send(router, post("/v1/logs").body(Body::from(logs.to_string())).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, serde_json::json!({}), "everything stored");
    let stored = stored_event(&dir, "otlp-1").await;
    let details = &stored.event.conflict_details;
    assert_eq!((details.len(), details[0].entity.as_str(), details[0].count), (1, "note", 3));
    assert_eq!(stored.event.conflicts, 3);
    assert_eq!(stored.queue_lag_ms, Some(60_000));
    let dimensions: Vec<(&str, &str)> = stored.event.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(dimensions, [("engine", "electric"), ("plan", "free")]);
}

/// Declares the project's dimensions in the router's store, as
/// `synchealth projects dimensions` does.
async fn declare_dimensions(dir: &tempfile::TempDir, keys: &[&str]) {
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    store.set_project_dimensions(&ProjectName::parse("default").unwrap(), &keys).await.unwrap();
}

#[tokio::test]
async fn undeclared_dimensions_are_counted_in_either_answer_and_never_stored() {
    let (router, _pipeline, dir) = app(Limits::default()).await;
    declare_dimensions(&dir, &["engine"]).await;
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let event = |device: &str, dimensions: Value| {
        serde_json::json!({
            "event_id": uuid::Uuid::now_v7().to_string(), "device_id": device, "occurred_at": now,
            "success": true, "duration_ms": 10, "app_version": "2.0.0", "os": "ios", "dimensions": dimensions,
        })
    };
    let body = serde_json::json!({"sent_at": now, "events": [
        event("dims-1", serde_json::json!({"engine": "powersync", "region": "eu", "tier": "gold"})),
        event("dims-2", serde_json::json!({"region": "us"})),
        event("dims-3", serde_json::json!({})),
    ]});
    let (status, answer) = send(router.clone(), post("/v1/events").body(Body::from(body.to_string())).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ignored = serde_json::json!({"region": 2, "tier": 1});
    assert_eq!(
        answer,
        serde_json::json!({"accepted": 3, "duplicates": 0, "rejected": [], "ignored_dimensions": ignored})
    );
    let stored = stored_event(&dir, "dims-1").await;
    assert_eq!(stored.event.dimensions, [("engine".to_string(), "powersync".to_string())].into());
    assert!(stored_event(&dir, "dims-2").await.event.dimensions.is_empty());

    let string = |key: &str, value: &str| serde_json::json!({"key": key, "value": {"stringValue": value}});
    let logs = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [string("sync.device_id", "dims-otlp"), string("sync.dimension.region", "eu")]},
        "scopeLogs": [{"logRecords": [{"attributes": [
            string("sync.event_id", &uuid::Uuid::now_v7().to_string()),
            string("sync.occurred_at", &now),
            {"key": "sync.success", "value": {"boolValue": true}},
            {"key": "sync.duration_ms", "value": {"intValue": "80"}},
            string("sync.app_version", "2.0.0"),
            string("sync.os", "android"),
            string("sync.dimension.engine", "electric"),
        ]}]}]
    }]});
    let (status, answer) = send(router, post("/v1/logs").body(Body::from(logs.to_string())).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "0", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("sync.dimension.region in 1 record(s)"), "{message}");
    let stored = stored_event(&dir, "dims-otlp").await;
    assert_eq!(stored.event.dimensions, [("engine".to_string(), "electric".to_string())].into());
}
