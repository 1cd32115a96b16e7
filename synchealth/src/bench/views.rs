//! The dashboard's views timed as an on-call engineer's clicks reach them:
//! each one a request through the real dashboard router (authentication,
//! parameter parsing, the store's reads, JSON or HTML rendering), answered
//! in full, with no socket in between so the figure is the server's time.
//! Optionally with events written into the same store beside the reads,
//! at a steady rate and at the current time, as a collector does in
//! production, so the current hour's parts are fresh and unmerged.
//!
//! The writer goes through the store's normal `insert` (the collector's
//! path, with its exactly-once checks on ClickHouse), in-process: what it
//! does not include is the collector's HTTP and spool work, which in
//! production runs on another machine or core anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use hdrhistogram::Histogram;
use synchealth_dashboard::DashboardState;
use synchealth_schema::{unix_ms, StoredEvent};
use synchealth_store::{SharedStore, User};
use time::OffsetDateTime;
use tower::ServiceExt;

/// The views `--views all` times: every JSON view of the table and
/// the pages on top of them, over the last 24 h.
pub const ALL_VIEWS: &[&str] = &[
    "/api/v1/overview?range=24h",
    "/api/v1/summary?range=24h",
    "/api/v1/summary?range=24h&os=ios",
    "/api/v1/summary?range=1h&network=cellular",
    "/api/v1/breakdown?range=24h&by=app_version",
    "/api/v1/breakdown?range=24h&by=network",
    "/api/v1/timeseries?range=24h",
    "/api/v1/timeseries?range=6h",
    "/api/v1/timeseries?range=24h&step=300",
    "/api/v1/releases?range=24h",
    "/api/v1/devices?range=24h&list=queue_depth",
    "/api/v1/devices?range=24h&list=consecutive_failures",
    "/api/v1/devices?range=24h&list=stuck",
    "/api/v1/devices?range=24h&list=staleness",
    "/api/v1/devices?range=24h&list=quiet",
    "/api/v1/devices?range=15m&list=queue_depth",
    "/api/v1/devices?range=24h&list=queue_depth&os=ios",
    "/api/v1/devices/device-000001?range=24h",
    "/?range=24h",
    "/breakdown?range=24h&by=network",
    "/devices?range=24h&list=queue_depth",
    // The other windows the pages offer, 15 minutes to 7 days, and the
    // sub-hour steps they draw (1, 5 and 15 minutes).
    "/api/v1/summary?range=15m",
    "/api/v1/summary?range=7d",
    "/api/v1/breakdown?range=7d&by=os",
    "/api/v1/breakdown?range=1h&by=app_version&network=cellular",
    "/api/v1/timeseries?range=15m",
    "/api/v1/timeseries?range=1h",
    "/api/v1/timeseries?range=6h&os=ios",
    "/api/v1/timeseries?range=7d",
    "/api/v1/devices?range=7d&list=queue_depth",
    "/?range=6h",
    "/?range=7d",
    "/releases?range=24h",
    "/devices/device-000001?range=24h",
    // Issue 19's views: conflicts, errors and their pages.
    "/api/v1/conflicts?range=24h",
    "/api/v1/errors?range=24h",
    "/api/v1/conflicts?range=1h",
    "/conflicts?range=24h",
    "/errors?range=24h",
];

/// The bench user's name and password (HTTP Basic; the verified header is
/// cached by the dashboard, so argon2 runs once, in the warm-up).
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

/// One view's figures.
#[derive(Debug, Clone)]
pub struct ViewFigures {
    /// The request's path and query.
    pub view: String,
    /// Milliseconds: median, p95, max.
    pub ms: [f64; 3],
    /// The answer's size, bytes (the last run's).
    pub bytes: usize,
}

/// The views to time: `all`, or paths with their query strings.
pub fn views(requested: &[String]) -> Vec<String> {
    if requested.iter().any(|v| v == "all") {
        ALL_VIEWS.iter().map(|v| (*v).to_string()).collect()
    } else {
        requested.to_vec()
    }
}

