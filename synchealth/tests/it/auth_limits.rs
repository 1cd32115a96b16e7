//! The dashboard's defences against anonymous clients, over HTTP: failed
//! logins throttled per user and address on the form and HTTP Basic,
//! Basic access ending at once when a user goes or a password changes (on
//! every replica), and the bounded number of password verifications.

use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use reqwest::header::{COOKIE, RETRY_AFTER};
use serde_json::Value;
use synchealth::{Application, Roles};
use synchealth_store::{SharedStore, User};

use crate::helpers::{serve, spawn_app_with, test_settings, Backend, TestApp, ADMIN_PASSWORD};
use crate::pages::{hidden_input, no_redirects};

async fn add_user(store: &SharedStore, name: &str, password_hash: String) {
    let user = User { username: name.into(), password_hash, admin: true, projects: Vec::new() };
    store.put_user(&user).await.unwrap();
}

/// Posts the login form; the status and whether a session cookie came back.
async fn form_login(app: &TestApp, username: &str, password: &str) -> (u16, Option<u64>, bool, String) {
    let client = no_redirects();
    let form = client.get(format!("{}/login", app.address)).send().await.unwrap();
    let csrf_cookie = form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = hidden_input(&form.text().await.unwrap(), "csrf");
    let response = client
        .post(format!("{}/login", app.address))
        .header(COOKIE, csrf_cookie)
        .form(&[("username", username), ("password", password), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap().parse().unwrap());
    let session =
        response.headers().get_all("set-cookie").iter().any(|v| v.to_str().unwrap().starts_with("sh_session="));
    (status, retry_after, session, response.text().await.unwrap())
}

async fn basic_get(app: &TestApp, username: &str, password: &str) -> (u16, Option<u64>, Value) {
    let response = app
        .client
        .get(format!("{}/api/v1/summary", app.address))
        .basic_auth(username, Some(password))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_eleventh_wrong_password_on_the_form_is_refused_with_retry_after_until_the_pause_ends() {
    let (app, store) =
        spawn_app_with(Backend::Sqlite, "auth_form_throttle", |s| s.dashboard.login_lockout_seconds = 1).await.unwrap();
    add_user(&store, "ana", synchealth_dashboard::hash_password("ana-password")).await;
    for _ in 0..9 {
        assert_eq!(form_login(&app, "ana", "wrong").await.0, 401);
    }
    let (status, _, session, _) = form_login(&app, "ana", "ana-password").await;
    assert_eq!((status, session), (303, true), "nine failures lock nothing, and a success resets the count");
    for attempt in 1..=10 {
        assert_eq!(form_login(&app, "ana", "wrong").await.0, 401, "failure {attempt} after the success");
    }
    let (status, retry_after, session, body) = form_login(&app, "ana", "wrong").await;
    assert_eq!((status, retry_after, session), (429, Some(1), false));
    assert!(body.contains("Too many failed logins"), "{body}");
    let (status, _, session, _) = form_login(&app, "ana", "ana-password").await;
    assert_eq!((status, session), (429, false), "while paused, the right password opens nothing either");
    let (status, _, session, _) = form_login(&app, "admin", ADMIN_PASSWORD).await;
    assert_eq!((status, session), (429, false), "the client address is paused too");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, session, _) = form_login(&app, "ana", "ana-password").await;
    assert_eq!((status, session), (303, true), "the pause is over");
}

#[tokio::test]
async fn the_eleventh_wrong_basic_password_is_refused_with_a_retry_after_that_grows_until_a_success() {
    let (app, store) =
        spawn_app_with(Backend::Sqlite, "auth_basic_throttle", |s| s.dashboard.login_lockout_seconds = 1)
            .await
            .unwrap();
    add_user(&store, "bo", synchealth_dashboard::hash_password("bo-password")).await;
    let lock = |expected_retry_after: u64, verified_before: bool| {
        let app = &app;
        async move {
            for attempt in 1..=10 {
                assert_eq!(basic_get(app, "bo", "wrong").await.0, 401, "failure {attempt}");
            }
            let (status, retry_after, body) = basic_get(app, "bo", "wrong").await;
            assert_eq!((status, retry_after), (429, Some(expected_retry_after)), "{body}");
            assert_eq!(body["error"], "too many failed logins");
            assert_eq!(body["retry_after_seconds"], expected_retry_after);
            // A header this process verified before is proof of the
            // password: the pause does not lock out a poller that holds it.
            let expected = if verified_before { 200 } else { 429 };
            assert_eq!(basic_get(app, "bo", "bo-password").await.0, expected, "the right password while paused");
            tokio::time::sleep(Duration::from_secs(expected_retry_after) + Duration::from_millis(100)).await;
        }
    };
    lock(1, false).await;
    lock(2, false).await;
    let (status, _, body) = basic_get(&app, "bo", "bo-password").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["events"].is_number(), "{body}");
    lock(1, true).await;
}

