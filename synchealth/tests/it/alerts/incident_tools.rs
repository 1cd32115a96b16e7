//! The incident tools on-call teams live in, each against a real HTTP
//! receiver that checks every request against the service's documented
//! schema (required fields, types, lengths, the authentication it expects)
//! and answers as the service does: PagerDuty's Events API v2, Opsgenie's
//! Alert API v2, Jira's REST API v2 and a Microsoft Teams webhook. A request
//! the real service would refuse is answered 400 and recorded as a
//! problem, and every test asserts there were none.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use synchealth::settings::{
    JiraChannelSettings, OpsgenieChannelSettings, PagerDutyChannelSettings, TeamsChannelSettings,
};
use synchealth_alerts::delivery::{Region, Responder};

use super::*;

/// A 32-character routing key, as PagerDuty's are.
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";
/// Jira Cloud's Basic auth of `bot@example.com:jira-api-token`.
const JIRA_CLOUD_AUTH: &str = "Basic Ym90QGV4YW1wbGUuY29tOmppcmEtYXBpLXRva2Vu";
/// A Jira Data Center personal access token.
const JIRA_PAT: &str = "jira-personal-access-token";
/// An Opsgenie API integration's key.
const OPSGENIE_KEY: &str = "eb243592-faa2-4ba2-a551-1afdf565c889";

/// One request as the service received it.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    /// The `Authorization` header.
    auth: String,
    body: Value,
    /// What the real service would have refused it for.
    problems: Vec<String>,
    at: Instant,
}

#[derive(Default)]
struct ServiceState {
    calls: Mutex<Vec<Call>>,
    /// Requests still to be answered 429 with `Retry-After: 2`.
    throttle: AtomicUsize,
    /// Jira issues created (`OPS-1`...).
    jira_issues: AtomicUsize,
}

/// The services' stand-ins, one receiver, one path prefix per service.
#[derive(Clone, Default)]
struct Services(Arc<ServiceState>);

impl Services {
    fn calls(&self, prefix: &str) -> Vec<Call> {
        self.0.calls.lock().unwrap().iter().filter(|c| c.path.starts_with(prefix)).cloned().collect()
    }

    fn throttle_next(&self, n: usize) {
        self.0.throttle.store(n, Ordering::SeqCst);
    }

    /// Every request made was one the real service takes.
    fn assert_valid(&self) {
        let calls = self.0.calls.lock().unwrap();
        let bad: Vec<&Call> = calls.iter().filter(|c| !c.problems.is_empty()).collect();
        assert!(bad.is_empty(), "requests the service would refuse: {bad:#?}");
    }

    /// Jira requests of `method` on `path`.
    fn jira(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls(path).into_iter().filter(|c| c.method == method && c.path == path).collect()
    }

    /// PagerDuty events with `event_action` `action`.
    fn pagerduty(&self, action: &str) -> Vec<Value> {
        let events = self.calls("/pagerduty/");
        events.into_iter().map(|c| c.body).filter(|b| b["event_action"] == action).collect()
    }
}

/// A real HTTP receiver for every service, on a free port.
async fn services() -> (String, Services) {
    let services = Services::default();
    let app = Router::new().fallback(answer).with_state(services.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, services)
}

async fn answer(
    State(services): State<Services>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let throttled = services.0.throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let (problems, response) = if throttled {
        (Vec::new(), (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "2")], "rate limited").into_response())
    } else if path == "/pagerduty/v2/enqueue" && method == Method::POST {
        pagerduty(&headers, &parsed)
    } else if path.starts_with("/opsgenie/") && method == Method::POST {
        opsgenie(&headers, uri.query().unwrap_or_default(), &path, &parsed)
    } else if path.starts_with("/jira/") {
        jira(&services.0, &method, &headers, &path, &parsed)
    } else if path == "/teams/webhook" && method == Method::POST {
        teams(&headers, &parsed)
    } else {
        (vec![format!("no such endpoint: {method} {path}")], StatusCode::NOT_FOUND.into_response())
    };
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let call = Call { method, path, auth, body: parsed, problems, at: Instant::now() };
    services.0.calls.lock().unwrap().push(call);
    response
}

