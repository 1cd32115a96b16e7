//! The dashboard's data API beyond the summary: device lists and device
//! pages, CSV exports, release comparison, the overview and telemetry
//! health; on both stores, with expected values worked out from the events
//! each test posts.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::helpers::{batch, event, rfc3339, spawn_app, Backend, TestApp, ADMIN_PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    device_lists_rank_devices_and_the_device_page_shows_their_attempts,
    csv_exports_escape_what_devices_send_and_match_the_json,
    releases_compare_the_newest_version_with_the_one_before_it,
    bad_device_release_and_overview_parameters_are_400s_that_name_them,
    the_overview_and_health_count_late_events_and_both_windows,
    conflicts_and_errors_answer_what_the_posted_events_say,
);

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("request sent")
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = get(app, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("JSON")
}

/// An attempt of `device` `minutes_ago` minutes ago with the given outcome
/// and queue depth.
fn attempt(device: &str, minutes_ago: i64, success: bool, queue_depth: u32) -> Value {
    let mut e = event(device, minutes_ago, success, 300);
    e["queue_depth"] = json!(queue_depth);
    if !success {
        e["error_message"] = json!(format!("=1+2, said \"{device}\""));
    }
    e
}

async fn post(app: &TestApp, events: Vec<Value>) {
    let response = app.post_batch(&batch(events)).await;
    assert!(response.status().is_success(), "batch accepted: {}", response.status());
}

fn ids(list: &Value) -> Vec<String> {
    list["devices"].as_array().expect("devices").iter().map(|d| d["device_id"].as_str().unwrap().to_string()).collect()
}

async fn device_lists_rank_devices_and_the_device_page_shows_their_attempts(backend: Backend) {
    let Some(app) = spawn_app(backend, "dash_devices").await else {
        return;
    };
    post(
        &app,
        vec![
            // Stuck: 10, 20, 30 over its last three attempts, all failing.
            attempt("d-stuck", 30, false, 10),
            attempt("d-stuck", 20, false, 20),
            attempt("d-stuck", 10, false, 30),
            // Drains: 50 then 5; one failure after a success.
            attempt("d-drain", 25, true, 50),
            attempt("d-drain", 15, false, 5),
            // Healthy, empty queue.
            attempt("d-ok", 12, true, 0),
            attempt("d-ok", 2, true, 0),
            // Seen 50 minutes ago, silent since.
            attempt("d-quiet", 50, true, 3),
        ],
    )
    .await;
    let queue = get_json(&app, "/api/v1/devices?list=queue_depth").await;
    assert_eq!(queue["list"], "queue_depth");
    assert_eq!(ids(&queue), ["d-stuck", "d-drain", "d-quiet"], "deepest latest queue first, empty queues left out");
    assert_eq!(queue["devices"][0]["queue_depth"], 30);
    assert_eq!(queue["devices"][0]["attempts_in_window"], 3);
    assert_eq!(queue["devices"][0]["last_error_kind"], "timeout");

    let stuck = get_json(&app, "/api/v1/devices?list=stuck").await;
    assert_eq!(ids(&stuck), ["d-stuck"]);
    let failing = get_json(&app, "/api/v1/devices?list=consecutive_failures").await;
    assert_eq!(ids(&failing), ["d-stuck", "d-drain"]);
    assert_eq!(failing["devices"][0]["consecutive_failures"], 3);
    assert_eq!(failing["devices"][1]["consecutive_failures"], 1);
    let limited = get_json(&app, "/api/v1/devices?list=queue_depth&limit=1").await;
    assert_eq!(ids(&limited), ["d-stuck"]);

    let quiet = get_json(&app, "/api/v1/devices?list=quiet&silent_for=1800").await;
    assert_eq!(ids(&quiet), ["d-quiet"]);
    let silent_ms = quiet["devices"][0]["silent_for_ms"].as_i64().unwrap();
    assert!((50 * 60_000 - 5_000..=50 * 60_000 + 60_000).contains(&silent_ms), "{silent_ms}");
    assert_eq!(quiet["silent_for_ms"], 1_800_000);

    let page = get_json(&app, "/api/v1/devices/d-stuck").await;
    let attempts = page["attempts"].as_array().unwrap();
    let queues: Vec<i64> = attempts.iter().map(|a| a["queue_depth"].as_i64().unwrap()).collect();
    assert_eq!(queues, [30, 20, 10], "newest first");
    assert_eq!(attempts[0]["success"], false);
    assert_eq!(attempts[0]["conflicts"], 2);
    assert_eq!(attempts[0]["duration_ms"], 300);
    assert_eq!(attempts[0]["error_message"], "=1+2, said \"d-stuck\"");
    let limited = get_json(&app, "/api/v1/devices/d-stuck?limit=2").await;
    assert_eq!(limited["attempts"].as_array().unwrap().len(), 2);

    let unknown = get(&app, "/api/v1/devices/nobody").await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("nobody"));
}