#[tokio::test]
async fn basic_access_ends_at_once_when_the_user_goes_or_the_password_changes_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(Backend::Sqlite, "auth_basic_revoked", dir.path()).unwrap();
    let first = Application::build(settings.clone(), Roles::ALL).await.unwrap();
    let store = first.store();
    let first = serve(first, tempfile::tempdir().unwrap());
    // Another process on the same store: all replicas share.
    let second =
        Application::build(settings, Roles { collector: false, dashboard: true, alerts: false }).await.unwrap();
    let second = serve(second, tempfile::tempdir().unwrap());
    add_user(&store, "cy", synchealth_dashboard::hash_password("cy-password")).await;
    for app in [&first, &second] {
        assert_eq!(basic_get(app, "cy", "cy-password").await.0, 200);
        assert_eq!(basic_get(app, "cy", "cy-password").await.0, 200, "and again, from the remembered header");
    }
    let cy = store.find_user("cy").await.unwrap().unwrap();
    store.put_user(&User { password_hash: synchealth_dashboard::hash_password("cy-new"), ..cy }).await.unwrap();
    for app in [&first, &second] {
        let started = Instant::now();
        assert_eq!(basic_get(app, "cy", "cy-password").await.0, 401, "the old password, on {}", app.address);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(basic_get(app, "cy", "cy-new").await.0, 200);
    }
    assert!(store.remove_user("cy").await.unwrap());
    for app in [&first, &second] {
        let (status, _, body) = basic_get(app, "cy", "cy-new").await;
        assert_eq!(status, 401, "a removed user, on {}", app.address);
        assert_eq!(body["error"], "unauthorized");
    }
    drop(dir);
}

#[tokio::test]
async fn a_login_beyond_the_verification_slots_waits_briefly_then_gets_503_with_retry_after() {
    let (app, store) = spawn_app_with(Backend::Sqlite, "auth_busy", |s| {
        s.dashboard.max_concurrent_password_checks = 1;
        s.dashboard.password_check_wait_ms = 100;
    })
    .await
    .unwrap();
    // A hundred times the default time cost (seconds, even optimized): this
    // verification is surely running when the second request comes, however
    // slowly a loaded machine gets the first one to it, and outlasts the wait.
    let params = argon2::Params::new(argon2::Params::DEFAULT_M_COST, 200, 1, None).unwrap();
    let slow = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"slow-password", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    add_user(&store, "slow", slow).await;
    let first = tokio::spawn({
        let (client, address) = (app.client.clone(), app.address.clone());
        async move {
            let r = client.get(format!("{address}/api/v1/summary")).basic_auth("slow", Some("slow-password")).send();
            r.await.unwrap().status().as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = Instant::now();
    let (status, retry_after, body) = basic_get(&app, "admin", "wrong").await;
    assert_eq!((status, retry_after), (503, Some(1)), "{body}");
    assert_eq!(body["error"], "busy");
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited for a slot first");
    assert!(!first.is_finished(), "the slow verification was still running");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(basic_get(&app, "admin", ADMIN_PASSWORD).await.0, 200, "once the slot is free, logins go on");
}

#[tokio::test]
async fn alert_links_point_at_the_address_really_bound_unless_a_public_url_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Backend::Sqlite, "public_url_default", dir.path()).unwrap();
    let app = Application::build(settings.clone(), Roles::ALL).await.unwrap();
    assert_ne!(app.port(), 0);
    assert_eq!(app.public_url(), format!("http://127.0.0.1:{}", app.port()));
    let app = serve(app, tempfile::tempdir().unwrap());
    assert_eq!(app.client.get(format!("{}/healthz", app.address)).send().await.unwrap().status(), 200);
    settings.alerts.public_url = "https://health.example.com".into();
    settings.data_dir = dir.path().join("other");
    let configured = Application::build(settings, Roles::ALL).await.unwrap();
    assert_eq!(configured.public_url(), "https://health.example.com");
}
