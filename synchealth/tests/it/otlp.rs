//! OTLP/HTTP logs ingest (`POST /v1/logs`), end to end over HTTP, on both
//! stores: protobuf built with the opentelemetry-proto types, JSON written as
//! an SDK's exporter sends it.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::helpers::{rfc3339, spawn_app, Backend, TestApp, INGEST_KEY};
use crate::on_both_stores;

on_both_stores!(
    a_protobuf_batch_is_stored_and_read_back_in_the_summary,
    an_otlp_json_batch_as_an_sdk_sends_it_is_stored,
    a_record_with_a_bad_duration_is_rejected_alone_with_a_partial_success,
    resource_attributes_supply_the_device_fields,
    resending_the_same_records_counts_them_once,
);

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn post_logs(app: &TestApp, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> reqwest::Response {
    let request = app.client.post(format!("{}/v1/logs", app.address)).bearer_auth(INGEST_KEY);
    let request = headers.iter().fold(request, |r, (name, value)| r.header(*name, *value));
    request.body(body).send().await.expect("request sent")
}

async fn post_protobuf(app: &TestApp, request: &ExportLogsServiceRequest) -> ExportLogsServiceResponse {
    let response = post_logs(app, &[("content-type", PROTOBUF)], request.encode_to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], PROTOBUF);
    ExportLogsServiceResponse::decode(response.bytes().await.unwrap()).unwrap()
}

async fn post_json(app: &TestApp, body: &Value) -> Value {
    let response = post_logs(app, &[("content-type", JSON)], serde_json::to_vec(body).unwrap()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], JSON);
    response.json().await.unwrap()
}

fn nanos_ago(minutes: i64) -> u64 {
    let at = OffsetDateTime::now_utc() - time::Duration::minutes(minutes);
    u64::try_from(at.unix_timestamp_nanos()).unwrap()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// One sync attempt as a log record: per-attempt fields only.
fn attempt(event_id: &str, minutes_ago: i64, success: bool, duration_ms: i64) -> LogRecord {
    LogRecord {
        time_unix_nano: nanos_ago(minutes_ago),
        observed_time_unix_nano: nanos_ago(minutes_ago),
        severity_text: "INFO".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue("sync finished".into())) }),
        attributes: vec![
            text("sync.event_id", event_id),
            kv("sync.success", any_value::Value::BoolValue(success)),
            int("sync.duration_ms", duration_ms),
            int("sync.conflicts", if success { 0 } else { 2 }),
            text("sync.network", "wifi"),
            text("code.function", "SyncWorker.run"),
        ],
        ..Default::default()
    }
}

/// A record with the device fields on the record itself.
fn attempt_on(device: &str, minutes_ago: i64, success: bool, duration_ms: i64) -> LogRecord {
    let mut record = attempt(&uuid::Uuid::new_v4().to_string(), minutes_ago, success, duration_ms);
    record.attributes.extend([
        text("sync.device_id", device),
        text("sync.app_version", "2.3.0"),
        text("sync.os", "android"),
    ]);
    record
}

fn request(resources: Vec<(Vec<KeyValue>, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: resources
            .into_iter()
            .map(|(attributes, log_records)| ResourceLogs {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "com.example.sync".into(), ..Default::default() }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn service() -> Vec<KeyValue> {
    vec![text("service.name", "notes-android")]
}

async fn a_protobuf_batch_is_stored_and_read_back_in_the_summary(backend: Backend) {
    let Some(app) = spawn_app(backend, "otlp_proto").await else { return };
    let records = vec![
        attempt_on("d1", 10, true, 1000),
        attempt_on("d1", 5, true, 3000),
        attempt_on("d2", 4, false, 60_000),
        attempt_on("d3", 3, true, 2000),
    ];
    let answer = post_protobuf(&app, &request(vec![(service(), records)])).await;
    assert_eq!(answer, ExportLogsServiceResponse::default(), "full success is an empty response");

    let summary = app.summary("").await;
    assert_eq!(summary["events"], 4);
    assert_eq!(summary["devices"], 3);
    assert_eq!(summary["success_rate"], 0.75);
    assert_eq!(summary["conflict_rate"], 0.25);
    let p99 = summary["duration_ms"]["p99"].as_f64().unwrap();
    assert!((p99 - 60_000.0).abs() / 60_000.0 < 0.02, "p99 {p99}");
    assert_eq!(summary["never_synced_devices"], 3, "no sync.last_success_at was sent");
}

/// What an SDK's OTLP/HTTP JSON exporter sends: camelCase, int64 as strings,
/// hex ids, typed values, and attributes we do not read.
fn sdk_json(records: Vec<Value>) -> Value {
    json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "notes-web"}},
            {"key": "service.version", "value": {"stringValue": "4.1.0"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "webjs"}},
            {"key": "sync.os", "value": {"stringValue": "web"}},
        ], "droppedAttributesCount": 0},
        "scopeLogs": [{
            "scope": {"name": "sync", "version": "1.0.0"},
            "logRecords": records,
        }],
    }]})
}