async fn csv_exports_escape_what_devices_send_and_match_the_json(backend: Backend) {
    let Some(app) = spawn_app(backend, "dash_csv").await else {
        return;
    };
    post(&app, vec![attempt("d,1", 10, false, 7), attempt("d2", 5, true, 3)]).await;
    for path in ["/api/v1/devices.csv", "/api/v1/devices?format=csv"] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        assert!(response.headers()["content-disposition"].to_str().unwrap().contains("devices-queue_depth.csv"));
        let text = response.text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("device_id,last_seen,app_version,os,network,queue_depth"), "{text}");
        assert_eq!(lines.len(), 3, "{text}");
        // A comma quotes the field; a leading `=` is defused; quotes double.
        assert!(lines[1].starts_with("\"d,1\","), "{text}");
        assert!(lines[1].contains(",\"'=1+2, said \"\"d,1\"\"\","), "{text}");
        assert!(lines[2].starts_with("d2,"), "{text}");
    }
    let json = get_json(&app, "/api/v1/breakdown?by=os").await;
    let response = get(&app, "/api/v1/breakdown.csv?by=os").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("os,events,attempts,devices,success_rate"), "{text}");
    assert_eq!(lines.len() - 1, json["segments"].as_array().unwrap().len());
    assert!(lines[1].starts_with("android,2,2,2,0.5,"), "{text}");
    let same = get(&app, "/api/v1/breakdown?by=os&format=csv").await.text().await.unwrap();
    assert_eq!(same, text);
}

