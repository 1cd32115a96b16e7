//! The dashboard JSON API: auth, parameters, breakdowns and time series.

use serde_json::Value;

use crate::helpers::{batch, event, spawn_app, Backend, ADMIN_PASSWORD};

#[tokio::test]
async fn the_api_requires_a_dashboard_user() {
    let app = spawn_app(Backend::Sqlite, "api_auth").await.unwrap();
    let url = format!("{}/api/v1/summary", app.address);
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let wrong = app.client.get(&url).basic_auth("admin", Some("not-it")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ingest_key_cannot_read = app.client.get(&url).bearer_auth(crate::helpers::INGEST_KEY).send().await.unwrap();
    assert_eq!(ingest_key_cannot_read.status(), 401);
    let right = app.client.get(&url).basic_auth("admin", Some(ADMIN_PASSWORD)).send().await.unwrap();
    assert_eq!(right.status(), 200);
}

#[tokio::test]
async fn a_bad_parameter_is_a_400_that_names_it() {
    let app = spawn_app(Backend::Sqlite, "api_params").await.unwrap();
    for (query, parameter) in [
        ("from=yesterday", "from"),
        ("network=5g", "network"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let response = app
            .client
            .get(format!("{}/api/v1/summary?{query}", app.address))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{query}");
    }
    let bad_by = app
        .client
        .get(format!("{}/api/v1/breakdown?by=country", app.address))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_by.status(), 400);
}

#[tokio::test]
async fn breakdown_and_timeseries_split_the_same_events() {
    let app = spawn_app(Backend::Sqlite, "api_split").await.unwrap();
    let mut ios = event("i1", 3, false, 500);
    ios["os"] = "ios".into();
    app.post_batch(&batch(vec![event("a1", 20, true, 100), event("a2", 3, true, 200), ios])).await;
    let get = |path: String| {
        let client = app.client.clone();
        async move {
            let response = client.get(path).basic_auth("admin", Some(ADMIN_PASSWORD)).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let breakdown = get(format!("{}/api/v1/breakdown?by=os", app.address)).await;
    let segments = breakdown["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0]["segment"], "android");
    assert_eq!(segments[0]["events"], 2);
    assert_eq!(segments[1]["segment"], "ios");
    assert_eq!(segments[1]["success_rate"], 0.0);

    let series = get(format!("{}/api/v1/timeseries?step=60&metric=success_rate", app.address)).await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{series}");
    assert_eq!(points[0]["value"], 1.0);
    assert_eq!(points[1]["value"], 0.5);

    // Without a step, the overview's buckets: whole hours over a day.
    for (range, step) in [("1h", 60), ("6h", 300), ("24h", 3600), ("7d", 3 * 3600)] {
        let series = get(format!("{}/api/v1/timeseries?range={range}", app.address)).await;
        assert_eq!(series["step_seconds"], step, "range={range}");
    }
}