fn sdk_record(device: &str, minutes_ago: i64, success: bool, duration: Value) -> Value {
    let at = nanos_ago(minutes_ago).to_string();
    json!({
        "timeUnixNano": at,
        "observedTimeUnixNano": at,
        "severityNumber": 9,
        "severityText": "INFO",
        "body": {"stringValue": "sync finished"},
        "attributes": [
            {"key": "sync.event_id", "value": {"stringValue": uuid::Uuid::new_v4().to_string()}},
            {"key": "sync.device_id", "value": {"stringValue": device}},
            {"key": "sync.success", "value": {"boolValue": success}},
            {"key": "sync.duration_ms", "value": duration},
            {"key": "sync.queue_depth", "value": {"intValue": "3"}},
            {"key": "sync.sample_rate", "value": {"doubleValue": 1.0}},
            {"key": "sync.last_success_at", "value": {"stringValue": rfc3339(OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago + 5))}},
            {"key": "tags", "value": {"arrayValue": {}}},
        ],
        "droppedAttributesCount": 0,
        "flags": 1,
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
    })
}

async fn an_otlp_json_batch_as_an_sdk_sends_it_is_stored(backend: Backend) {
    let Some(app) = spawn_app(backend, "otlp_json").await else { return };
    let body = sdk_json(vec![
        sdk_record("w1", 6, true, json!({"intValue": "840"})),
        sdk_record("w2", 4, false, json!({"intValue": "1200"})),
        sdk_record("w2", 2, true, json!({"intValue": 300})),
    ]);
    assert_eq!(post_json(&app, &body).await, json!({}), "full success is an empty response");

    let summary = app.summary("").await;
    assert_eq!(summary["events"], 3);
    assert_eq!(summary["devices"], 2);
    assert_eq!(summary["success_rate"], 2.0 / 3.0);
    assert_eq!(summary["never_synced_devices"], 0);
    let web = app.summary("os=web&app_version=4.1.0").await;
    assert_eq!(web["events"], 3, "os from resource sync.os, app_version from service.version");
}

async fn a_record_with_a_bad_duration_is_rejected_alone_with_a_partial_success(backend: Backend) {
    let Some(app) = spawn_app(backend, "otlp_partial").await else { return };
    let body = sdk_json(vec![
        sdk_record("w1", 3, true, json!({"intValue": "840"})),
        sdk_record("w9", 2, true, json!({"stringValue": "slow"})),
        sdk_record("w2", 1, false, json!({"intValue": "20"})),
    ]);
    let answer = post_json(&app, &body).await;
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "1", "{answer}");
    assert_eq!(
        answer["partialSuccess"]["errorMessage"],
        "1 sync log record(s) rejected: resourceLogs[0].scopeLogs[0].logRecords[1] sync.duration_ms: \
         expected a non-negative integer, got a string"
    );
    let summary = app.summary("").await;
    assert_eq!(summary["events"], 2);
    assert_eq!(summary["devices"], 2);

    // The same answer in protobuf for a protobuf request.
    let mut bad = attempt_on("d9", 1, true, 10);
    bad.attributes.retain(|kv| kv.key != "sync.duration_ms");
    bad.attributes.push(int("sync.duration_ms", -5));
    let answer = post_protobuf(&app, &request(vec![(service(), vec![attempt_on("d1", 1, true, 10), bad])])).await;
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("logRecords[1] sync.duration_ms: expected a non-negative integer, got -5"));
    assert_eq!(app.summary("").await["events"], 3);
}

async fn resource_attributes_supply_the_device_fields(backend: Backend) {
    let Some(app) = spawn_app(backend, "otlp_resource").await else { return };
    let id = || uuid::Uuid::new_v4().to_string();
    // One device described with our attributes, one with the semantic conventions.
    let ours = vec![text("sync.device_id", "pixel-1"), text("sync.app_version", "2.3.0"), text("sync.os", "android")];
    let semconv = vec![
        text("device.id", "desktop-7"),
        text("service.version", "2.4.0"),
        text("os.type", "windows"),
        text("os.version", "10.0.22631"),
        text("device.model.identifier", "Surface Laptop 5"),
    ];
    let answer = post_protobuf(
        &app,
        &request(vec![
            (ours, vec![attempt(&id(), 3, true, 100), attempt(&id(), 2, false, 200)]),
            (semconv, vec![attempt(&id(), 1, true, 300)]),
        ]),
    )
    .await;
    assert_eq!(answer, ExportLogsServiceResponse::default());
    let summary = app.summary("").await;
    assert_eq!(summary["events"], 3);
    assert_eq!(summary["devices"], 2);
    assert_eq!(app.summary("os=android&app_version=2.3.0").await["events"], 2);
    assert_eq!(app.summary("os=windows&app_version=2.4.0").await["devices"], 1);
}

