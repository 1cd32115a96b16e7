//! The dashboard pages over HTTP, on both stores: login, sessions, CSRF,
//! project grants, every page's rendered numbers against values computed
//! here from the fixture, and bad parameters (a clear 400, never a 500).

use std::sync::Arc;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;
use synchealth::Application;
use synchealth_alerts::{Comparison, Rule, Severity};
use synchealth_store::metrics::Metric;
use synchealth_store::{AlertInstanceRecord, NotificationRecord, SharedStore, User};

use crate::helpers::{batch, event, serve, spawn_app, spawn_app_with, Backend, TestApp, ADMIN_PASSWORD};
use crate::on_both_stores;

/// A client that does not follow redirects, to see them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// The value of a hidden input named `name` in a page.
pub fn hidden_input(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in {body}")) + marker.len();
    body[start..].split('"').next().unwrap().to_string()
}

/// `name=value` of a `Set-Cookie` header for `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Logs in through the form; returns the session cookie (`sh_session=...`).
pub async fn login(address: &str, username: &str, password: &str) -> String {
    try_login(address, username, password).await.unwrap_or_else(|status| panic!("login failed with {status}"))
}

/// Fetches the login form and posts it as `admin` with `password` and the
/// given `next`, without following the redirect.
async fn post_login_form(client: &reqwest::Client, address: &str, password: &str, next: &str) -> reqwest::Response {
    let form = client.get(format!("{address}/login")).send().await.unwrap();
    let csrf_cookie = set_cookie(&form, "sh_login_csrf").unwrap();
    let csrf = hidden_input(&form.text().await.unwrap(), "csrf");
    client
        .post(format!("{address}/login"))
        .header(COOKIE, csrf_cookie.split(';').next().unwrap())
        .form(&[("username", "admin"), ("password", password), ("csrf", &csrf), ("next", next)])
        .send()
        .await
        .unwrap()
}