/// Times each view of `project` (added to a view that names none) `runs`
/// times after two warm-ups, round-robin (so a
/// background merge or a burst of ingest spreads over all of them rather
/// than landing on one view's runs).
pub async fn time_views(
    store: &SharedStore,
    state: DashboardState,
    project: &str,
    views: &[String],
    runs: u32,
) -> anyhow::Result<Vec<ViewFigures>> {
    store
        .put_user(&User {
            username: USER.into(),
            password_hash: synchealth_dashboard::hash_password(PASSWORD),
            admin: true,
            projects: Vec::new(),
        })
        .await
        .context("adding the bench user")?;
    let router = synchealth_dashboard::router(state);
    let authorization =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let cookie = login(&router).await?;
    let mut histograms: Vec<Histogram<u64>> =
        views.iter().map(|_| Histogram::new(3)).collect::<Result<_, _>>().context("histogram")?;
    let mut bytes = vec![0usize; views.len()];
    for run in 0..runs + 2 {
        for (i, view) in views.iter().enumerate() {
            let separator = if view.contains('?') { '&' } else { '?' };
            let uri =
                if view.contains("project=") { view.clone() } else { format!("{view}{separator}project={project}") };
            let request = Request::get(uri.as_str())
                .header(header::AUTHORIZATION, &authorization)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .context("building the request")?;
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.context("calling the dashboard")?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64 << 20).await.context("reading the answer")?;
            let micros = started.elapsed().as_micros() as u64;
            if status != StatusCode::OK {
                bail!("{view} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
            }
            bytes[i] = body.len();
            if run >= 2 {
                histograms[i].record(micros.max(1)).context("recording")?;
            }
        }
    }
    Ok(views
        .iter()
        .zip(histograms)
        .zip(bytes)
        .map(|((view, h), bytes)| {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            ViewFigures { view: view.clone(), ms: [ms(0.5), ms(0.95), h.max() as f64 / 1000.0], bytes }
        })
        .collect())
}

/// A writer of events at the current time beside the reads; stops (and
/// says how many it wrote) when dropped through [`Ingest::stop`].
#[derive(Debug)]
pub struct Ingest {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Ingest {
    /// Starts writing `rate` events a second in batches of 1,000 (the
    /// probe's batch size), made by `make(seq, now_ms)`.
    pub fn start<F>(store: SharedStore, rate: u32, make: F) -> Ingest
    where
        F: Fn(u64, i64) -> StoredEvent + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stop_flag, count) = (stop.clone(), written.clone());
        let task = tokio::spawn(async move {
            const BATCH: u64 = 1000;
            let started = Instant::now();
            // Far above anything the load used, so ids never collide.
            let mut seq = 1u64 << 48;
            while !stop_flag.load(Ordering::Relaxed) {
                let due = count.load(Ordering::Relaxed) + BATCH;
                let at = Duration::from_secs_f64(due as f64 / f64::from(rate.max(1)));
                if let Some(wait) = at.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let now_ms = unix_ms(OffsetDateTime::now_utc());
                let events: Vec<StoredEvent> = (0..BATCH)
                    .map(|_| {
                        seq += 1;
                        make(seq, now_ms)
                    })
                    .collect();
                store.insert(&events).await.context("ingest beside the reads")?;
                count.fetch_add(BATCH, Ordering::Relaxed);
            }
            Ok(())
        });
        Ingest { stop, written, task }
    }

    /// Stops the writer; returns the events written and the rate achieved.
    pub async fn stop(self, since: Instant) -> anyhow::Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the ingest task")??;
        let written = self.written.load(Ordering::Relaxed);
        Ok((written, written as f64 / since.elapsed().as_secs_f64()))
    }
}

/// Logs in through the login page as a browser does (its CSRF cookie and
/// field, then the form), for the pages, which take the session cookie
/// rather than HTTP Basic; returns the `Cookie` header to send.
async fn login(router: &axum::Router) -> anyhow::Result<String> {
    let page = router
        .clone()
        .oneshot(Request::get("/login").header(header::HOST, "bench").body(Body::empty())?)
        .await
        .context("GET /login")?;
    let csrf_cookie = set_cookies(page.headers()).into_iter().next().context("no CSRF cookie from /login")?;
    let html = axum::body::to_bytes(page.into_body(), 1 << 20).await.context("reading /login")?;
    let html = String::from_utf8_lossy(&html);
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).context("no csrf field on /login")? + marker.len();
    let csrf = &html[start..start + html[start..].find('"').context("unterminated csrf field")?];
    let form = format!("username={USER}&password={PASSWORD}&csrf={csrf}&next=%2F");
    let answer = router
        .clone()
        .oneshot(
            Request::post("/login")
                .header(header::HOST, "bench")
                .header(header::ORIGIN, "http://bench")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, &csrf_cookie)
                .body(Body::from(form))?,
        )
        .await
        .context("POST /login")?;
    let session = set_cookies(answer.headers())
        .into_iter()
        .find(|c| c.starts_with("sh_session="))
        .with_context(|| format!("logging in answered {} without a session cookie", answer.status()))?;
    Ok(session)
}

/// The `name=value` part of each `Set-Cookie`.
fn set_cookies(headers: &axum::http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_string))
        .collect()
}