async fn resending_the_same_records_counts_them_once(backend: Backend) {
    let Some(app) = spawn_app(backend, "otlp_twice").await else { return };
    let records = (0..20).map(|i| attempt_on(&format!("d{}", i % 6), i % 30, i % 4 != 0, 100 + i)).collect();
    let body = request(vec![(service(), records)]);
    // A fixed window, so the two reads cover the same span.
    let window = format!(
        "from={}&to={}",
        rfc3339(OffsetDateTime::now_utc() - time::Duration::hours(1)),
        rfc3339(OffsetDateTime::now_utc() + time::Duration::minutes(1))
    )
    .replace('+', "%2B");
    assert_eq!(post_protobuf(&app, &body).await, ExportLogsServiceResponse::default());
    let before = app.summary(&window).await;
    assert_eq!(before["events"], 20);
    // A retry after a lost answer: same sync.event_id, so nothing changes.
    assert_eq!(post_protobuf(&app, &body).await, ExportLogsServiceResponse::default());
    assert_eq!(app.summary(&window).await, before);
}

#[tokio::test]
async fn app_logs_without_sync_attributes_are_skipped_and_reported() {
    let app = spawn_app(Backend::Sqlite, "otlp_skipped").await.unwrap();
    let plain = LogRecord {
        time_unix_nano: nanos_ago(1),
        attributes: vec![text("http.route", "/notes")],
        ..Default::default()
    };
    // A resource's sync.* attributes alone do not make its records sync events.
    let resource = vec![text("sync.device_id", "d1"), text("sync.app_version", "1"), text("sync.os", "linux")];
    let answer = post_protobuf(
        &app,
        &request(vec![(resource, vec![plain.clone(), attempt(&uuid::Uuid::new_v4().to_string(), 1, true, 5), plain])]),
    )
    .await;
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 0);
    assert_eq!(partial.error_message, "2 log record(s) without sync.* attributes skipped: not sync events");
    assert_eq!(app.summary("").await["events"], 1);
}

#[tokio::test]
async fn a_gzip_otlp_json_batch_is_accepted() {
    let app = spawn_app(Backend::Sqlite, "otlp_gzip").await.unwrap();
    let body = serde_json::to_vec(&sdk_json(vec![sdk_record("w1", 1, true, json!({"intValue": "10"}))])).unwrap();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&body).unwrap();
    let response =
        post_logs(&app, &[("content-type", JSON), ("content-encoding", "gzip")], encoder.finish().unwrap()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    assert_eq!(app.summary("").await["events"], 1);
}

#[tokio::test]
async fn a_missing_or_wrong_ingest_key_is_a_401() {
    let app = spawn_app(Backend::Sqlite, "otlp_wrong_key").await.unwrap();
    let url = format!("{}/v1/logs", app.address);
    let body = request(vec![(service(), vec![attempt_on("d1", 1, true, 10)])]).encode_to_vec();
    let none = app.client.post(&url).header("content-type", PROTOBUF).body(body.clone()).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong =
        app.client.post(&url).bearer_auth("shk_nope").header("content-type", PROTOBUF).body(body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["detail"], "unknown or revoked ingest key");
    assert_eq!(app.summary("").await["events"], 0);
}

#[tokio::test]
async fn a_body_that_is_not_otlp_is_a_400_and_another_content_type_a_415() {
    let app = spawn_app(Backend::Sqlite, "otlp_bad_body").await.unwrap();
    let garbage = post_logs(&app, &[("content-type", PROTOBUF)], vec![0xff, 0xff, 0xff]).await;
    assert_eq!(garbage.status(), 400);
    let body: Value = garbage.json().await.unwrap();
    assert_eq!(body["error"], "invalid batch");
    assert!(body["detail"].as_str().unwrap().contains("protobuf"), "{body}");

    let not_json = post_logs(&app, &[("content-type", JSON)], "{\"resourceLogs\": ").await;
    assert_eq!(not_json.status(), 400);
    assert!(not_json.json::<Value>().await.unwrap()["detail"].as_str().unwrap().starts_with("invalid JSON"));

    let text = post_logs(&app, &[("content-type", "text/plain")], "hello").await;
    assert_eq!(text.status(), 415);
    assert_eq!(text.json::<Value>().await.unwrap()["error"], "unsupported media type");

    // No Content-Type reads as JSON, as on /v1/events.
    let bare = post_logs(
        &app,
        &[],
        serde_json::to_vec(&sdk_json(vec![sdk_record("d1", 1, true, json!({"intValue": "40"}))])).unwrap(),
    )
    .await;
    assert_eq!(bare.status(), 200, "{:?}", bare.text().await);
    assert_eq!(app.summary("").await["events"], 1);
}
