//! Declared dimensions (issue 19) end to end, on both stores: a project
//! keeps only the dimensions it declared (through the store, or with
//! `synchealth projects dimensions`), the ingest answer counts the others,
//! and what is stored is what the answer said.

use std::process::Command;

use serde_json::{json, Value};
use synchealth::{Application, Roles};
use synchealth_schema::ProjectName;
use synchealth_store::SharedStore;

use crate::helpers::{batch, event, serve, spawn_app_with, test_settings, Backend, INGEST_KEY};
use crate::on_both_stores;

on_both_stores!(
    undeclared_dimensions_are_counted_in_the_answer_and_only_declared_ones_are_stored,
    dimensions_declared_with_the_binary_apply_to_ingest_and_a_bad_key_is_refused_by_name,
);

fn default_project() -> ProjectName {
    ProjectName::parse("default").unwrap()
}

/// An event of `device` carrying the dimensions every event of these tests has.
fn event_with_dimensions(device: &str) -> Value {
    let mut event = event(device, 2, true, 100);
    event["dimensions"] = json!({"engine": "powersync", "plan": "pro", "region": "eu"});
    event
}

/// The stored events of `device`, polled a while (reads may lag a write).
async fn stored_dimensions(store: &SharedStore, device: &str) -> Vec<Vec<(String, String)>> {
    for _ in 0..100 {
        let events = store.device_events(&default_project(), device, 10).await.unwrap();
        if !events.is_empty() {
            return events.into_iter().map(|e| e.event.dimensions.into_iter().collect()).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no stored event of {device}");
}

fn kept() -> Vec<(String, String)> {
    vec![("engine".into(), "powersync".into()), ("plan".into(), "pro".into())]
}

async fn undeclared_dimensions_are_counted_in_the_answer_and_only_declared_ones_are_stored(backend: Backend) {
    let Some((app, store)) = spawn_app_with(backend, "dimensions_ingest", |_| {}).await else { return };
    store.set_project_dimensions(&default_project(), &["engine".into(), "plan".into()]).await.unwrap();

    let events = vec![event_with_dimensions("dim-1"), event_with_dimensions("dim-1"), event_with_dimensions("dim-2")];
    let response = app.post_batch(&batch(events)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"accepted": 3, "duplicates": 0, "rejected": [], "ignored_dimensions": {"region": 3}}),
        "region counted once per event"
    );
    assert_eq!(stored_dimensions(&store, "dim-1").await, [kept(), kept()]);
    assert_eq!(stored_dimensions(&store, "dim-2").await, [kept()]);

    // Only declared dimensions: nothing ignored, and the answer is as before.
    let mut declared_only = event("dim-3", 1, true, 100);
    declared_only["dimensions"] = json!({"engine": "powersync", "plan": "pro"});
    let answer: Value = app.post_batch(&batch(vec![declared_only])).await.json().await.unwrap();
    assert_eq!(answer, json!({"accepted": 1, "duplicates": 0, "rejected": []}));
    assert_eq!(stored_dimensions(&store, "dim-3").await, [kept()]);
}

/// Runs `synchealth projects dimensions ...` on a store; returns the output.
fn projects_cli(store_args: &[String], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .args(["projects", "dimensions"])
        .args(args)
        .args(store_args)
        .env_remove("SYNCHEALTH_CONFIG")
        .env_remove("SYNCHEALTH_CLICKHOUSE_URL")
        .env_remove("SYNCHEALTH_DATA_DIR")
        .output()
        .expect("binary runs")
}

fn stdout_of(output: &std::process::Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn dimensions_declared_with_the_binary_apply_to_ingest_and_a_bad_key_is_refused_by_name(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(settings) = test_settings(backend, "dimensions_cli", dir.path()) else { return };
    let store_args: Vec<String> = match &settings.clickhouse.url {
        Some(url) => vec![
            "--clickhouse-url".into(),
            url.clone(),
            "--clickhouse-database".into(),
            settings.clickhouse.database.clone(),
        ],
        None => vec!["--data-dir".into(), settings.data_dir.display().to_string()],
    };
    // Started first: it creates the default project the command needs.
    let app = Application::build(settings, Roles::ALL).await.unwrap();
    let store = app.store();
    let app = serve(app, dir);

    assert_eq!(stdout_of(&projects_cli(&store_args, &["default"])), "", "nothing declared yet");
    assert_eq!(stdout_of(&projects_cli(&store_args, &["default", "plan, engine"])), "engine,plan\n");
    assert_eq!(stdout_of(&projects_cli(&store_args, &["default"])), "engine,plan\n");

    let refused = projects_cli(&store_args, &["default", "engine,Plan"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("dimension key \"Plan\" is not a lowercase identifier"), "{stderr}");
    let refused = projects_cli(&store_args, &["default", "a,b,c,d,e,f,g,h,i"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("at most 8 dimensions, got 9"), "{stderr}");
    let refused = projects_cli(&store_args, &["nope", "engine"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("no project named \"nope\""), "{stderr}");
    assert_eq!(stdout_of(&projects_cli(&store_args, &["default"])), "engine,plan\n", "nothing refused was stored");

    let response = app.post_batch_with_key(INGEST_KEY, &batch(vec![event_with_dimensions("cli-1")])).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["ignored_dimensions"], json!({"region": 1}), "{answer}");
    assert_eq!(stored_dimensions(&store, "cli-1").await, [kept()]);
}