/// Problems of a JSON value at `pointer`: present, a string, `1..=max` characters.
fn string_field(problems: &mut Vec<String>, body: &Value, pointer: &str, max: usize) -> String {
    match body.pointer(pointer).and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.chars().count() <= max => return s.to_string(),
        Some(s) => problems.push(format!("{pointer}: {} characters, at most {max}", s.chars().count())),
        None => problems.push(format!("{pointer}: missing or not a string")),
    }
    String::new()
}

fn json_content(headers: &HeaderMap, problems: &mut Vec<String>) {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/json") {
        problems.push(format!("content-type {content_type:?}"));
    }
}

/// PagerDuty Events API v2 (`POST /v2/enqueue`): `routing_key` of 32
/// characters, `event_action` trigger|acknowledge|resolve, `dedup_key` at
/// most 255 (required but for a trigger); a trigger's `payload` with
/// `summary` (≤ 1024), `source` and `severity` critical|error|warning|info;
/// `links` of `href`s. Answers 202 with the `dedup_key`, 400 otherwise.
fn pagerduty(headers: &HeaderMap, body: &Value) -> (Vec<String>, Response) {
    let mut problems = Vec::new();
    json_content(headers, &mut problems);
    if body["routing_key"].as_str().is_none_or(|k| k.len() != 32) {
        problems.push(format!("routing_key {:?} is not 32 characters", body["routing_key"]));
    }
    let action = body["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        problems.push(format!("event_action {action:?}"));
    }
    let dedup_key = match body.get("dedup_key") {
        None if action == "trigger" => "generated-key".to_string(),
        _ => string_field(&mut problems, body, "/dedup_key", 255),
    };
    if action == "trigger" {
        string_field(&mut problems, body, "/payload/summary", 1024);
        string_field(&mut problems, body, "/payload/source", 255);
        let severity = body["payload"]["severity"].as_str().unwrap_or_default();
        if !["critical", "error", "warning", "info"].contains(&severity) {
            problems.push(format!("payload.severity {severity:?}"));
        }
        if let Some(details) = body["payload"].get("custom_details") {
            if !details.is_object() {
                problems.push("payload.custom_details is not an object".into());
            }
        }
        for link in body["links"].as_array().into_iter().flatten() {
            if !link["href"].is_string() {
                problems.push(format!("link without href: {link}"));
            }
        }
    }
    if !problems.is_empty() {
        let answer = json!({"status": "invalid event", "message": "Event object is invalid", "errors": problems});
        return (problems, (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response());
    }
    let answer = json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key});
    (problems, (StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

// ---------------------------------------------------------------- opsgenie

/// Opsgenie Alert API v2: `Authorization: GenieKey <key>`; create
/// (`POST /v2/alerts`) with `message` (≤ 130), `alias` (≤ 512),
/// `description` (≤ 15,000), `priority` P1–P5, `responders` with a type
/// and a name, id or username, string `tags` and string `details`; close
/// (`POST /v2/alerts/{alias}/close?identifierType=alias`). Answers 202
/// with a `requestId`.
fn opsgenie(headers: &HeaderMap, query: &str, path: &str, body: &Value) -> (Vec<String>, Response) {
    let mut problems = Vec::new();
    json_content(headers, &mut problems);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("GenieKey {OPSGENIE_KEY}") {
        problems.push(format!("authorization {auth:?}"));
    }
    if path == "/opsgenie/v2/alerts" {
        string_field(&mut problems, body, "/message", 130);
        string_field(&mut problems, body, "/alias", 512);
        if let Some(description) = body.get("description") {
            if description.as_str().is_none_or(|d| d.chars().count() > 15_000) {
                problems.push("description: not a string of at most 15000".into());
            }
        }
        let priority = body["priority"].as_str().unwrap_or_default();
        if !["P1", "P2", "P3", "P4", "P5"].contains(&priority) {
            problems.push(format!("priority {priority:?}"));
        }
        for responder in body["responders"].as_array().into_iter().flatten() {
            let kind = responder["type"].as_str().unwrap_or_default();
            let named = ["name", "id", "username"].iter().any(|k| responder[*k].is_string());
            if !["team", "user", "escalation", "schedule"].contains(&kind) || !named {
                problems.push(format!("responder {responder}"));
            }
        }
        if !body["tags"].as_array().is_some_and(|t| t.iter().all(Value::is_string)) {
            problems.push(format!("tags {}", body["tags"]));
        }
        if !body["details"].as_object().is_some_and(|d| d.values().all(Value::is_string)) {
            problems.push(format!("details {}", body["details"]));
        }
    } else if !(path.starts_with("/opsgenie/v2/alerts/") && path.ends_with("/close") && query == "identifierType=alias")
    {
        problems.push(format!("no such endpoint: {path}?{query}"));
    }
    if !problems.is_empty() {
        let answer = json!({"message": problems.join("; "), "took": 0.001, "requestId": uuid::Uuid::new_v4()});
        return (problems, (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(answer)).into_response());
    }
    let answer = json!({"result": "Request will be processed", "took": 0.002, "requestId": uuid::Uuid::new_v4()});
    (problems, (StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

// ---------------------------------------------------------------- jira

/// Jira REST API v2: Basic `email:api_token` (Cloud) or `Bearer` personal
/// access token (Data Center); create an issue (`POST /rest/api/2/issue`:
/// `fields.project.key`, `fields.issuetype.name`, a one-line `summary` of
/// at most 255, string `description`, `labels` without spaces) → 201
/// `{id, key, self}`; comment on one that exists (`POST
/// .../issue/{key}/comment`, a `body`) → 201; list its transitions (`GET
/// .../transitions`) and take one listed (`POST` `{"transition":{"id"}}`)
/// → 204; read a project (`GET .../project/{key}`).
fn jira(
    state: &ServiceState,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &Value,
) -> (Vec<String>, Response) {
    let mut problems = Vec::new();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != JIRA_CLOUD_AUTH && auth != format!("Bearer {JIRA_PAT}") {
        let answer = json!({"errorMessages": ["You are not authenticated."], "errors": {}});
        return (
            vec![format!("authorization {auth:?}")],
            (StatusCode::UNAUTHORIZED, axum::Json(answer)).into_response(),
        );
    }
    let rest = path.strip_prefix("/jira/rest/api/2/").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let issues = state.jira_issues.load(Ordering::SeqCst);
    let exists = |key: &str| {
        key.strip_prefix("OPS-").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n >= 1 && n <= issues)
    };
    let transitions = json!({"transitions": [{"id": "11", "name": "To Do"}, {"id": "31", "name": "Done"}]});
    let answer = match (method.as_str(), parts.as_slice()) {
        ("POST", ["issue"]) => {
            json_content(headers, &mut problems);
            string_field(&mut problems, body, "/fields/project/key", 255);
            string_field(&mut problems, body, "/fields/issuetype/name", 255);
            let summary = string_field(&mut problems, body, "/fields/summary", 255);
            if summary.contains('\n') {
                problems.push("summary: must be one line".into());
            }
            string_field(&mut problems, body, "/fields/description", 32_767);
            let labels = body["fields"]["labels"].as_array().cloned().unwrap_or_default();
            if labels.iter().any(|l| l.as_str().is_none_or(|l| l.is_empty() || l.contains(' '))) {
                problems.push(format!("labels {labels:?}"));
            }
            if problems.is_empty() {
                let n = state.jira_issues.fetch_add(1, Ordering::SeqCst) + 1;
                let answer = json!({"id": format!("{}", 10_000 + n), "key": format!("OPS-{n}"), "self": format!("http://jira/rest/api/2/issue/{}", 10_000 + n)});
                (StatusCode::CREATED, axum::Json(answer)).into_response()
            } else {
                StatusCode::BAD_REQUEST.into_response()
            }
        }
        ("POST", ["issue", key, "comment"]) => {
            json_content(headers, &mut problems);
            string_field(&mut problems, body, "/body", 32_767);
            if !exists(key) {
                problems.push(format!("comment on {key}, which does not exist"));
            }
            (StatusCode::CREATED, axum::Json(json!({"id": "1", "body": body["body"]}))).into_response()
        }
        ("GET", ["issue", key, "transitions"]) if exists(key) => axum::Json(transitions).into_response(),
        ("POST", ["issue", key, "transitions"]) => {
            json_content(headers, &mut problems);
            let id = body["transition"]["id"].as_str().unwrap_or_default();
            if !exists(key) || !["11", "31"].contains(&id) {
                problems.push(format!("transition {id:?} of {key}"));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("GET", ["project", "OPS"]) => {
            axum::Json(json!({"id": "10000", "key": "OPS", "name": "Operations"})).into_response()
        }
        _ => {
            problems.push(format!("no such endpoint: {method} {path}"));
            StatusCode::NOT_FOUND.into_response()
        }
    };
    if problems.is_empty() {
        (problems, answer)
    } else {
        let answer = json!({"errorMessages": problems.clone(), "errors": {}});
        (problems, (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response())
    }
}

// ---------------------------------------------------------------- teams

/// A Teams webhook message: `type` message, `attachments[0].contentType`
/// `application/vnd.microsoft.card.adaptive`, its `content` an AdaptiveCard
/// with a `version`, a `body` of typed elements and `Action.OpenUrl`
/// actions with a title and a URL. Answers 200 `1`, as incoming webhooks do.
fn teams(headers: &HeaderMap, body: &Value) -> (Vec<String>, Response) {
    let mut problems = Vec::new();
    json_content(headers, &mut problems);
    if body["type"] != "message" {
        problems.push(format!("type {}", body["type"]));
    }
    let attachment = &body["attachments"][0];
    if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
        problems.push(format!("contentType {}", attachment["contentType"]));
    }
    let card = &attachment["content"];
    if card["type"] != "AdaptiveCard" || !card["version"].is_string() {
        problems.push(format!("card type {} version {}", card["type"], card["version"]));
    }
    let elements = card["body"].as_array().cloned().unwrap_or_default();
    if elements.is_empty() || elements.iter().any(|e| !e["type"].is_string()) {
        problems.push(format!("body {}", card["body"]));
    }
    let actions = card["actions"].as_array().cloned().unwrap_or_default();
    if actions.iter().any(|a| a["type"] != "Action.OpenUrl" || !a["url"].is_string() || !a["title"].is_string()) {
        problems.push(format!("actions {}", card["actions"]));
    }
    if problems.is_empty() {
        (problems, (StatusCode::OK, "1").into_response())
    } else {
        (problems, (StatusCode::BAD_REQUEST, "Bad payload received by generic incoming webhook.").into_response())
    }
}

// ---------------------------------------------------------------- setup

fn pagerduty_channel(url: &str) -> ChannelSettings {
    ChannelSettings::PagerDuty(PagerDutyChannelSettings {
        routing_key: Secret::from(ROUTING_KEY.to_string()),
        url: format!("{url}/pagerduty/v2/enqueue"),
        send_resolved: true,
        timeout: "5s".into(),
    })
}

fn opsgenie_channel(url: &str) -> ChannelSettings {
    ChannelSettings::Opsgenie(OpsgenieChannelSettings {
        api_key: Secret::from(OPSGENIE_KEY.to_string()),
        region: Region::Eu,
        api_url: Some(format!("{url}/opsgenie")),
        responders: vec![Responder {
            kind: "team".into(),
            name: Some("mobile-oncall".into()),
            id: None,
            username: None,
        }],
        tags: vec!["mobile".into()],
        send_resolved: true,
        timeout: "5s".into(),
    })
}

/// Jira at `url/jira`, authenticated as Jira Cloud does (`cloud`) or as
/// Data Center does; resolution moves the issue through "Done".
fn jira_channel(url: &str, cloud: bool) -> ChannelSettings {
    let mut fields = serde_json::Map::new();
    fields.insert("priority".into(), json!({"name": "High"}));
    ChannelSettings::Jira(JiraChannelSettings {
        base_url: format!("{url}/jira"),
        email: cloud.then(|| "bot@example.com".to_string()),
        api_token: cloud.then(|| Secret::from("jira-api-token".to_string())),
        personal_access_token: (!cloud).then(|| Secret::from(JIRA_PAT.to_string())),
        project_key: "OPS".into(),
        issue_type: "Bug".into(),
        labels: vec!["mobile".into()],
        fields,
        resolve_transition: Some("done".into()),
        send_resolved: true,
        timeout: "5s".into(),
    })
}

fn teams_channel(url: &str) -> ChannelSettings {
    ChannelSettings::Teams(TeamsChannelSettings {
        url: Secret::from(format!("{url}/teams/webhook")),
        send_resolved: true,
        timeout: "5s".into(),
    })
}

/// A world whose rule notifies only `channels` (configured by `add`),
/// repeating every 2 s while firing, with the evaluator not yet running.
async fn tools_world(
    backend: Backend,
    name: &str,
    channels: &[&str],
    add: impl Fn(&str) -> Vec<(&'static str, ChannelSettings)>,
) -> Option<(World, Services)> {
    let mut w = world(backend, name, 20, false).await?;
    let (url, services) = services().await;
    let mut rule = rule(channels, 20);
    rule.repeat_interval = Some(time::Duration::seconds(2));
    w.settings.alerts.rules = vec![rule];
    for (name, channel) in add(&url) {
        w.settings.alerts.channels.insert(name.to_string(), channel);
    }
    Some((w, services))
}

/// The notices recorded for `channel`, by kind, once none is pending.
async fn settled(store: &SharedStore, channel: &str) -> BTreeMap<String, usize> {
    let started = Instant::now();
    loop {
        let records: Vec<NotificationRecord> =
            store.notifications(None, 1000).await.unwrap().into_iter().filter(|n| n.channel == channel).collect();
        if records.iter().all(|n| n.status != "pending") || started.elapsed() > Duration::from_secs(10) {
            assert!(records.iter().all(|n| n.status == "delivered"), "{records:#?}");
            let mut kinds = BTreeMap::new();
            for record in records {
                *kinds.entry(record.kind).or_insert(0) += 1;
            }
            return kinds;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Fires release 2.3.0, waits for `repeats` repeat notices to `channel`,
/// then recovers it and waits for the resolution; returns the recorded
/// notices by kind.
async fn fire_repeat_resolve(w: &World, channel: &str, repeats: usize) -> BTreeMap<String, usize> {
    let evaluator = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    w.spike().await;
    let count = |kind: &'static str| {
        let store = w.store.clone();
        let channel = channel.to_string();
        async move {
            let all = store.notifications(None, 1000).await.unwrap();
            all.iter().filter(|n| n.channel == channel && n.kind == kind && n.status == "delivered").count()
        }
    };
    let started = Instant::now();
    while count("repeat").await < repeats {
        assert!(started.elapsed() < Duration::from_secs(30), "no {repeats} repeats to {channel}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.ingest(release_events("2.3.0", 0, 970)).await;
    while count("resolved").await < 1 {
        assert!(started.elapsed() < Duration::from_secs(45), "no resolution to {channel}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    evaluator.abort();
    let _ = evaluator.await;
    settled(&w.store, channel).await
}

// ---------------------------------------------------------------- pagerduty

crate::on_both_stores!(
    pagerduty_keeps_one_incident_per_alert_triggered_again_on_repeat_and_resolved_by_its_key,
    jira_opens_one_issue_per_alert_comments_on_repeats_and_resolves_with_a_comment_and_the_transition,
    a_restart_of_the_alerts_role_while_firing_opens_no_second_incident_alert_or_issue,
);

async fn pagerduty_keeps_one_incident_per_alert_triggered_again_on_repeat_and_resolved_by_its_key(backend: Backend) {
    let add = |url: &str| vec![("pd", pagerduty_channel(url))];
    let Some((w, services)) = tools_world(backend, "incident_pagerduty", &["pd"], add).await else {
        return;
    };
    let kinds = fire_repeat_resolve(&w, "pd", 1).await;
    services.assert_valid();
    let fingerprint = w.instance("app_version=2.3.0").await.fingerprint;
    let (triggers, resolves) = (services.pagerduty("trigger"), services.pagerduty("resolve"));
    assert_eq!(kinds["firing"], 1, "{kinds:?}");
    assert_eq!(triggers.len(), kinds["firing"] + kinds["repeat"], "one trigger per firing or repeat notice");
    assert!(triggers.iter().all(|t| t["dedup_key"] == fingerprint.as_str()), "one incident: {triggers:#?}");
    assert_eq!(resolves.len(), 1);
    assert_eq!(resolves[0]["dedup_key"], fingerprint.as_str());

    let payload = &triggers[0]["payload"];
    assert_eq!(payload["severity"], "critical", "the rule's severity is page");
    assert_eq!(payload["summary"], "[FIRING] success rate 50% < 95% — release 2.3.0");
    let details = &payload["custom_details"];
    assert_eq!((details["value"].as_str(), details["threshold"].as_str()), (Some("50%"), Some("< 95%")));
    assert_eq!(details["segment"], json!({"dimension": "app_version", "value": "2.3.0"}));
    assert!(details["window"]["from"].is_string() && details["window"]["to"].is_string(), "{details}");
    let link = triggers[0]["links"][0]["href"].as_str().unwrap();
    assert!(link.starts_with("https://health.example.com/?project=default&from="), "{link}");
    assert!(link.ends_with("&app_version=2.3.0"), "{link}");
}

#[tokio::test]
async fn a_pagerduty_test_is_an_info_event_with_its_own_key_resolved_right_after() {
    let add = |url: &str| vec![("pd", pagerduty_channel(url))];
    let Some((w, services)) = tools_world(Backend::Sqlite, "incident_pagerduty_test", &["pd"], add).await else {
        return;
    };
    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "pd").await.unwrap();
    assert_eq!((record.status.as_str(), record.attempts), ("delivered", 1), "{record:?}");
    services.assert_valid();
    let calls = services.calls("/pagerduty/");
    let actions: Vec<&str> = calls.iter().map(|c| c.body["event_action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    assert_eq!(calls[0].body["payload"]["severity"], "info", "a test cannot page");
    let key = calls[0].body["dedup_key"].as_str().unwrap();
    assert_eq!(key, format!("synchealth-test-{}", record.id), "never an alert's key");
    assert_eq!(calls[1].body["dedup_key"], key);
}

#[tokio::test]
async fn a_429_from_pagerduty_is_retried_no_sooner_than_its_retry_after() {
    let add = |url: &str| vec![("pd", pagerduty_channel(url))];
    let Some((w, services)) = tools_world(Backend::Sqlite, "incident_pagerduty_429", &["pd"], add).await else {
        return;
    };
    // The world retries after 200 ms at first: only Retry-After makes it 2 s.
    services.throttle_next(1);
    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "pd").await.unwrap();
    assert_eq!((record.status.as_str(), record.attempts), ("delivered", 2), "{record:?}");
    services.assert_valid();
    let calls = services.calls("/pagerduty/");
    assert_eq!(calls.len(), 3, "the throttled trigger, then trigger and resolve: {calls:#?}");
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}, before Retry-After: 2");
    assert!(calls.iter().all(|c| c.method == Method::POST));
}

// ---------------------------------------------------------------- opsgenie

#[tokio::test]
async fn opsgenie_keeps_one_alert_per_alias_and_closes_it_on_resolution() {
    let add = |url: &str| vec![("og", opsgenie_channel(url))];
    let Some((w, services)) = tools_world(Backend::Sqlite, "incident_opsgenie", &["og"], add).await else {
        return;
    };
    let kinds = fire_repeat_resolve(&w, "og", 1).await;
    services.assert_valid();
    let fingerprint = w.instance("app_version=2.3.0").await.fingerprint;
    let creates = services.calls("/opsgenie/v2/alerts");
    let creates: Vec<&Call> = creates.iter().filter(|c| c.path == "/opsgenie/v2/alerts").collect();
    assert_eq!(kinds["firing"], 1, "{kinds:?}");
    assert_eq!(creates.len(), kinds["firing"] + kinds["repeat"], "one create per firing or repeat notice");
    assert!(creates.iter().all(|c| c.body["alias"] == fingerprint.as_str()), "one alert: {creates:#?}");
    let closes = services.calls(&format!("/opsgenie/v2/alerts/{fingerprint}/close"));
    assert_eq!(closes.len(), 1, "closed once by its alias");
    let body = &creates[0].body;
    assert_eq!(body["priority"], "P1", "the rule's severity is page");
    assert_eq!(body["responders"], json!([{"type": "team", "name": "mobile-oncall"}]));
    assert_eq!(body["tags"], json!(["mobile", "severity:page"]));
    assert_eq!(body["message"], "[FIRING] success rate 50% < 95% — release 2.3.0");
}

#[tokio::test]
async fn an_opsgenie_test_is_a_p5_alert_with_its_own_alias_closed_right_after() {
    let add = |url: &str| vec![("og", opsgenie_channel(url))];
    let Some((w, services)) = tools_world(Backend::Sqlite, "incident_opsgenie_test", &["og"], add).await else {
        return;
    };
    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "og").await.unwrap();
    assert_eq!((record.status.as_str(), record.attempts), ("delivered", 1), "{record:?}");
    services.assert_valid();
    let calls = services.calls("/opsgenie/");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls.iter().all(|c| c.auth == format!("GenieKey {OPSGENIE_KEY}")), "{calls:#?}");
    let alias = format!("synchealth-test-{}", record.id);
    assert_eq!(
        (calls[0].body["priority"].as_str(), calls[0].body["alias"].as_str()),
        (Some("P5"), Some(alias.as_str()))
    );
    assert_eq!(calls[1].path, format!("/opsgenie/v2/alerts/{alias}/close"));
}

// ---------------------------------------------------------------- teams

#[tokio::test]
async fn teams_gets_an_adaptive_card_with_a_hostile_app_version_shown_as_text_not_a_link() {
    let add = |url: &str| vec![("teams", teams_channel(url))];
    let Some((w, services)) = tools_world(Backend::Sqlite, "incident_teams", &["teams"], add).await else {
        return;
    };
    let evaluator = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    let hostile = "[Open dashboard](https://evil.example/login) **now**";
    w.ingest((0..60).map(|i| sync_event(&format!("dev-hostile-{}", i % 25), hostile, i >= 30)).collect()).await;
    let card = wait_for("the Teams card", Duration::from_secs(15), || services.calls("/teams/").first().cloned()).await;
    evaluator.abort();
    services.assert_valid();
    let content = &card.body["attachments"][0]["content"];
    let text = content["body"].to_string();
    assert!(!text.contains("[Open dashboard](") && !text.contains("**now**"), "unescaped: {text}");
    assert!(text.contains(r"\\[Open dashboard\\]\\(https\\:\\/\\/evil\\.example\\/login\\)"), "{text}");
    let action = &content["actions"][0];
    assert_eq!(action["type"], "Action.OpenUrl");
    let url = action["url"].as_str().unwrap();
    assert!(url.starts_with("https://health.example.com/?project=default&from="), "{url}");
    assert!(url.contains("app_version=%5BOpen%20dashboard%5D"), "the value percent-encoded: {url}");

    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "teams").await.unwrap();
    assert_eq!(record.status, "delivered", "{record:?}");
    let test_card = services.calls("/teams/").pop().unwrap();
    assert!(test_card.body.to_string().contains(r"\\[TEST\\]"), "{}", test_card.body);
}

// ---------------------------------------------------------------- jira

async fn jira_opens_one_issue_per_alert_comments_on_repeats_and_resolves_with_a_comment_and_the_transition(
    backend: Backend,
) {
    let add = |url: &str| vec![("jira", jira_channel(url, true))];
    let Some((w, services)) = tools_world(backend, "incident_jira", &["jira"], add).await else {
        return;
    };
    let kinds = fire_repeat_resolve(&w, "jira", 2).await;
    services.assert_valid();
    assert_eq!(kinds["firing"], 1, "{kinds:?}");
    let creates = services.jira("POST", "/jira/rest/api/2/issue");
    assert_eq!(creates.len(), 1, "one issue per alert instance: {creates:#?}");
    let comments = services.jira("POST", "/jira/rest/api/2/issue/OPS-1/comment");
    assert_eq!(comments.len(), kinds["repeat"] + 1, "a comment per repeat, and one on resolution");
    assert!(comments.last().unwrap().body["body"].as_str().unwrap().contains("RESOLVED"), "{comments:#?}");
    assert_eq!(services.jira("GET", "/jira/rest/api/2/issue/OPS-1/transitions").len(), 1);
    let transitions = services.jira("POST", "/jira/rest/api/2/issue/OPS-1/transitions");
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0].body, json!({"transition": {"id": "31"}}), "the one named Done");

    let fields = &creates[0].body["fields"];
    assert_eq!((fields["project"]["key"].as_str(), fields["issuetype"]["name"].as_str()), (Some("OPS"), Some("Bug")));
    assert_eq!(fields["summary"], "[FIRING] success rate 50% < 95% — release 2.3.0");
    let fingerprint = w.instance("app_version=2.3.0").await.fingerprint;
    assert_eq!(fields["labels"], json!(["mobile", "synchealth", format!("synchealth-{fingerprint}")]));
    assert_eq!(fields["priority"], json!({"name": "High"}), "configured fields pass through");
    let description = fields["description"].as_str().unwrap();
    assert!(description.contains("||Value|50%|") && description.contains("||Threshold|< 95%|"), "{description}");
    assert!(description.contains("|https://health.example.com/?project=default&from="), "{description}");
}

#[tokio::test]
async fn a_jira_test_reads_the_project_with_a_data_center_token_and_creates_nothing() {
    let add = |url: &str| vec![("jira", jira_channel(url, false))];
    let Some((w, services)) = tools_world(Backend::Sqlite, "incident_jira_test", &["jira"], add).await else {
        return;
    };
    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "jira").await.unwrap();
    assert_eq!((record.status.as_str(), record.attempts), ("delivered", 1), "{record:?}");
    services.assert_valid();
    let calls = services.calls("/jira/");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("GET", "/jira/rest/api/2/project/OPS"));
    assert_eq!(calls[0].auth, format!("Bearer {JIRA_PAT}"));

    // A wrong token is a permanent failure with Jira's words in the record.
    let mut settings = w.settings.alerts.clone();
    let ChannelSettings::Jira(jira) = settings.channels.get_mut("jira").unwrap() else { unreachable!() };
    jira.personal_access_token = Some(Secret::from("wrong".to_string()));
    let record = alerts_cmd::test(w.store.clone(), &settings, "jira").await.unwrap();
    assert_eq!((record.status.as_str(), record.attempts), ("failed", 1), "{record:?}");
    let error = record.last_error.unwrap();
    assert!(error.contains("401") && error.contains("You are not authenticated."), "{error}");
    assert!(!error.contains("wrong"), "the token is not in the error: {error}");
}

// ---------------------------------------------------------------- restart

async fn a_restart_of_the_alerts_role_while_firing_opens_no_second_incident_alert_or_issue(backend: Backend) {
    let add = |url: &str| {
        vec![("pd", pagerduty_channel(url)), ("og", opsgenie_channel(url)), ("jira", jira_channel(url, true))]
    };
    let channels = ["pd", "og", "jira"];
    let Some((w, services)) = tools_world(backend, "incident_restart", &channels, add).await else {
        return;
    };
    let delivered = |kind: &'static str| {
        let store = w.store.clone();
        async move {
            let all = store.notifications(None, 1000).await.unwrap();
            all.iter().filter(|n| n.kind == kind && n.status == "delivered").count()
        }
    };
    let first = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    w.spike().await;
    let started = Instant::now();
    while delivered("firing").await < channels.len() {
        assert!(started.elapsed() < Duration::from_secs(20), "the firing notices were not delivered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    first.abort();
    let _ = first.await;
    let repeats_before = delivered("repeat").await;
    // A new process (nothing in memory), which takes over once the old lease
    // (3 s) runs out, reads the firing state and the issue key from the store.
    let second = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    let started = Instant::now();
    while delivered("repeat").await < repeats_before + channels.len() {
        assert!(started.elapsed() < Duration::from_secs(30), "the new process sent no repeat");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    w.ingest(release_events("2.3.0", 0, 970)).await;
    while delivered("resolved").await < channels.len() {
        assert!(started.elapsed() < Duration::from_secs(45), "no resolutions");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    second.abort();
    let _ = second.await;
    services.assert_valid();
    let fingerprint = w.instance("app_version=2.3.0").await.fingerprint;
    assert_eq!(services.jira("POST", "/jira/rest/api/2/issue").len(), 1, "one issue across the restart");
    assert!(!services.jira("POST", "/jira/rest/api/2/issue/OPS-1/comment").is_empty(), "the new process commented");
    assert_eq!(services.jira("POST", "/jira/rest/api/2/issue/OPS-1/transitions").len(), 1);
    let triggers = services.pagerduty("trigger");
    assert!(triggers.len() >= 2 && triggers.iter().all(|t| t["dedup_key"] == fingerprint.as_str()), "{triggers:#?}");
    let creates = services.calls("/opsgenie/v2/alerts");
    assert!(creates.iter().all(|c| c.path.ends_with("/close") || c.body["alias"] == fingerprint.as_str()));
    assert_eq!(services.pagerduty("resolve").len(), 1);
    assert_eq!(services.calls(&format!("/opsgenie/v2/alerts/{fingerprint}/close")).len(), 1);
}
