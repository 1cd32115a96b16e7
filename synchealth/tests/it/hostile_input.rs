//! What a hostile sender with the (public) ingest key can send, end to end
//! over HTTP on both stores: nothing it sends may blank, flip or corrupt a
//! project's metrics, and each refusal names the event, field and reason.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{batch, event, rfc3339, spawn_app, Backend, TestApp, ADMIN_PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    an_event_with_a_tiny_sample_rate_is_rejected_and_the_project_keeps_finite_correct_metrics,
    a_sent_at_in_year_9999_rejects_each_event_naming_occurred_at_and_stores_none,
    skewed_clocks_move_events_by_whole_minutes_ahead_behind_and_at_the_rounding_boundary,
);

async fn get_text(app: &TestApp, path: &str) -> String {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.expect("a body")
}

async fn an_event_with_a_tiny_sample_rate_is_rejected_and_the_project_keeps_finite_correct_metrics(backend: Backend) {
    let Some(app) = spawn_app(backend, "tiny_sample_rate").await else { return };
    let mut events: Vec<Value> = (0..200).map(|i| event(&format!("d{}", i % 9), 5, false, 1000)).collect();
    for rate in [1e-300, 1e-310, 0.000_999] {
        let mut poison = event("attacker", 5, true, 30 * 24 * 3600 * 1000);
        poison["sample_rate"] = json!(rate);
        events.push(poison);
    }
    let mut heaviest = event("heavy", 5, true, 1000);
    heaviest["sample_rate"] = json!(0.001);
    events.push(heaviest);
    let answer: Value = app.post_batch(&batch(events)).await.json().await.unwrap();
    assert_eq!(answer["accepted"], 201, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3, "{answer}");
    for (r, index) in rejected.iter().zip(200..) {
        assert_eq!(r["index"], index);
        assert_eq!(r["field"], "sample_rate");
        assert!(r["reason"].as_str().unwrap().contains("at least 0.001"), "{r}");
    }
    let summary = app.summary("").await;
    assert_eq!(summary["events"], 201);
    // 200 failures of weight 1 and one success standing for 1,000 attempts.
    assert_eq!(summary["attempts"], 1200.0);
    let rate = summary["success_rate"].as_f64().expect("a number, not null");
    assert!((rate - 1000.0 / 1200.0).abs() < 1e-9, "{rate}");
    let csv = get_text(&app, "/api/v1/breakdown.csv?by=app_version").await;
    for bad in ["inf", "NaN", "nan"] {
        assert!(!csv.contains(bad), "the CSV holds {bad}: {csv}");
    }
}

async fn a_sent_at_in_year_9999_rejects_each_event_naming_occurred_at_and_stores_none(backend: Backend) {
    let Some(app) = spawn_app(backend, "sent_at_9999").await else { return };
    let body =
        json!({"sent_at": "9999-12-31T23:59:59Z", "events": [event("d1", 5, true, 10), event("d2", 5, false, 10)]});
    let answer: Value = app.post_batch(&body).await.json().await.unwrap();
    assert_eq!(answer["accepted"], 0, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{answer}");
    assert_eq!((rejected[0]["index"].clone(), rejected[0]["field"].clone()), (json!(0), json!("occurred_at")));
    assert!(rejected[0]["reason"].as_str().unwrap().contains("outside 2000-01-01"), "{answer}");
    assert_eq!(app.summary("").await["events"], 0);
    // An occurred_at more than a day ahead of the collector, with an honest sent_at.
    let mut future = event("d3", 0, true, 10);
    future["occurred_at"] = json!(rfc3339(OffsetDateTime::now_utc() + time::Duration::days(2)));
    let answer: Value = app.post_batch(&batch(vec![future, event("d4", 1, true, 10)])).await.json().await.unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "occurred_at");
}

/// The correction is computed here from the figures, not by the code under
/// test: the skew `received - sent` rounded to whole minutes, half away
/// from zero, none under a minute. The receive time is unknown to the
/// client to the millisecond, so each case sits well inside its rounding
/// interval, except the boundary ones, which sit a second past it.
async fn skewed_clocks_move_events_by_whole_minutes_ahead_behind_and_at_the_rounding_boundary(backend: Backend) {
    let Some(app) = spawn_app(backend, "skewed_clocks").await else { return };
    // (device clock minus true time, in seconds; the expected correction in minutes)
    let cases: [(i64, i64, &str); 5] = [
        (-3 * 3600, 180, "behind3h"),
        (2 * 3600 + 5, -120, "ahead2h"),
        (-151, 3, "behind2m31s"),
        (149, -2, "ahead2m29s"),
        (-50, 0, "behind50s"),
    ];
    let true_occurred = OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let true_occurred = true_occurred.replace_nanosecond(0).unwrap();
    for (offset_s, correction_min, device) in cases {
        let offset = time::Duration::seconds(offset_s);
        let mut e = event(device, 0, true, 10);
        e["occurred_at"] = json!(rfc3339(true_occurred + offset));
        e["last_success_at"] = json!(rfc3339(true_occurred + offset - time::Duration::minutes(5)));
        let body = json!({"sent_at": rfc3339(OffsetDateTime::now_utc() + offset), "events": [e]});
        let answer: Value = app.post_batch(&body).await.json().await.unwrap();
        assert_eq!(answer["accepted"], 1, "{device}: {answer}");
        let page: Value = serde_json::from_str(&get_text(&app, &format!("/api/v1/devices/{device}")).await).unwrap();
        let stored = page["attempts"][0]["time"].as_str().expect("the event's time");
        let expected = true_occurred + offset + time::Duration::minutes(correction_min);
        let stored = OffsetDateTime::parse(stored, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(
            stored.unix_timestamp(),
            expected.unix_timestamp(),
            "{device}: stored at {stored}, expected {expected}"
        );
    }
}

#[tokio::test]
async fn bytes_after_a_gzip_member_are_a_400_and_nothing_is_stored() {
    let app = spawn_app(Backend::Sqlite, "gzip_trailing").await.unwrap();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&serde_json::to_vec(&batch(vec![event("d1", 1, true, 10)])).unwrap()).unwrap();
    let mut body = encoder.finish().unwrap();
    body.extend_from_slice(b"{\"more\": 1}");
    let response = app.post_raw(&[("content-type", "application/json"), ("content-encoding", "gzip")], body).await;
    assert_eq!(response.status(), 400);
    let detail = response.json::<Value>().await.unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("11 bytes follow the gzip member"), "{detail}");
    assert_eq!(app.summary("").await["events"], 0);
}

/// The ingest key is checked before the body is read: a client declaring a
/// 5 MB body with a wrong key is answered 401 without sending a byte of it.
#[tokio::test]
async fn a_wrong_ingest_key_is_answered_401_before_the_body_is_sent() {
    let app = spawn_app(Backend::Sqlite, "key_before_body").await.unwrap();
    let address = app.address.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer shk_wrong\r\n\
         Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}