async fn try_login(address: &str, username: &str, password: &str) -> Result<String, u16> {
    let client = no_redirects();
    let form = client.get(format!("{address}/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let csrf_cookie = set_cookie(&form, "sh_login_csrf").expect("login csrf cookie");
    let body = form.text().await.unwrap();
    let csrf = hidden_input(&body, "csrf");
    let response = client
        .post(format!("{address}/login"))
        .header(COOKIE, csrf_cookie.split(';').next().unwrap())
        .form(&[("username", username), ("password", password), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    if response.status() != 303 {
        return Err(response.status().as_u16());
    }
    let cookie = set_cookie(&response, "sh_session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    Ok(cookie.split(';').next().unwrap().to_string())
}

/// A page as a logged-in user: status and body.
pub async fn page(address: &str, cookie: &str, path: &str) -> (u16, String) {
    let response = no_redirects().get(format!("{address}{path}")).header(COOKIE, cookie).send().await.unwrap();
    if response.status() != 303 {
        // Every page, error pages included: no script, nothing from elsewhere, no framing.
        let csp = response.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert!(!body.contains("<script"), "{path}: pages work without JavaScript and carry none");
    (status, body)
}

/// The text of the element with class `class` in the tile named `name`.
fn after(body: &str, name: &str, class: &str) -> String {
    let label = format!("<div class=\"name\">{name}</div>");
    let at = body.find(&label).unwrap_or_else(|| panic!("{label:?} not in page"));
    let marker = format!("class=\"{class}\">");
    let start = body[at..].find(&marker).unwrap() + at + marker.len();
    body[start..].split('<').next().unwrap().trim().to_string()
}

fn tile_class(body: &str, name: &str) -> String {
    let at = body.find(&format!("<div class=\"name\">{name}</div>")).unwrap();
    let open = body[..at].rfind("<div class=\"tile").unwrap();
    body[open..at].split('"').nth(1).unwrap().to_string()
}

fn pct(part: f64, whole: f64) -> String {
    format!("{:.1} %", part / whole * 100.0)
}

/// The fixture: `(device, minutes ago, success, duration ms, os, app version)`.
const CURRENT: [(&str, i64, bool, u64, &str, &str); 5] = [
    ("a1", 5, true, 100, "android", "2.3.0"),
    ("a2", 10, true, 200, "android", "2.3.0"),
    ("a3", 15, false, 500, "android", "2.3.0"),
    ("i1", 20, true, 300, "ios", "2.2.0"),
    ("i2", 25, false, 400, "ios", "2.2.0"),
];
/// In the previous hour: all successful.
const PREVIOUS: [(&str, i64, bool, u64, &str, &str); 2] =
    [("a1", 70, true, 100, "android", "2.3.0"), ("i1", 80, true, 100, "ios", "2.2.0")];

async fn seed(app: &TestApp) {
    let events = CURRENT
        .iter()
        .chain(PREVIOUS.iter())
        .map(|(device, ago, ok, ms, os, version)| {
            let mut e = event(device, *ago, *ok, *ms);
            e["os"] = (*os).into();
            e["app_version"] = (*version).into();
            e
        })
        .collect();
    let response = app.post_batch(&batch(events)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 7, "{body}");
}

/// A paging rule that judges even this small fixture.
fn strict_rule() -> Rule {
    let mut rule = Rule::defaults().into_iter().find(|r| r.metric == Metric::SuccessRate).unwrap();
    rule.name = "success-strict".into();
    rule.min_events = 1;
    rule.comparison = Comparison::Below;
    rule.threshold = 0.95;
    rule.severity = Severity::Page;
    rule
}

async fn every_page_shows_the_numbers_of_the_fixture(backend: Backend) {
    let Some((app, _store)) = spawn_app_with(backend, "pages_numbers", |s| s.alerts.rules = vec![strict_rule()]).await
    else {
        return;
    };
    seed(&app).await;
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;

    // Overview: tiles computed from the fixture, the change against the
    // previous hour, the colour from the rule.
    let (status, body) = page(&app.address, &cookie, "/?range=1h").await;
    assert_eq!(status, 200, "{body}");
    let successes = CURRENT.iter().filter(|e| e.2).count() as f64;
    let total = CURRENT.len() as f64;
    assert_eq!(after(&body, "Success rate", "value"), pct(successes, total));
    let change = (successes / total - 1.0) * 100.0;
    assert_eq!(after(&body, "Success rate", "change worse"), format!("{change:+.1} pp vs previous"));
    assert_eq!(tile_class(&body, "Success rate"), "tile red");
    assert!(body.contains("success-strict &lt; 95.0 %") || body.contains("success-strict < 95.0 %"), "rule line");
    assert_eq!(after(&body, "Events", "value"), CURRENT.len().to_string());
    let devices: std::collections::BTreeSet<&str> = CURRENT.iter().map(|e| e.0).collect();
    assert_eq!(after(&body, "Devices", "value"), devices.len().to_string());
    let conflicted = CURRENT.iter().filter(|e| !e.2).count() as f64; // the helper gives failures 2 conflicts
    assert_eq!(after(&body, "Conflict rate", "value"), pct(conflicted, total));
    assert!(body.contains("<svg class=\"chart\""), "charts are inline SVG");
    assert!(body.contains("times in UTC, offset +00:00"));
    assert!(!body.contains("No events in this window"));

    // A filter narrows every number.
    let (_, android) = page(&app.address, &cookie, "/?range=1h&os=android").await;
    let android_events: Vec<_> = CURRENT.iter().filter(|e| e.4 == "android").collect();
    let android_ok = android_events.iter().filter(|e| e.2).count() as f64;
    assert_eq!(after(&android, "Success rate", "value"), pct(android_ok, android_events.len() as f64));
    assert!(android.contains("os = <b>android</b>"));

    // Breakdown by OS, worst first by default, each segment a filter link.
    let (status, body) = page(&app.address, &cookie, "/breakdown?by=os&range=1h").await;
    assert_eq!(status, 200);
    let ios: Vec<_> = CURRENT.iter().filter(|e| e.4 == "ios").collect();
    let ios_rate = pct(ios.iter().filter(|e| e.2).count() as f64, ios.len() as f64);
    let android_rate = pct(android_ok, android_events.len() as f64);
    let ios_at = body.find(">ios</a>").unwrap();
    let android_at = body.find(">android</a>").unwrap();
    assert!(ios_at < android_at, "ios (50%) sorts before android (67%)");
    assert!(body[ios_at..].contains(&ios_rate) && body[android_at..].contains(&android_rate));
    assert!(body.contains("href=\"/?range=1h&#38;os=ios\""), "segment link filters the dashboard");
    // The page's CSV link, followed with the browser's session.
    let link = body
        .split("href=\"")
        .find(|h| h.contains("format=csv"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&");
    let csv = no_redirects().get(format!("{}{link}", app.address)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(csv.status(), 200, "{link}");
    let csv = csv.text().await.unwrap();
    assert!(csv.lines().any(|l| l.starts_with("ios,")) && csv.lines().any(|l| l.starts_with("android,")), "{csv}");
    let (_, sorted) = page(&app.address, &cookie, "/breakdown?by=os&range=1h&sort=success_rate&dir=desc").await;
    assert!(sorted.find(">android</a>").unwrap() < sorted.find(">ios</a>").unwrap());

    // Releases: newest (2.3.0) against the one before.
    let (status, body) = page(&app.address, &cookie, "/releases?range=1h").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("2.2.0 (2 events)") && body.contains("2.3.0 (3 events)"), "{body}");
    assert!(!body.contains("Regression:"), "five events are no evidence of a regression");
    assert!(body.contains("events per version needed"));

    // Devices: a3 failed with 1500 queued (the helper's failing event).
    let (status, body) = page(&app.address, &cookie, "/devices?range=1h").await;
    assert_eq!(status, 200);
    assert!(body.contains(">a3</a>") && body.contains("1,500"), "{body}");
    let (status, body) = page(&app.address, &cookie, "/devices/a3").await;
    assert_eq!(status, 200);
    assert!(body.contains("timeout") && body.contains("500 ms") && body.contains("failed"));

    // Alerts: the configured rule, its state not yet evaluated or ok.
    let (status, body) = page(&app.address, &cookie, "/alerts").await;
    assert_eq!(status, 200);
    assert!(body.contains("success-strict"));
}

async fn an_empty_project_says_what_to_do(backend: Backend) {
    let Some(app) = spawn_app(backend, "pages_empty").await else { return };
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;
    let (status, body) = page(&app.address, &cookie, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("No events in this window"));
    assert!(body.contains(&format!("{}/v1/events", app.address)), "names the collector URL");
    assert!(body.contains("no data in this window"));
    assert_eq!(after(&body, "Success rate", "value"), "—");
    assert!(!body.contains("http-equiv=\"refresh\""));

    // Auto-refresh and a custom range, as the forms send them (UTC, no offset).
    let (status, body) =
        page(&app.address, &cookie, "/?refresh=30&from=2026-11-20T08:00&to=2026-11-20T09:30&os=ios").await;
    assert_eq!(status, 200);
    assert!(body.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
    assert!(body.contains("2026-11-20 08:00:00 → 2026-11-20 09:30:00 (times in UTC, offset +00:00)"), "{body}");
    assert!(body.contains("auto-refresh every 30 s"));
}

async fn silences_are_added_and_removed_only_with_the_csrf_token(backend: Backend) {
    let Some((app, store)) = spawn_app_with(backend, "pages_silences", |_| {}).await else { return };
    let rule = Rule::defaults()[0].name.clone();
    // A firing instance of the rule on one segment, and its notification,
    // as the alerts role stores them.
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let project = synchealth_schema::ProjectName::parse("default").unwrap();
    store
        .put_alert_instance(&AlertInstanceRecord {
            fingerprint: "pages-test-android".into(),
            rule: rule.clone(),
            project: project.clone(),
            segment: Some("os=android".into()),
            state: "firing".into(),
            value: Some(0.81),
            threshold: 0.95,
            since_ms: now_ms - 600_000,
            last_evaluated_ms: now_ms,
            last_notified_ms: Some(now_ms - 300_000),
            clear_since_ms: None,
            verdict: "holds".into(),
            events: 420,
            severity: "page".into(),
            silenced_until_ms: None,
        })
        .await
        .unwrap();
    store
        .put_notification(&NotificationRecord {
            id: "00000000-0000-4000-8000-000000000001".into(),
            fingerprint: "pages-test-android".into(),
            rule: rule.clone(),
            project,
            channel: "email".into(),
            kind: "firing".into(),
            status: "failed".into(),
            attempts: 3,
            last_error: Some("connection refused".into()),
            created_at_ms: now_ms - 300_000,
            updated_at_ms: now_ms - 200_000,
            summary: "success rate 81.0 % on os=android".into(),
        })
        .await
        .unwrap();
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;
    let (_, body) = page(&app.address, &cookie, "/alerts").await;
    assert!(body.contains("os=android: <span class=\"state firing\">firing</span> 81.0 %"), "{body}");
    assert!(body.contains("connection refused") && body.contains("<span class=\"state failed\">failed</span>"));
    let csrf = hidden_input(&body, "csrf");
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let cookie = cookie.clone();
        let address = app.address.clone();
        async move {
            no_redirects().post(format!("{address}{path}")).header(COOKIE, cookie).form(&form).send().await.unwrap()
        }
    };
    let form = |token: &str| {
        vec![
            ("csrf", token.to_string()),
            ("project", "default".to_string()),
            ("rule", rule.clone()),
            ("segment", "os=android".to_string()),
            ("duration", "2h".to_string()),
            ("comment", "deploy <b>window</b>".to_string()),
        ]
    };
    let forged = post("/alerts/silences", form("not-the-token")).await;
    assert_eq!(forged.status(), 403);
    let missing = post("/alerts/silences", form("")).await;
    assert_eq!(missing.status(), 403);
    let (_, body) = page(&app.address, &cookie, "/alerts").await;
    assert!(body.contains("No silence in force"));

    let added = post("/alerts/silences", form(&csrf)).await;
    assert_eq!(added.status(), 303);
    let (_, body) = page(&app.address, &cookie, "/alerts").await;
    assert!(body.contains("os=android: <span class=\"state silenced\">silenced (firing)</span>"), "{body}");
    assert!(
        body.contains("deploy &#60;b&#62;window&#60;/b&#62;") || body.contains("deploy &lt;b&gt;window&lt;/b&gt;"),
        "user text is escaped: {body}"
    );
    let id = hidden_input(&body, "id");

    let forever: Vec<(&'static str, String)> = form(&csrf)
        .into_iter()
        .map(|(k, v)| if k == "duration" { (k, "forever".to_string()) } else { (k, v) })
        .collect();
    let bad_duration = post("/alerts/silences", forever).await;
    assert_eq!(bad_duration.status(), 400);

    let forged = post("/alerts/silences/remove", vec![("csrf", "x".into()), ("id", id.clone())]).await;
    assert_eq!(forged.status(), 403);
    let removed = post("/alerts/silences/remove", vec![("csrf", csrf.clone()), ("id", id)]).await;
    assert_eq!(removed.status(), 303);
    let (_, body) = page(&app.address, &cookie, "/alerts").await;
    assert!(body.contains("No silence in force"));
}

async fn bad_parameters_are_a_clear_400_never_a_500(backend: Backend) {
    let Some(app) = spawn_app(backend, "pages_bad_params").await else { return };
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;
    for (path, parameter) in [
        ("/?range=2w", "range"),
        ("/?from=yesterday", "from"),
        ("/?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("/?network=5g", "network"),
        ("/?refresh=often", "refresh"),
        ("/?project=Not%20Valid", "project"),
        ("/breakdown?by=country", "by"),
        ("/breakdown?sort=nope", "sort"),
        ("/breakdown?dir=sideways", "dir"),
        ("/devices?list=nope", "list"),
        ("/devices?limit=0", "limit"),
        ("/releases?b=9.9.9", "b"),
    ] {
        let (status, body) = page(&app.address, &cookie, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(&format!("<code>{parameter}</code>")), "{path} names {parameter}: {body}");
    }
    let (status, body) = page(&app.address, &cookie, "/no/such/page").await;
    assert_eq!(status, 404);
    assert!(body.contains("There is no page at /no/such/page"));
    let (status, _) = page(&app.address, &cookie, "/devices/never-seen").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn pages_redirect_to_login_and_the_api_answers_401_without_a_user() {
    let app = spawn_app(Backend::Sqlite, "pages_anonymous").await.unwrap();
    let client = no_redirects();
    for path in ["/", "/breakdown?by=os", "/releases", "/devices", "/devices/a1", "/alerts"] {
        let response = client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        let location = response.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(location.starts_with("/login?next="), "{path}: {location}");
    }
    let api = client.get(format!("{}/api/v1/summary", app.address)).send().await.unwrap();
    assert_eq!(api.status(), 401);
    let healthz = client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let login_page = client.get(format!("{}/login?next=/breakdown", app.address)).send().await.unwrap();
    assert_eq!(login_page.status(), 200);
    assert!(login_page.text().await.unwrap().contains("value=\"/breakdown\""));
    // A link opened from another site (a chat) gets one same-site reload
    // first, since a SameSite=Strict cookie is not sent on that navigation.
    let from_chat = client
        .get(format!("{}/breakdown?by=os", app.address))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(from_chat.status(), 200);
    assert!(from_chat.text().await.unwrap().contains("content=\"0;url=/breakdown?by=os\""));
    // A forged session cookie is no session.
    let (status, _) = page(&app.address, "sh_session=00ff", "/").await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn a_wrong_password_or_a_forged_login_form_opens_no_session() {
    let app = spawn_app(Backend::Sqlite, "pages_wrong_password").await.unwrap();
    assert_eq!(try_login(&app.address, "admin", "not-the-password").await, Err(401));
    assert_eq!(try_login(&app.address, "nobody", "whatever-it-is").await, Err(401));
    // A login form posted from elsewhere has no double-submit cookie.
    let response = no_redirects()
        .post(format!("{}/login", app.address))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD), ("csrf", "abc"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(set_cookie(&response, "sh_session").is_none());
    // After login, the next page is only ever local.
    let client = no_redirects();
    let response = post_login_form(&client, &app.address, ADMIN_PASSWORD, "//evil.example/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/");
}

async fn logout_ends_the_session_and_needs_the_csrf_token(backend: Backend) {
    let Some(app) = spawn_app(backend, "pages_logout").await else { return };
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;
    let (status, body) = page(&app.address, &cookie, "/").await;
    assert_eq!(status, 200);
    let csrf = hidden_input(&body, "csrf");
    let client = no_redirects();
    let api = client.get(format!("{}/api/v1/summary", app.address)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(api.status(), 200, "the API takes the session too");
    let forged = client
        .post(format!("{}/logout", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(page(&app.address, &cookie, "/").await.0, 200, "a forged logout changes nothing");
    let cross_origin = client
        .post(format!("{}/logout", app.address))
        .header(COOKIE, &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_origin.status(), 403);
    let out = client
        .post(format!("{}/logout", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(set_cookie(&out, "sh_session").unwrap().contains("Max-Age=0"));
    assert_eq!(page(&app.address, &cookie, "/").await.0, 303, "the old cookie opens nothing");
    let api = client.get(format!("{}/api/v1/summary", app.address)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(api.status(), 401);
}

async fn add_user(store: &SharedStore, name: &str, password: &str, projects: &[&str]) {
    let user = User {
        username: name.into(),
        password_hash: synchealth_dashboard::hash_password(password),
        admin: false,
        projects: projects.iter().map(|p| synchealth_schema::ProjectName::parse(p).unwrap()).collect(),
    };
    store.put_user(&user).await.unwrap();
}

#[tokio::test]
async fn a_user_sees_only_the_granted_projects() {
    let (app, store) = spawn_app_with(Backend::Sqlite, "pages_grants", |_| {}).await.unwrap();
    let mobile = synchealth_schema::ProjectName::parse("mobile").unwrap();
    store.ensure_project(&mobile).await.unwrap();
    add_user(&store, "ana", "ana-password", &["mobile"]).await;
    let cookie = login(&app.address, "ana", "ana-password").await;
    let (status, body) = page(&app.address, &cookie, "/?project=mobile").await;
    assert_eq!(status, 200);
    assert!(body.contains("Project <b>mobile</b>"), "one project: no selector");
    for path in
        ["/?project=default", "/breakdown?project=default", "/devices?project=default", "/alerts?project=default"]
    {
        let (status, body) = page(&app.address, &cookie, path).await;
        assert_eq!(status, 403, "{path}");
        assert!(body.contains("not granted project"), "{path}");
    }
    let api = no_redirects()
        .get(format!("{}/api/v1/summary?project=default", app.address))
        .basic_auth("ana", Some("ana-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403);
    // The admin sees both, with a selector.
    let admin = login(&app.address, "admin", ADMIN_PASSWORD).await;
    let (_, body) = page(&app.address, &admin, "/").await;
    assert!(body.contains("<option value=\"mobile\"") && body.contains("<option value=\"default\" selected"));
}

async fn a_session_works_on_another_replica_and_ends_with_a_password_change(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(settings) = crate::helpers::test_settings(backend, "pages_replicas", dir.path()) else { return };
    let first = Application::build(settings.clone(), synchealth::Roles::ALL).await.unwrap();
    let store = first.store();
    let first = serve(first, tempfile::tempdir().unwrap());
    // A second process on the same store: another replica, or the same one after a restart.
    let second = Application::build(settings, synchealth::Roles { collector: false, dashboard: true, alerts: false })
        .await
        .unwrap();
    let second = serve(second, tempfile::tempdir().unwrap());
    let cookie = login(&first.address, "admin", ADMIN_PASSWORD).await;
    assert_eq!(page(&second.address, &cookie, "/").await.0, 200);
    let user = store.find_user("admin").await.unwrap().unwrap();
    let store: SharedStore = Arc::clone(&store);
    store
        .put_user(&User { password_hash: synchealth_dashboard::hash_password("a new password"), ..user })
        .await
        .unwrap();
    assert_eq!(page(&second.address, &cookie, "/").await.0, 303, "the password changed: log in again");
    drop(dir);
}

on_both_stores!(
    every_page_shows_the_numbers_of_the_fixture,
    an_empty_project_says_what_to_do,
    silences_are_added_and_removed_only_with_the_csrf_token,
    bad_parameters_are_a_clear_400_never_a_500,
    a_session_works_on_another_replica_and_ends_with_a_password_change,
    logout_ends_the_session_and_needs_the_csrf_token,
);

/// Runs the binary's `users` command on an embedded store in `data_dir`.
fn users_cli(data_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SYNCHEALTH_USER_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn users_are_managed_from_the_command_line_without_a_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let added = users_cli(&data, &["add", "ana", "--projects", "ios,web", "--password-stdin"], Some("ana-secret-1\n"));
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let again = users_cli(&data, &["add", "ana", "--admin", "--password", "whatever-it-is"], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("users passwd ana"));
    let no_password = users_cli(&data, &["add", "bo", "--admin"], None);
    assert!(!no_password.status.success());
    assert!(String::from_utf8_lossy(&no_password.stderr).contains("--password-stdin"));
    let list = users_cli(&data, &["list"], None);
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(listed.contains("ana") && listed.contains("projects: ios, web"), "{listed}");
    assert!(!listed.contains("argon2"), "never the hash");

    // The dashboard on that store accepts the password, then refuses it once changed.
    let mut settings = crate::helpers::test_settings(Backend::Sqlite, "users_cli", dir.path()).unwrap();
    settings.data_dir = data.clone();
    let app = serve(Application::build(settings, synchealth::Roles::ALL).await.unwrap(), tempfile::tempdir().unwrap());
    let cookie = login(&app.address, "ana", "ana-secret-1").await;
    assert_eq!(page(&app.address, &cookie, "/?project=ios").await.0, 200);
    let changed = users_cli(&data, &["passwd", "ana", "--password", "ana-secret-2"], None);
    assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    assert_eq!(page(&app.address, &cookie, "/?project=ios").await.0, 303, "the old session ended");
    assert_eq!(try_login(&app.address, "ana", "ana-secret-1").await, Err(401));
    login(&app.address, "ana", "ana-secret-2").await;
    let removed = users_cli(&data, &["remove", "ana"], None);
    assert!(removed.status.success());
    assert_eq!(try_login(&app.address, "ana", "ana-secret-2").await, Err(401));
}

#[tokio::test]
async fn cookies_are_secure_behind_a_tls_proxy() {
    let app = spawn_app(Backend::Sqlite, "pages_secure_cookie").await.unwrap();
    let client = no_redirects();
    let plain = client.get(format!("{}/login", app.address)).send().await.unwrap();
    assert!(!set_cookie(&plain, "sh_login_csrf").unwrap().contains("Secure"));
    let proxied =
        client.get(format!("{}/login", app.address)).header("x-forwarded-proto", "https").send().await.unwrap();
    let cookie = set_cookie(&proxied, "sh_login_csrf").unwrap();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[tokio::test]
async fn after_login_the_browser_only_ever_goes_to_a_path_of_this_origin() {
    let app = spawn_app(Backend::Sqlite, "pages_open_redirect").await.unwrap();
    let client = no_redirects();
    let hostile = [
        "/%09/evil.example",
        "//evil.example",
        "/%5Cevil.example",
        "%2F%5Cevil.example",
        "https://evil.example/",
        "/%0a",
        "/%0d%0a",
        "%0d%0aSet-Cookie:%20a=b",
        "/%00",
        "/%7F",
    ];
    // The form carries only a safe `next`, and never fails on one.
    for next in hostile {
        let response = client.get(format!("{}/login?next={next}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{next}");
        assert_eq!(hidden_input(&response.text().await.unwrap(), "next"), "/", "{next}");
    }
    // Logged in, `GET /login?next=` redirects at once: to `/`, never a 500.
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;
    for next in hostile {
        let response =
            client.get(format!("{}/login?next={next}", app.address)).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(response.status(), 303, "{next}");
        assert_eq!(response.headers()[LOCATION], "/", "{next}");
    }
    let kept = client.get(format!("{}/login?next=/breakdown%3Fby%3Dos", app.address)).header(COOKIE, &cookie).send();
    assert_eq!(kept.await.unwrap().headers()[LOCATION], "/breakdown?by=os");
    // The form's own `next` field, posted with a tab: the login succeeds, to `/`.
    let response = post_login_form(&client, &app.address, ADMIN_PASSWORD, "/\t/evil.example").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/");
    assert!(set_cookie(&response, "sh_session").is_some(), "the login itself worked");
}

/// A username with a line break cannot forge a log line: the binary's log
/// carries user-supplied values as escaped fields, so its stderr holds the
/// attacker's text inside one line, never at the start of its own.
#[tokio::test]
async fn a_login_username_with_a_line_break_forges_no_log_line() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--ingest-key", crate::helpers::INGEST_KEY, "--admin-password", crate::helpers::ADMIN_PASSWORD])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let address = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "exited before listening");
        if let Some(url) = line.trim_end().strip_prefix("synchealth: listening on ") {
            break url.to_string();
        }
    };
    let forged = "admin\n2026-12-03T00:00:00Z  INFO FORGED: admin logged in from 10.0.0.1";
    assert_eq!(try_login(&address, forged, "wrong").await, Err(401));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("Failed dashboard login"), "the failure is logged: {stderr}");
    assert!(stderr.contains("FORGED"), "the attempt is in the log: {stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("2026-12-03T00:00:00Z")), "a forged line: {stderr}");
}