async fn releases_compare_the_newest_version_with_the_one_before_it(backend: Backend) {
    let Some(app) = spawn_app(backend, "dash_releases").await else {
        return;
    };
    let mut events = Vec::new();
    // 2.9.0: 40 successes of 40. 2.10.0 (newer, though "2.9.0" sorts after
    // it as text): 20 of 40. 1.0.0: 10, all fine.
    for i in 0..40 {
        let mut old = event(&format!("o{i}"), 10, true, 100);
        old["app_version"] = json!("2.9.0");
        let mut new = event(&format!("n{i}"), 10, i % 2 == 0, 100);
        new["app_version"] = json!("2.10.0");
        events.extend([old, new]);
    }
    for i in 0..10 {
        let mut ancient = event(&format!("a{i}"), 10, true, 100);
        ancient["app_version"] = json!("1.0.0");
        events.push(ancient);
    }
    post(&app, events).await;
    let body = get_json(&app, "/api/v1/releases").await;
    assert_eq!(body["versions"], json!(["2.10.0", "2.9.0", "1.0.0"]));
    let c = &body["comparison"];
    assert_eq!((c["a"].as_str(), c["b"].as_str()), (Some("2.9.0"), Some("2.10.0")));
    assert_eq!((c["a_events"].as_u64(), c["b_events"].as_u64()), (Some(40), Some(40)));
    let success = c["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "success_rate").unwrap();
    assert_eq!(success["a"], 1.0);
    assert_eq!(success["b"], 0.5);
    assert_eq!(success["difference"], -0.5);
    // Newcombe's interval for 20/40 - 40/40, from the Wilson intervals
    // 0.3520..0.6480 (b) and 0.9124..1 (a): low = -0.5 - sqrt(0.1480^2 + 0^2)
    // = -0.6480, high = -0.5 + sqrt(0.1480^2 + 0.0876^2) = -0.3280.
    let low = success["rate"]["difference_interval"]["low"].as_f64().unwrap();
    let high = success["rate"]["difference_interval"]["high"].as_f64().unwrap();
    assert!((low + 0.6480).abs() < 0.0005 && (high + 0.3280).abs() < 0.0005, "{low} {high}");
    assert_eq!(success["rate"]["regression"], true);
    assert_eq!(c["regression"], true);
    // Named versions: 1.0.0 against 2.9.0 is no regression (both all fine).
    let named = get_json(&app, "/api/v1/releases?a=1.0.0&b=2.9.0").await;
    assert_eq!(named["comparison"]["regression"], false);
}

async fn bad_device_release_and_overview_parameters_are_400s_that_name_them(backend: Backend) {
    let Some(app) = spawn_app(backend, "dash_params").await else {
        return;
    };
    post(&app, vec![attempt("d1", 5, true, 1)]).await;
    for (path, parameter) in [
        ("/api/v1/devices?list=slowest", "list"),
        ("/api/v1/devices?limit=0", "limit"),
        ("/api/v1/devices?limit=many", "limit"),
        ("/api/v1/devices?limit=100000", "limit"),
        ("/api/v1/devices?list=quiet&silent_for=-5", "silent_for"),
        ("/api/v1/devices?format=xml", "format"),
        ("/api/v1/devices.csv?network=5g", "network"),
        ("/api/v1/devices/d1?limit=0", "limit"),
        ("/api/v1/breakdown?format=pdf", "format"),
        ("/api/v1/releases?a=9.9.9", "a"),
        ("/api/v1/overview?step=0", "step"),
        ("/api/v1/overview?step=1&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", "step"),
        ("/api/v1/health?from=yesterday", "from"),
    ] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{path}");
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{path}");
    }
    let anonymous = app.client.get(format!("{}/api/v1/devices", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

async fn the_overview_and_health_count_late_events_and_both_windows(backend: Backend) {
    let Some(app) = spawn_app(backend, "dash_overview").await else {
        return;
    };
    // Sent now: events 20 and 40 minutes old arrive late (over 5 minutes),
    // those 1 and 3 minutes old do not. One event in the previous hour.
    post(
        &app,
        vec![
            event("a", 1, true, 100),
            event("b", 3, false, 200),
            event("c", 20, true, 300),
            event("d", 40, true, 400),
            event("e", 70, true, 500),
        ],
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let window = format!("from={}&to={}", rfc3339(now - time::Duration::hours(1)), rfc3339(now));
    let summary = get_json(&app, &format!("/api/v1/summary?{window}")).await;
    assert_eq!(summary["events"], 4);
    assert_eq!(summary["late_events"], 2);
    assert_eq!(summary["late_share"], 0.5);

    let overview = get_json(&app, &format!("/api/v1/overview?{window}")).await;
    assert_eq!(overview["current"]["events"], 4);
    assert_eq!(overview["current"]["success_rate"], 0.75);
    assert_eq!(overview["previous"]["events"], 1);
    assert_eq!(overview["step_seconds"], 60);
    let series = overview["series"].as_array().unwrap();
    assert!((60..=61).contains(&series.len()), "one bucket a minute: {}", series.len());
    let with_data: u64 = series.iter().filter_map(|p| p["summary"]["events"].as_u64()).sum();
    assert_eq!(with_data, 4);
    let durations: f64 =
        overview["duration_histogram"].as_array().unwrap().iter().map(|b| b["weight"].as_f64().unwrap()).sum();
    assert_eq!(durations, 4.0);
    assert_eq!(overview["health"]["late_events"], 2);

    let health = get_json(&app, &format!("/api/v1/health?{window}&step=600")).await;
    assert_eq!(health["step_seconds"], 600);
    assert_eq!(health["late_threshold_ms"], 300_000);
    assert_eq!(health["late_events"], 2);
    let recent = health["recent_buckets"].as_array().unwrap();
    assert_eq!(recent.len(), 3);
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    assert_eq!(recent[2]["partial"], now_ms % 600_000 != 0);
}

/// A successful attempt with these conflict details.
fn conflicted(device: &str, minutes_ago: i64, details: Value) -> Value {
    let mut e = event(device, minutes_ago, true, 200);
    // Without `conflicts`, the details' sum is the count.
    e.as_object_mut().expect("an object").remove("conflicts");
    e["conflict_details"] = details;
    e
}

async fn conflicts_and_errors_answer_what_the_posted_events_say(backend: Backend) {
    let Some(app) = spawn_app(backend, "dash_signals").await else {
        return;
    };
    let lww = |entity: &str, count: u32| json!({"entity": entity, "kind": "update_update", "resolution": "last_write_wins", "count": count});
    let merge = |entity: &str, count: u32| json!({"entity": entity, "kind": "insert_insert", "resolution": "crdt_merge", "count": count});
    let mut events = vec![
        // todo: 3 + 4 overwritten, 1 merged, on two devices; list: 2 merged.
        conflicted("c1", 20, json!([lww("todo", 3), merge("todo", 1)])),
        conflicted("c2", 15, json!([lww("todo", 4), merge("list", 2)])),
        // A failure with conflicts: 2 and no details (unclassified).
        event("c3", 10, false, 900),
    ];
    for (i, device) in ["e1", "e2", "e3"].into_iter().enumerate() {
        let mut e = event(device, 12 - i as i64, false, 30_000);
        e["error_message"] = json!(format!("timeout after {} ms for todo {}", 30_000 + i, uuid::Uuid::new_v4()));
        e["app_version"] = json!(if i == 0 { "2.2.0" } else { "2.3.0" });
        e["conflicts"] = json!(0);
        if i == 0 {
            // Its oldest pending change is ten minutes older than the attempt.
            let occurred = OffsetDateTime::parse(e["occurred_at"].as_str().unwrap(), &Rfc3339).unwrap();
            e["queue_oldest_at"] = json!(rfc3339(occurred - time::Duration::minutes(10)));
        }
        events.push(e);
    }
    post(&app, events).await;

    let c = get_json(&app, "/api/v1/conflicts?range=1h&step=3600").await;
    assert_eq!(c["conflicts"], 12.0, "3 + 1 + 4 + 2 classified, 2 unclassified: {c}");
    assert_eq!(c["unclassified"], 2.0);
    assert_eq!(c["overwrite_share"], 0.7, "7 of 10 classified conflicts overwrote one side");
    assert_eq!(c["by_resolution"], json!({"last_write_wins": 7.0, "crdt_merge": 3.0, "unclassified": 2.0}));
    assert_eq!(c["by_kind"], json!({"update_update": 7.0, "insert_insert": 3.0, "unclassified": 2.0}));
    assert_eq!(c["previous_overwrite_share"], Value::Null, "nothing in the hour before");
    let top = &c["entities_by_conflicts"];
    assert_eq!((top[0]["entity"].as_str(), top[0]["conflicts"].as_f64()), (Some("todo"), Some(8.0)));
    assert_eq!((top[0]["devices"].as_u64(), top[0]["overwrite_share"].as_f64()), (Some(2), Some(0.875)));
    assert_eq!((top[1]["entity"].as_str(), top[1]["attempts"].as_f64()), (Some("list"), Some(1.0)));
    // 2 of the 6 attempts name todo.
    let rate = top[0]["conflict_rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 6.0).abs() < 1e-9, "{rate}");
    let points = c["series"].as_array().unwrap();
    let total: f64 = points.iter().map(|p| p["conflicts"].as_f64().unwrap()).sum();
    assert_eq!(total, 12.0, "the series adds up to the window's conflicts");

    let e = get_json(&app, "/api/v1/errors?range=1h").await;
    assert_eq!(e["failed_attempts"], 4.0);
    assert_eq!(e["kinds"], json!([{"kind": "timeout", "attempts": 4.0, "share": 1.0, "events": 4, "devices": 4}]));
    let groups = e["errors"].as_array().unwrap();
    assert_eq!(
        groups[0]["fingerprint"], "timeout after ? ms for todo ?",
        "three messages differing in ids are one error"
    );
    assert_eq!((groups[0]["attempts"].as_f64(), groups[0]["devices"].as_u64()), (Some(3.0), Some(3)));
    assert_eq!(groups[0]["releases"][0], json!({"app_version": "2.3.0", "attempts": 2.0, "share": 2.0 / 3.0}));
    assert!(
        groups[0]["example"].as_str().unwrap().starts_with("timeout after 30002 ms"),
        "the latest message: {}",
        groups[0]["example"]
    );
    assert_eq!(
        (groups[1]["kind"].as_str(), groups[1]["fingerprint"].as_str()),
        (Some("timeout"), Some("")),
        "no message"
    );

    let plain = get_json(&app, "/api/v1/summary?range=1h").await;
    assert!(plain.get("conflicts").is_none() && plain.get("queue_lag_ms").is_none(), "opt-in sections: {plain}");
    let summary = get_json(&app, "/api/v1/summary?range=1h&include=conflicts,queue_lag").await;
    assert_eq!(summary["conflicts"]["count"], 12.0, "{summary}");
    assert_eq!(summary["conflicts"]["overwrite_share"], 0.7);
    assert_eq!(summary["conflicts"]["by_resolution"]["last_write_wins"], 7.0);
    // Known lags: c1 and c2 have empty queues (0), e1 is 10 minutes behind;
    // the other three have pending changes of unknown age.
    let lag = &summary["queue_lag_ms"];
    assert_eq!((lag["devices"].as_u64(), lag["devices_reporting"].as_u64()), (Some(6), Some(3)), "{lag}");
    assert_eq!((lag["p50"].as_f64(), lag["p90"].as_f64()), (Some(0.0), Some(600_000.0)));
    assert_eq!(lag["over_threshold_share"].as_f64(), Some(1.0 / 3.0));
    assert_eq!(lag["threshold_ms"], 300_000);

    for (path, parameter) in [
        ("/api/v1/summary?include=everything", "include"),
        ("/api/v1/conflicts?limit=0", "limit"),
        ("/api/v1/errors?step=1&range=7d", "step"),
    ] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{path}");
    }
}
