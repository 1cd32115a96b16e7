//! `POST /v1/events`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_schema::{
    parse_batch_with_limit, unix_ms, ProjectName, Rejection, StoredEvent, SyncEvent, TelemetryLossReport,
};
use synchealth_store::InsertOutcome;
use time::OffsetDateTime;

use crate::{AppError, CollectorState, IgnoredDimensions, SubmitError};

/// The answer to an accepted batch.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestResponse {
    /// Events newly stored.
    pub accepted: usize,
    /// Events already stored before (or repeated within the batch): counted once.
    pub duplicates: usize,
    /// Events refused, with why.
    pub rejected: Vec<Rejection>,
    /// Dimension keys the project did not declare, each with the number of
    /// events of the batch that carried it: removed from those events, which
    /// are stored without them. Absent from the JSON when there are none.
    #[serde(default, skip_serializing_if = "IgnoredDimensions::is_empty")]
    pub ignored_dimensions: IgnoredDimensions,
}

#[tracing::instrument(skip_all, fields(project, events, accepted, duplicates, rejected))]
pub(crate) async fn post_events(
    State(state): State<CollectorState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, AppError> {
    let received_at = OffsetDateTime::now_utc();
    // Key, origin and headers first: nothing of the body is read for a
    // request that is refused anyway.
    let (who, source) = state.keys.authenticate_request(&headers, &uri).await?;
    crate::cors::check_origin(&headers, &who)?;
    let project = who.project.clone();
    check_content_type(&headers, source)?;
    let body = crate::body::read(&headers, body, state.limits.max_body_bytes, &state.in_flight).await?;
    let batch =
        parse_batch_with_limit(&body.bytes, state.limits.max_events_per_batch).map_err(AppError::invalid_batch)?;
    // Counted in events, so only once the batch is parsed.
    state.rate_limiter.check(&who, batch.events.len() + batch.rejected.len())?;

    let span = tracing::Span::current();
    span.record("project", project.as_str());
    span.record("events", batch.events.len() + batch.rejected.len());
    let (events, out_of_range) = stamp(&project, batch.events, batch.sent_at, received_at);
    let mut rejected = batch.rejected;
    rejected.extend(out_of_range.into_iter().map(|(index, field, reason)| Rejection {
        index,
        field: field.into(),
        reason,
    }));
    rejected.sort_by_key(|r| r.index);
    let Stored { outcome, ignored_dimensions } = store_events(&state, &project, events).await?;
    if let Some(report) = &batch.telemetry_loss {
        record_telemetry_loss(&state, &project, report, received_at).await;
    }
    span.record("accepted", outcome.inserted);
    span.record("duplicates", outcome.duplicates.len());
    span.record("rejected", rejected.len());
    count_rejected(&project, rejected.len());
    // A line per request would flood the log at fleet scale (/metrics counts
    // them); a batch with rejected events is worth an operator's eye.
    if rejected.is_empty() {
        tracing::debug!("Stored batch.");
    } else {
        tracing::info!("Stored batch; some events were rejected.");
    }
    Ok(Json(IngestResponse {
        accepted: outcome.inserted,
        duplicates: outcome.duplicates.len(),
        rejected,
        ignored_dimensions,
    }))
}

/// Stamps validated events with the collector's clock. Those whose times,
/// once corrected for the batch's clock skew, fall outside what can be
/// stored ([`StoredEvent::time_out_of_range`]) come back as rejections under
/// their position `K` (an index in a batch, a place in an OTLP request).
pub(crate) fn stamp<K>(
    project: &ProjectName,
    events: Vec<(K, SyncEvent)>,
    sent_at: OffsetDateTime,
    received_at: OffsetDateTime,
) -> (Vec<StoredEvent>, Vec<(K, &'static str, String)>) {
    let mut stored = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for (key, event) in events {
        let event = StoredEvent::new(project.clone(), event, sent_at, received_at);
        match event.time_out_of_range() {
            None => stored.push(event),
            Some((field, reason)) => refused.push((key, field, reason)),
        }
    }
    (stored, refused)
}

/// What [`store_events`] did with a request's events.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// Which were new and which duplicates.
    pub(crate) outcome: InsertOutcome,
    /// The undeclared dimension keys removed from them, with event counts.
    pub(crate) ignored_dimensions: IgnoredDimensions,
}

/// Makes stamped events durable; every ingest path (JSON batches, OTLP
/// logs) ends here. Dimensions the project did not declare are removed
/// first, before anything is acknowledged or spooled (`dimensions.rs` says
/// why there). Returns only once the events are safe: the caller may
/// acknowledge them.
pub(crate) async fn store_events(
    state: &CollectorState,
    project: &ProjectName,
    mut stored: Vec<StoredEvent>,
) -> Result<Stored, AppError> {
    if stored.is_empty() {
        return Ok(Stored::default());
    }
    let ignored_dimensions = state.dimensions.keep_declared(project, &mut stored).await?;
    // The pipeline answers once the events are in the store or fsync'd in the
    // spool; it batches this request with others meanwhile.
    let outcome = state.pipeline.submit(stored).await.map_err(|e| match e {
        SubmitError::SpoolFull { retry_after } => {
            AppError::Overloaded { retry_after_seconds: retry_after.as_secs().max(1) }
        }
        SubmitError::ShuttingDown | SubmitError::Unavailable(_) => AppError::Unavailable(e.to_string()),
    })?;
    let labels = crate::metric_labels::project(project);
    metrics::counter!("synchealth_events_accepted_total", labels.clone()).increment(outcome.inserted as u64);
    metrics::counter!("synchealth_events_duplicate_total", labels).increment(outcome.duplicates.len() as u64);
    Ok(Stored { outcome, ignored_dimensions })
}

/// How long the telemetry-loss write may hold up the answer: it is best
/// effort, and the probe repeats its cumulative report with the next batch.
const TELEMETRY_LOSS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Stores a probe's cumulative telemetry-loss report, best effort: the
/// events are already safe, so a failure here is logged and not answered
/// with an error (the next batch carries the same counts, or larger ones).
async fn record_telemetry_loss(
    state: &CollectorState,
    project: &ProjectName,
    report: &TelemetryLossReport,
    received_at: OffsetDateTime,
) {
    let write = state.store.record_telemetry_loss(project, &report.device_id, &report.dropped, unix_ms(received_at));
    match tokio::time::timeout(TELEMETRY_LOSS_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%project, device_id = %report.device_id, %error, "Could not store a telemetry-loss report.");
        }
        Err(_) => {
            tracing::warn!(%project, device_id = %report.device_id, "Storing a telemetry-loss report timed out.");
        }
    }
}

/// Counts events refused by validation (`synchealth_events_rejected_total`);
/// every ingest path calls it with its own rejections.
pub(crate) fn count_rejected(project: &ProjectName, rejected: usize) {
    if rejected > 0 {
        metrics::counter!("synchealth_events_rejected_total", crate::metric_labels::project(project))
            .increment(rejected as u64);
    }
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// JSON, or no type at all; a beacon (key in the query) may also say
/// `text/plain`, the one type a browser sends without a preflight, which
/// `sendBeacon` and a header-less `fetch(keepalive)` at page exit rely on.
fn check_content_type(headers: &HeaderMap, source: crate::KeySource) -> Result<(), AppError> {
    let media = |ct: &str, want: &str| ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(want));
    match header_str(headers, header::CONTENT_TYPE) {
        None => Ok(()),
        Some(ct) if media(ct, "application/json") => Ok(()),
        Some(ct) if source == crate::KeySource::Query && media(ct, "text/plain") => Ok(()),
        Some(other) => Err(AppError::UnsupportedMediaType(format!("content-type {other:?}; send application/json"))),
    }
}
