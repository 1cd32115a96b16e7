//! The dashboard's router called in process with `oneshot` (no socket): the
//! refusals of the API and the pages, with their status and shape. The pages
//! and the API over TCP are tested in `synchealth/tests/it`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::Value;
use synchealth_dashboard::{hash_password, DashboardState};
use synchealth_store::{SharedStore, SqliteStore, User};
use tower::ServiceExt;

const PASSWORD: &str = "router test password";

/// The router over a fresh embedded store with one admin user, `ana`, as
/// `synchealth/src/roles/dashboard.rs` builds it (the guard keeps the
/// directory for the test).
async fn app() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    store.migrate().await.unwrap();
    let user =
        User { username: "ana".into(), password_hash: hash_password(PASSWORD), admin: true, projects: Vec::new() };
    store.put_user(&user).await.unwrap();
    (synchealth_dashboard::router(DashboardState::new(store)), dir)
}

fn get_as_ana(uri: &str) -> Request<Body> {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("ana:{PASSWORD}"));
    Request::get(uri).header(header::AUTHORIZATION, format!("Basic {credentials}")).body(Body::empty()).unwrap()
}

/// Status, content type and body of one request.
async fn send(router: Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8_lossy(&bytes).into_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn the_api_without_a_user_is_a_401() {
    let (router, _dir) = app().await;
    let (status, _, body) = send(router, Request::get("/api/v1/summary").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["error"], "unauthorized");
}

#[tokio::test]
async fn a_page_without_a_session_goes_to_the_login_form() {
    let (router, _dir) = app().await;
    let response = router.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(location.starts_with("/login"), "{location}");
}

#[tokio::test]
async fn a_bad_api_parameter_is_a_json_400_that_names_it() {
    let (router, _dir) = app().await;
    for (query, parameter) in [("from=yesterday", "from"), ("network=5g", "network")] {
        let (status, _, body) = send(router.clone(), get_as_ana(&format!("/api/v1/summary?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(json(&body)["parameter"], parameter, "{query}");
    }
}

#[tokio::test]
async fn an_unknown_api_path_is_a_json_404() {
    let (router, _dir) = app().await;
    let (status, content_type, body) = send(router, get_as_ana("/api/v1/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert!(json(&body)["detail"].as_str().unwrap_or_default().contains("/api/v1/nothing"), "{body}");
}

#[tokio::test]
async fn an_unknown_page_is_an_html_404() {
    let (router, _dir) = app().await;
    let (status, content_type, body) = send(router, Request::get("/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("/nothing"), "{body}");
}
