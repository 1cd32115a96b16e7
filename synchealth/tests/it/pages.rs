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
        ("/conflicts?step=0", "step"),
        ("/conflicts?range=7d&step=1", "step"),
        ("/errors?limit=0", "limit"),
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
    for path in ["/", "/breakdown?by=os", "/releases", "/conflicts", "/errors", "/devices", "/devices/a1", "/alerts"] {
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
    the_conflicts_page_shows_kinds_resolutions_and_top_entities,
    the_errors_page_groups_messages_by_fingerprint_and_escapes_them,
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

/// The cells of each row of the table with `id`, tags stripped and the
/// escapes of the five HTML specials read back.
fn table_rows(body: &str, id: &str) -> Vec<Vec<String>> {
    let marker = format!("<table class=\"data\" id=\"{id}\">");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no table {id}"));
    let table = &body[start..start + body[start..].find("</table>").unwrap()];
    let tbody = table.split("<tbody>").nth(1).unwrap_or_default();
    tbody
        .split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in inner.chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    unescape(text.trim())
                })
                .collect()
        })
        .collect()
}

fn unescape(text: &str) -> String {
    [("&#60;", "<"), ("&lt;", "<"), ("&#62;", ">"), ("&gt;", ">"), ("&#34;", "\""), ("&quot;", "\""), ("&#39;", "'")]
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The first `href` of `body` that starts with `prefix`, as a URL path.
fn href_starting(body: &str, prefix: &str) -> String {
    let marker = format!("href=\"{}", prefix.replace('&', "&#38;"));
    let start = body.find(&marker).unwrap_or_else(|| panic!("no link to {prefix}")) + "href=\"".len();
    unescape(body[start..].split('"').next().unwrap())
}

/// The conflicts fixture: `(device, minutes ago, conflicts, details as
/// (entity, kind, resolution, count))`; conflicts beyond the details'
/// sum are unclassified. The last one is in the previous hour.
type ConflictFixture = (&'static str, i64, u32, &'static [(&'static str, &'static str, &'static str, u32)]);
const CONFLICTS: [ConflictFixture; 5] = [
    ("c1", 5, 5, &[("todo", "update_update", "last_write_wins", 3), ("note", "update_delete", "crdt_merge", 2)]),
    ("c2", 10, 4, &[("todo", "update_update", "server_wins", 1), ("todo", "insert_insert", "manual", 1)]),
    ("c3", 15, 0, &[]),
    ("c3", 20, 1, &[("<b>list</b>", "constraint", "unresolved", 1)]),
    ("c1", 75, 4, &[("todo", "update_update", "last_write_wins", 1), ("todo", "update_update", "crdt_merge", 3)]),
];

async fn the_conflicts_page_shows_kinds_resolutions_and_top_entities(backend: Backend) {
    use std::collections::{BTreeMap, BTreeSet};
    let Some(app) = spawn_app(backend, "pages_conflicts").await else { return };
    let events: Vec<Value> = CONFLICTS
        .iter()
        .map(|(device, ago, conflicts, details)| {
            let mut e = event(device, *ago, true, 100);
            e["conflicts"] = (*conflicts).into();
            e["conflict_details"] = details
                .iter()
                .map(|(entity, kind, resolution, count)| {
                    serde_json::json!({"entity": entity, "kind": kind, "resolution": resolution, "count": count})
                })
                .collect();
            e
        })
        .collect();
    let response = app.post_batch(&batch(events)).await;
    assert_eq!(response.status(), 200);
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;

    // What the page must say, from the fixture.
    let overwrites = |resolution: &str| ["last_write_wins", "server_wins", "client_wins"].contains(&resolution);
    let (current, previous): (Vec<&ConflictFixture>, Vec<&ConflictFixture>) = CONFLICTS.iter().partition(|e| e.1 < 60);
    let share_of = |events: &[&ConflictFixture]| {
        let details = events.iter().flat_map(|e| e.3.iter());
        let classified: u32 = details.clone().map(|d| d.3).sum();
        let overwritten: u32 = details.filter(|d| overwrites(d.2)).map(|d| d.3).sum();
        f64::from(overwritten) / f64::from(classified)
    };
    let total: u32 = current.iter().map(|e| e.2).sum();
    let classified: u32 = current.iter().flat_map(|e| e.3.iter()).map(|d| d.3).sum();
    let (now, before) = (share_of(&current), share_of(&previous));
    assert!(now > before, "the fixture's share rises");

    let (status, body) = page(&app.address, &cookie, "/conflicts?range=1h").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(after(&body, "Conflicts", "value"), total.to_string());
    assert_eq!(after(&body, "Overwrite share", "value"), pct(now, 1.0));
    assert_eq!(
        after(&body, "Overwrite share", "change worse"),
        format!("▲ {:.1} pp vs previous ({})", (now - before) * 100.0, pct(before, 1.0))
    );
    assert_eq!(after(&body, "Unclassified conflicts", "value"), (total - classified).to_string());
    assert!(body.contains("edits a user may have silently lost"), "the overwrite share is explained");
    assert!(body.contains("href=\"/conflicts?range=1h\" class=\"active\" aria-current=\"page\">Conflicts</a>"));
    assert_eq!(body.matches("<svg class=\"chart\"").count(), 2, "by kind and by resolution");

    // Totals by kind and by resolution, most first, unclassified last.
    let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
    let mut resolutions: BTreeMap<&str, u32> = BTreeMap::new();
    for d in current.iter().flat_map(|e| e.3.iter()) {
        *kinds.entry(d.1).or_default() += d.3;
        *resolutions.entry(d.2).or_default() += d.3;
    }
    let expected = |totals: BTreeMap<&str, u32>| {
        let mut rows: Vec<(String, u32)> = totals.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rows.push(("unclassified".into(), total - classified));
        rows.into_iter()
            .map(|(name, v)| vec![name, v.to_string(), pct(f64::from(v), f64::from(total))])
            .collect::<Vec<_>>()
    };
    let shown = |id: &str| -> Vec<Vec<String>> {
        table_rows(&body, id).into_iter().map(|r| r.into_iter().take(3).collect()).collect()
    };
    assert_eq!(shown("conflict-kinds"), expected(kinds));
    assert_eq!(shown("conflict-resolutions"), expected(resolutions));
    let lww = table_rows(&body, "conflict-resolutions").into_iter().find(|r| r[0] == "last_write_wins").unwrap();
    assert!(lww[3].starts_with("overwrites"), "{lww:?}");

    // Entities: conflicts, overwrite share, attempts naming them, their
    // share of all attempts, devices.
    let attempts = current.len() as f64;
    let entities: BTreeSet<&str> = current.iter().flat_map(|e| e.3.iter().map(|d| d.0)).collect();
    let mut lines: Vec<(u32, usize, Vec<String>)> = entities
        .iter()
        .map(|entity| {
            let details: Vec<_> = current.iter().flat_map(|e| e.3.iter()).filter(|d| d.0 == *entity).collect();
            let conflicts: u32 = details.iter().map(|d| d.3).sum();
            let overwritten: u32 = details.iter().filter(|d| overwrites(d.2)).map(|d| d.3).sum();
            let naming: Vec<_> = current.iter().filter(|e| e.3.iter().any(|d| d.0 == *entity)).collect();
            let devices: BTreeSet<&str> = naming.iter().map(|e| e.0).collect();
            let row = vec![
                entity.to_string(),
                conflicts.to_string(),
                pct(f64::from(overwritten), f64::from(conflicts)),
                naming.len().to_string(),
                pct(naming.len() as f64, attempts),
                devices.len().to_string(),
                "by release".to_string(),
            ];
            (conflicts, naming.len(), row)
        })
        .collect();
    lines.sort_by(|a, b| b.0.cmp(&a.0).then(a.2[0].cmp(&b.2[0])));
    let by_conflicts: Vec<Vec<String>> = lines.iter().map(|l| l.2.clone()).collect();
    assert_eq!(table_rows(&body, "entities-by-conflicts"), by_conflicts);
    lines.sort_by(|a, b| b.1.cmp(&a.1).then(a.2[0].cmp(&b.2[0])));
    let by_rate: Vec<Vec<String>> =
        lines.iter().map(|l| [0, 4, 3, 1, 2, 5, 6].iter().map(|i| l.2[*i].clone()).collect()).collect();
    assert_eq!(table_rows(&body, "entities-by-rate"), by_rate);
    assert!(!body.contains("<b>list</b>"), "the device's entity name is escaped");

    // An entity's link keeps the window and opens a page that exists; the JSON says the same.
    let segments = href_starting(&body, "/breakdown?range=1h&by=app_version");
    let (status, _) = page(&app.address, &cookie, &segments).await;
    assert_eq!(status, 200, "{segments}");
    let json_href = href_starting(&body, "/api/v1/conflicts?");
    assert_eq!(json_href, "/api/v1/conflicts?range=1h");
    let json = json_with_cookie(&app.address, &cookie, &json_href).await;
    assert_eq!(json["conflicts"], f64::from(total));

    // An empty window says so instead of showing empty tables.
    let (status, body) = page(&app.address, &cookie, "/conflicts?from=2021-01-01T00:00&to=2021-01-01T01:00").await;
    assert_eq!(status, 200);
    assert!(body.contains("No conflicts in this window"), "{body}");
    assert!(!body.contains("id=\"conflict-kinds\""));
}

/// A failed attempt: `(device, minutes ago, app version, error kind, message)`.
type FailureFixture = (&'static str, i64, &'static str, Option<&'static str>, Option<String>);

async fn the_errors_page_groups_messages_by_fingerprint_and_escapes_them(backend: Backend) {
    use std::collections::BTreeSet;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    let Some(app) = spawn_app(backend, "pages_errors").await else { return };
    let hostile = "server said <script>alert(1)</script> at 500";
    // The last one is in the previous hour; successes fail nothing.
    let fixture: Vec<FailureFixture> = vec![
        ("e1", 5, "2.3.0", Some("timeout"), Some(format!("timeout after 3012 ms for todo {}", uuid::Uuid::new_v4()))),
        ("e2", 10, "2.3.0", Some("timeout"), Some(format!("timeout after 2987 ms for todo {}", uuid::Uuid::new_v4()))),
        ("e3", 15, "2.2.0", Some("timeout"), Some(format!("timeout after 30001 ms for todo {}", uuid::Uuid::new_v4()))),
        ("e1", 20, "2.3.0", Some("server"), Some(hostile.to_string())),
        ("e4", 25, "2.3.0", Some("network"), None),
        ("e5", 30, "2.3.0", None, None),
        ("e1", 90, "2.3.0", Some("auth"), Some("token 77 expired".to_string())),
    ];
    let mut events: Vec<Value> = fixture
        .iter()
        .map(|(device, ago, version, kind, message)| {
            let mut e = event(device, *ago, false, 100);
            e["app_version"] = (*version).into();
            e["error_kind"] = kind.map_or(Value::Null, Value::from);
            e["error_message"] = message.clone().map_or(Value::Null, Value::from);
            e
        })
        .collect();
    events.extend((0..3).map(|i| event("ok", 2 + i, true, 100)));
    let times: Vec<OffsetDateTime> =
        events.iter().map(|e| OffsetDateTime::parse(e["occurred_at"].as_str().unwrap(), &Rfc3339).unwrap()).collect();
    let response = app.post_batch(&batch(events)).await;
    assert_eq!(response.status(), 200);
    let cookie = login(&app.address, "admin", ADMIN_PASSWORD).await;

    let failed: Vec<usize> = (0..fixture.len()).filter(|i| fixture[*i].1 < 60).collect();
    let n = failed.len() as f64;
    let (status, body) = page(&app.address, &cookie, "/errors?range=1h&step=300").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(after(&body, "Failed attempts", "value"), failed.len().to_string());
    assert!(body.contains("href=\"/errors?range=1h\" class=\"active\" aria-current=\"page\">Errors</a>"));

    // Kinds, most first, ties by name; a failure without a kind says so.
    let kind_of = |i: &usize| fixture[*i].3.unwrap_or("not given").to_string();
    let mut kinds: Vec<(String, usize, usize)> = failed
        .iter()
        .map(kind_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|kind| {
            let of: Vec<&usize> = failed.iter().filter(|i| kind_of(i) == kind).collect();
            let devices: BTreeSet<&str> = of.iter().map(|i| fixture[**i].0).collect();
            (kind, of.len(), devices.len())
        })
        .collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let expected: Vec<Vec<String>> =
        kinds.iter().map(|(k, a, d)| vec![k.clone(), a.to_string(), pct(*a as f64, n), d.to_string()]).collect();
    // The failure without a kind is stored with none: the store sorts
    // `None` by its own rule, so compare as sets of rows.
    let mut shown = table_rows(&body, "error-kinds");
    let mut expected_sorted = expected.clone();
    shown.sort();
    expected_sorted.sort();
    assert_eq!(shown, expected_sorted);
    assert_eq!(table_rows(&body, "error-kinds")[0], expected[0], "the largest kind first");

    // The three timeouts differ only in ids: one group.
    let groups = table_rows(&body, "error-groups");
    let timeouts: Vec<usize> = failed.iter().copied().filter(|i| fixture[*i].3 == Some("timeout")).collect();
    let row = groups.iter().find(|r| r[1] == "timeout after ? ms for todo ?").unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!(row[0], "timeout");
    assert!(timeouts.iter().any(|i| fixture[*i].4.as_deref() == Some(row[2].as_str())), "an example: {row:?}");
    assert_eq!(row[3], timeouts.len().to_string());
    assert_eq!(row[4], pct(timeouts.len() as f64, n));
    let devices: BTreeSet<&str> = timeouts.iter().map(|i| fixture[*i].0).collect();
    assert_eq!(row[5], devices.len().to_string());
    // Seen times: the oldest and newest timeout, within the time correction.
    let utc = |t: OffsetDateTime| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    let near = |t: OffsetDateTime| (-2..=2).map(|s| utc(t + time::Duration::seconds(s))).collect::<Vec<_>>();
    let oldest = timeouts.iter().map(|i| times[*i]).min().unwrap();
    let newest = timeouts.iter().map(|i| times[*i]).max().unwrap();
    assert!(near(oldest).contains(&row[7]), "first seen {} for {oldest}", row[7]);
    assert!(near(newest).contains(&row[8]), "last seen {} for {newest}", row[8]);
    let on = |v: &str| timeouts.iter().filter(|i| fixture[**i].2 == v).count() as f64;
    let total = timeouts.len() as f64;
    assert_eq!(row[9], format!("2.3.0 ({}), 2.2.0 ({})", pct(on("2.3.0"), total), pct(on("2.2.0"), total)));
    // Its sparkline: one column per 5-minute bucket holding a timeout.
    let buckets: BTreeSet<i64> = timeouts.iter().map(|i| times[*i].unix_timestamp().div_euclid(300)).collect();
    let groups_html = &body[body.find("id=\"error-groups\"").unwrap()..];
    let timeout_row = groups_html.split("<tr>").find(|r| r.contains("timeout after ? ms for todo ?")).unwrap();
    let spark = &timeout_row[timeout_row.find("<svg class=\"spark\"").unwrap()..];
    assert_eq!(spark[..spark.find("</svg>").unwrap()].matches("<rect").count(), buckets.len());

    // The hostile message is shown, as text.
    let server = groups.iter().find(|r| r[0] == "server").unwrap();
    assert_eq!(server[2], hostile);
    assert_eq!(server[1], synchealth_schema::error_fingerprint(hostile));
    assert!(!body.contains("<script>alert(1)</script>"), "escaped");
    assert!(
        body.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped"
    );
    // A failure without a message groups under its kind with no fingerprint.
    let network = groups.iter().find(|r| r[0] == "network").unwrap();
    assert_eq!(network[1], "(no message)");
    assert!(!groups.iter().any(|r| r[0] == "auth"), "the previous hour is not in this window");

    // The JSON link keeps the window and the step, and says the same.
    let json_href = href_starting(&body, "/api/v1/errors?");
    assert_eq!(json_href, "/api/v1/errors?range=1h&step=300");
    let json = json_with_cookie(&app.address, &cookie, &json_href).await;
    assert_eq!(json["failed_attempts"], n);

    let (status, body) = page(&app.address, &cookie, "/errors?from=2021-01-01T00:00&to=2021-01-01T01:00").await;
    assert_eq!(status, 200);
    assert!(body.contains("No failed attempts in this window"), "{body}");
    assert!(!body.contains("id=\"error-groups\""));
}

/// The JSON at `href`, fetched with the page's session cookie.
async fn json_with_cookie(address: &str, cookie: &str, href: &str) -> Value {
    no_redirects().get(format!("{address}{href}")).header(COOKIE, cookie).send().await.unwrap().json().await.unwrap()
}
