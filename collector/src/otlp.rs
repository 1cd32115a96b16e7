//! `POST /v1/logs`: OTLP/HTTP logs, for apps that already run an
//! OpenTelemetry SDK and would rather emit one log record per sync attempt
//! than embed our probe.
//!
//! The request is an OTLP `ExportLogsServiceRequest`, as
//! `application/x-protobuf` or `application/json` (the OTLP JSON encoding:
//! lowerCamelCase names, 64-bit integers as strings, hex trace ids), plain or
//! gzip, with the same `Authorization: Bearer <ingest key>` and the same
//! limits as `/v1/events`: body size, events per request and the per-key
//! rate limit, where the sync records count as events (skipped app logs do
//! not).
//!
//! Each log record that carries at least one `sync.*` attribute is one
//! SyncEvent: its fields are gathered into a JSON object and validated by
//! [`SyncEvent::from_json`], so the rules (types, ranges, enums, required
//! fields) are exactly those of the JSON API, and the events end in
//! [`store_events`] like every other ingest path.
//!
//! # Mapping
//!
//! | SyncEvent field | taken from, first found wins |
//! |---|---|
//! | every field `F` | the record's attribute `sync.F`, else the resource's attribute `sync.F` |
//! | `device_id` | ... else the resource's `device.id` |
//! | `app_version` | ... else the resource's `service.version` |
//! | `os` | ... else the resource's `os.type` |
//! | `os_version` | ... else the resource's `os.version` |
//! | `device_model` | ... else the resource's `device.model.identifier` |
//! | `occurred_at` | `sync.occurred_at` (RFC 3339 string), else the record's `timeUnixNano`, else its `observedTimeUnixNano` (0 = unset) |
//! | `queue_oldest_at` | `sync.queue_oldest_at` (RFC 3339 string) |
//! | `conflict_details` | `sync.conflict_details`: an `arrayValue` of `kvlistValue`s, each with `entity`, `kind`, `resolution` (strings) and `count` (integer), or that array as JSON text in a `stringValue` (for SDKs whose attributes cannot nest) |
//! | `dimensions` | every `sync.dimension.NAME` attribute (a string) is the dimension `NAME`: the resource's and the record's together, the record's value winning for a name both carry |
//! | `sent_at` | none in OTLP: the collector's receive time, so no clock-skew correction applies |
//!
//! A resource describes the device and app (`sync.device_id`,
//! `sync.app_version`, `sync.os`, ... fit there); the record describes the
//! attempt. Values map by their OTLP type (`stringValue` → string, `intValue`
//! → integer, `doubleValue` → number, `boolValue` → boolean; an empty value
//! is absent; arrays and key-value lists fit only `conflict_details`, bytes
//! no field). Where it is unambiguous a value is read leniently, because
//! logging bridges often turn every attribute into a string: an integer field takes a string of digits
//! or a whole `doubleValue`, `sample_rate` takes a numeric string, `success`
//! takes `"true"`/`"false"`, a conflict detail's `count` is read as an
//! integer field. Anything else reaches the validator as sent and is refused
//! with its usual reason (a refused dimension is named by its attribute,
//! `sync.dimension.NAME`, or `sync.dimension.*` when there are too many).
//!
//! Records without any `sync.*` attribute of their own are ordinary app logs,
//! not sync events: they are skipped, not counted as rejected, and reported
//! in the answer's message. A resource's `sync.*` attributes alone do not
//! make its records sync events.
//!
//! # Answer
//!
//! An `ExportLogsServiceResponse` in the request's encoding, sent once the
//! events are durable. Everything stored (duplicates of stored events count
//! as stored: retries are safe) → an empty response. Otherwise
//! `partial_success` with `rejected_log_records` (records that were sync
//! events but failed validation) and an `error_message` naming the first few
//! as `resourceLogs[i].scopeLogs[j].logRecords[k] <attribute>: <reason>`,
//! plus the number of skipped records, and the undeclared dimensions
//! removed from stored records (`sync.dimension.region in 3 record(s)`; see
//! `dimensions.rs`), which alone make a `partial_success` with 0 rejected
//! records: OTLP's form of a warning, as the JSON answer's
//! `ignored_dimensions` has no place in an `ExportLogsServiceResponse`. A body that is not an OTLP logs
//! request at all is a `400` with the collector's JSON error
//! (`{"error": "invalid batch", "detail": ...}`), as are all other errors
//! (401, 413, 415, 503): OTLP exporters only read the status code of a
//! failure.
//!
//! # Why not the crate's serde support for JSON
//!
//! `opentelemetry-proto`'s `with-serde` derive reads the common shape, but it
//! fails a whole request on forms real senders produce (an empty
//! `{"arrayValue": {}}`, a `null` trace id, a `doubleValue` as a string, a
//! malformed `intValue` in an attribute we do not even read) and silently
//! ignores the proto field names (`resource_logs`) that proto3 JSON parsers
//! must accept, which would answer 200 to a request whose every record was
//! dropped. So JSON is read here from a `serde_json::Value`, accepting both
//! spellings; protobuf is decoded with the crate's prost messages. Both land
//! in one small model, so the mapping exists once.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use serde_json::{json, Map, Value};
use synchealth_schema::SyncEvent;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ingest::{header_str, stamp, store_events, Stored};
use crate::{AppError, CollectorState, IgnoredDimensions};

/// The prefix that marks a log record as a sync event.
const SYNC_PREFIX: &str = "sync.";
/// How many rejections the answer's message spells out.
const MESSAGE_REJECTIONS: usize = 5;
/// The largest integer a JSON double holds exactly.
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// How an OTLP value is read into a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Strings, enums and timestamps: as sent.
    Text,
    /// Unsigned integers.
    Integer,
    /// `sample_rate`.
    Number,
    /// `success`.
    Bool,
    /// `conflict_details`: an array of key-value lists, or its JSON text.
    Details,
}

/// One SyncEvent field: its name, its attribute, how to read it, and the
/// semantic-convention resource attribute it falls back to.
#[derive(Debug)]
struct Field {
    name: &'static str,
    attribute: &'static str,
    kind: Kind,
    semconv: Option<&'static str>,
}

const fn field(name: &'static str, attribute: &'static str, kind: Kind) -> Field {
    Field { name, attribute, kind, semconv: None }
}

const fn device_field(name: &'static str, attribute: &'static str, semconv: &'static str) -> Field {
    Field { name, attribute, kind: Kind::Text, semconv: Some(semconv) }
}

/// Every contract field (schema/README.md), in contract order.
const FIELDS: &[Field] = &[
    field("event_id", "sync.event_id", Kind::Text),
    device_field("device_id", "sync.device_id", "device.id"),
    field("occurred_at", "sync.occurred_at", Kind::Text),
    field("success", "sync.success", Kind::Bool),
    field("duration_ms", "sync.duration_ms", Kind::Integer),
    field("conflicts", "sync.conflicts", Kind::Integer),
    field("queue_depth", "sync.queue_depth", Kind::Integer),
    field("last_success_at", "sync.last_success_at", Kind::Text),
    device_field("app_version", "sync.app_version", "service.version"),
    device_field("os", "sync.os", "os.type"),
    device_field("os_version", "sync.os_version", "os.version"),
    field("network", "sync.network", Kind::Text),
    device_field("device_model", "sync.device_model", "device.model.identifier"),
    field("sync_type", "sync.sync_type", Kind::Text),
    field("trigger", "sync.trigger", Kind::Text),
    field("error_kind", "sync.error_kind", Kind::Text),
    field("error_message", "sync.error_message", Kind::Text),
    field("retries", "sync.retries", Kind::Integer),
    field("records_up", "sync.records_up", Kind::Integer),
    field("records_down", "sync.records_down", Kind::Integer),
    field("bytes_up", "sync.bytes_up", Kind::Integer),
    field("bytes_down", "sync.bytes_down", Kind::Integer),
    field("sample_rate", "sync.sample_rate", Kind::Number),
    field("conflict_details", "sync.conflict_details", Kind::Details),
    field("queue_oldest_at", "sync.queue_oldest_at", Kind::Text),
];

/// The prefix of the attributes that are `dimensions`: `sync.dimension.NAME`
/// is the dimension `NAME`.
const DIMENSION_PREFIX: &str = "sync.dimension.";

/// Whether a resource attribute can feed a field.
fn is_resource_key(key: &str) -> bool {
    key.starts_with(SYNC_PREFIX) || FIELDS.iter().any(|f| f.semconv == Some(key))
}

/// Whether a record attribute can feed a field (and marks a sync event).
fn is_record_key(key: &str) -> bool {
    key.starts_with(SYNC_PREFIX)
}

/// The request body's encoding, which is also the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Self, AppError> {
        let unsupported = |what: String| {
            AppError::UnsupportedMediaType(format!("{what}; send application/x-protobuf or application/json"))
        };
        // No Content-Type reads as JSON, as on /v1/events: one rule for both.
        let Some(content_type) = header_str(headers, header::CONTENT_TYPE) else { return Ok(Encoding::Json) };
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf") || mime.eq_ignore_ascii_case("application/protobuf") {
            Ok(Encoding::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else {
            Err(unsupported(format!("content-type {content_type:?}")))
        }
    }
}

/// Where a record sits in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    resource: usize,
    scope: usize,
    record: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "resourceLogs[{}].scopeLogs[{}].logRecords[{}]", self.resource, self.scope, self.record)
    }
}

/// Attributes as JSON values, only those the mapping may read.
type Attributes = Vec<(String, Value)>;

/// One log record, reduced to what the mapping reads.
#[derive(Debug)]
struct Record {
    location: Location,
    /// Its `sync.*` attributes: none means it is not a sync event.
    attributes: Attributes,
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
}

/// A decoded request, the same from protobuf and JSON.
#[derive(Debug, Default)]
struct Logs {
    /// Per `resourceLogs` entry, its resource's attributes that may feed a field.
    resources: Vec<Attributes>,
    records: Vec<Record>,
}

/// A sync-event record that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejected {
    location: Location,
    /// The attribute at fault, as the sender wrote it (e.g. `sync.duration_ms`,
    /// `resource service.version`, `timeUnixNano`).
    attribute: String,
    reason: String,
}

/// What became of a request's records.
#[derive(Debug, Default)]
struct Mapped {
    events: Vec<(Location, SyncEvent)>,
    rejected: Vec<Rejected>,
    /// Records without `sync.*` attributes: not sync events.
    skipped: usize,
}

#[tracing::instrument(skip_all, fields(project, records, accepted, duplicates, rejected, skipped))]
pub(crate) async fn post_logs(
    State(state): State<CollectorState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let received_at = OffsetDateTime::now_utc();
    let (who, _) = state.keys.authenticate_request(&headers, &uri).await?;
    crate::cors::check_origin(&headers, &who)?;
    let project = who.project.clone();
    let encoding = Encoding::of(&headers)?;
    let body = crate::body::read(&headers, body, state.limits.max_body_bytes, &state.in_flight).await?;
    let logs = match encoding {
        Encoding::Protobuf => logs_from_protobuf(&body.bytes)?,
        Encoding::Json => logs_from_json(&body.bytes)?,
    };
    // Sync records are what a batch's events are to /v1/events: the same
    // per-request cap and the same rate limit; skipped app logs cost nothing.
    let sync_records = logs.records.iter().filter(|r| !r.attributes.is_empty()).count();
    let max = state.limits.max_events_per_batch;
    if sync_records > max {
        return Err(AppError::TooManyEvents { count: sync_records, max });
    }
    state.rate_limiter.check(&who, sync_records)?;

    let span = tracing::Span::current();
    span.record("project", project.as_str());
    span.record("records", logs.records.len());
    let Mapped { events, mut rejected, skipped } = map_logs(&logs);
    // OTLP carries no send time: the receive time stands in, so no skew is
    // measured and device times are used as sent.
    let (events, out_of_range) = stamp(&project, events, received_at, received_at);
    rejected.extend(out_of_range.into_iter().map(|(location, field, reason)| Rejected {
        location,
        attribute: field.to_string(),
        reason,
    }));
    let Stored { outcome, ignored_dimensions } = store_events(&state, &project, events).await?;
    span.record("accepted", outcome.inserted);
    span.record("duplicates", outcome.duplicates.len());
    span.record("rejected", rejected.len());
    span.record("skipped", skipped);
    tracing::info!("Stored OTLP logs.");
    Ok(answer(encoding, &rejected, skipped, &ignored_dimensions))
}

/// The `ExportLogsServiceResponse`: empty when everything was a stored sync
/// event with only declared dimensions, `partial_success` otherwise (with
/// `rejected_log_records` 0 when records were only skipped or had
/// undeclared dimensions removed: OTLP's way to send a warning).
fn answer(encoding: Encoding, rejected: &[Rejected], skipped: usize, ignored: &IgnoredDimensions) -> Response {
    let message = partial_success_message(rejected, skipped, ignored);
    let partial_success = (!rejected.is_empty() || !message.is_empty()).then(|| ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(rejected.len()).unwrap_or(i64::MAX),
        error_message: message,
    });
    match encoding {
        Encoding::Protobuf => {
            let body = ExportLogsServiceResponse { partial_success }.encode_to_vec();
            let content_type = HeaderValue::from_static("application/x-protobuf");
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        // proto3 JSON: int64 as a string, default (empty) messages omitted.
        Encoding::Json => Json(match partial_success {
            None => json!({}),
            Some(p) => json!({"partialSuccess": {
                "rejectedLogRecords": p.rejected_log_records.to_string(),
                "errorMessage": p.error_message,
            }}),
        })
        .into_response(),
    }
}

fn partial_success_message(rejected: &[Rejected], skipped: usize, ignored: &IgnoredDimensions) -> String {
    let mut parts = Vec::new();
    if !rejected.is_empty() {
        let listed: Vec<String> = rejected
            .iter()
            .take(MESSAGE_REJECTIONS)
            .map(|r| format!("{} {}: {}", r.location, r.attribute, r.reason))
            .collect();
        let more = rejected.len().saturating_sub(MESSAGE_REJECTIONS);
        let more = if more > 0 { format!("; and {more} more") } else { String::new() };
        parts.push(format!("{} sync log record(s) rejected: {}{more}", rejected.len(), listed.join("; ")));
    }
    if skipped > 0 {
        parts.push(format!("{skipped} log record(s) without sync.* attributes skipped: not sync events"));
    }
    if !ignored.is_empty() {
        let listed: Vec<String> =
            ignored.iter().map(|(key, records)| format!("sync.dimension.{key} in {records} record(s)")).collect();
        parts.push(format!(
            "undeclared dimensions ignored (stored without them; the project declares the dimensions it keeps): {}",
            listed.join(", ")
        ));
    }
    parts.join(". ")
}

/// Maps every record: sync events validated, the others skipped.
/// The OTLP decoding and mapping of `/v1/logs` without the HTTP around it,
/// for the fuzz target (`fuzz/fuzz_targets/otlp_logs.rs`) and its regression
/// inputs: decodes `body` as protobuf or JSON and maps every record, and
/// returns how many became events. Must never panic, whatever the bytes.
#[doc(hidden)]
pub fn decode_and_map_for_fuzzing(body: &[u8], protobuf: bool) -> usize {
    let logs = if protobuf { logs_from_protobuf(body) } else { logs_from_json(body) };
    logs.map_or(0, |logs| map_logs(&logs).events.len())
}

fn map_logs(logs: &Logs) -> Mapped {
    let mut mapped = Mapped::default();
    for record in &logs.records {
        if record.attributes.is_empty() {
            mapped.skipped += 1;
            continue;
        }
        let resource = logs.resources.get(record.location.resource).map_or(&[][..], Vec::as_slice);
        match to_event(record, resource) {
            Ok(event) => mapped.events.push((record.location, event)),
            Err((attribute, reason)) => mapped.rejected.push(Rejected { location: record.location, attribute, reason }),
        }
    }
    mapped
}

/// The first non-null value of `key`.
fn lookup<'a>(attributes: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|(k, v)| k == key && !v.is_null()).map(|(_, v)| v)
}

/// One record as a SyncEvent, or the attribute at fault and why.
fn to_event(record: &Record, resource: &[(String, Value)]) -> Result<SyncEvent, (String, String)> {
    let mut object = Map::new();
    // Field name → where its value came from, for rejection messages.
    let mut sources: Vec<(&'static str, String)> = Vec::new();
    for f in FIELDS {
        let found = lookup(&record.attributes, f.attribute)
            .map(|v| (v, f.attribute.to_string()))
            .or_else(|| lookup(resource, f.attribute).map(|v| (v, format!("resource {}", f.attribute))))
            .or_else(|| f.semconv.and_then(|key| lookup(resource, key).map(|v| (v, format!("resource {key}")))));
        if let Some((value, source)) = found {
            object.insert(f.name.to_string(), coerce(f.kind, value.clone()));
            sources.push((f.name, source));
        }
    }
    // Dimensions: the resource's, then the record's, so the record's value
    // wins for a name both carry. Where each came from names a refusal.
    let mut dimensions = Map::new();
    let mut dimension_sources: Vec<(String, String)> = Vec::new();
    for (attributes, from) in [(resource, "resource "), (&record.attributes[..], "")] {
        for (key, value) in attributes {
            let Some(name) = key.strip_prefix(DIMENSION_PREFIX) else { continue };
            if value.is_null() {
                continue;
            }
            dimensions.insert(name.to_string(), value.clone());
            dimension_sources.retain(|(n, _)| n != name);
            dimension_sources.push((name.to_string(), format!("{from}{key}")));
        }
    }
    if !dimensions.is_empty() {
        object.insert("dimensions".into(), Value::Object(dimensions));
    }
    if !object.contains_key("occurred_at") {
        let time = [(record.time_unix_nano, "timeUnixNano"), (record.observed_time_unix_nano, "observedTimeUnixNano")]
            .into_iter()
            .find(|(nanos, _)| *nanos != 0);
        if let Some((nanos, source)) = time {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .ok_or_else(|| (source.to_string(), format!("{nanos} is not a representable time")))?;
            object.insert("occurred_at".into(), Value::String(at));
            sources.push(("occurred_at", source.to_string()));
        }
    }
    SyncEvent::from_json(Value::Object(object)).map_err(|(field, reason)| {
        if field == "dimensions" {
            // The validator's reason names the dimension at fault as
            // `NAME: ...` or `key "NAME" ...`; a count names none.
            let source = dimension_sources
                .iter()
                .find(|(name, _)| reason.starts_with(&format!("{name}: ")) || reason.contains(&format!("{name:?}")))
                .map_or_else(|| format!("{DIMENSION_PREFIX}*"), |(_, source)| source.clone());
            return (source, reason);
        }
        match sources.iter().find(|(name, _)| *name == field) {
            Some((_, source)) => (source.clone(), reason),
            None if field == "occurred_at" => (
                "sync.occurred_at".into(),
                format!(
                    "{reason}: neither sync.occurred_at nor the record's timeUnixNano or observedTimeUnixNano is set"
                ),
            ),
            None => (format!("{SYNC_PREFIX}{field}"), reason),
        }
    })
}

/// Reads a value leniently where that is unambiguous (see the module docs);
/// anything else is left for the validator to refuse.
fn coerce(kind: Kind, value: Value) -> Value {
    match (kind, value) {
        (Kind::Integer, Value::Number(n)) if n.is_f64() => match n.as_f64() {
            // Whole and within ±2^53: the cast is exact.
            Some(f) if f.fract() == 0.0 && f.abs() <= MAX_EXACT_DOUBLE => Value::from(f as i64),
            _ => Value::Number(n),
        },
        (Kind::Integer, Value::String(s)) => {
            let text = s.trim();
            text.parse::<u64>()
                .map(Value::from)
                .or_else(|_| text.parse::<i64>().map(Value::from))
                .unwrap_or(Value::String(s))
        }
        (Kind::Number, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::Number::from_f64(f).map_or(Value::String(s), Value::Number),
            _ => Value::String(s),
        },
        (Kind::Bool, Value::String(s)) if s == "true" || s == "false" => Value::Bool(s == "true"),
        // The JSON text of the array, for SDKs whose attributes cannot nest.
        (Kind::Details, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(array @ Value::Array(_)) => coerce(Kind::Details, array),
            _ => Value::String(s),
        },
        // Each entry's count as any integer field is read.
        (Kind::Details, Value::Array(entries)) => Value::Array(
            entries
                .into_iter()
                .map(|entry| match entry {
                    Value::Object(mut detail) => {
                        if let Some(count) = detail.remove("count") {
                            detail.insert("count".into(), coerce(Kind::Integer, count));
                        }
                        Value::Object(detail)
                    }
                    other => other,
                })
                .collect(),
        ),
        (_, value) => value,
    }
}

// ---------------------------------------------------------------- protobuf

fn logs_from_protobuf(body: &[u8]) -> Result<Logs, AppError> {
    let request = ExportLogsServiceRequest::decode(body)
        .map_err(|e| AppError::BadRequest(format!("not an OTLP ExportLogsServiceRequest protobuf: {e}")))?;
    let mut logs = Logs::default();
    for (r, resource_logs) in request.resource_logs.into_iter().enumerate() {
        let resource = resource_logs.resource.map(|res| proto_attributes(res.attributes, is_resource_key));
        logs.resources.push(resource.unwrap_or_default());
        for (s, scope_logs) in resource_logs.scope_logs.into_iter().enumerate() {
            for (l, record) in scope_logs.log_records.into_iter().enumerate() {
                logs.records.push(Record {
                    location: Location { resource: r, scope: s, record: l },
                    attributes: proto_attributes(record.attributes, is_record_key),
                    time_unix_nano: record.time_unix_nano,
                    observed_time_unix_nano: record.observed_time_unix_nano,
                });
            }
        }
    }
    Ok(logs)
}

fn proto_attributes(attributes: Vec<KeyValue>, keep: fn(&str) -> bool) -> Attributes {
    attributes
        .into_iter()
        .filter(|kv| keep(&kv.key))
        .map(|kv| (kv.key, kv.value.map_or(Value::Null, proto_value)))
        .collect()
}

fn proto_value(value: AnyValue) -> Value {
    use any_value::Value as V;
    match value.value {
        None | Some(V::StringValueStrindex(_)) => Value::Null,
        Some(V::StringValue(s)) => Value::String(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::from(i),
        // NaN and infinities are no JSON number: as text they are refused
        // with "got a string" instead of vanishing.
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        Some(V::ArrayValue(array)) => Value::Array(array.values.into_iter().map(proto_value).collect()),
        Some(V::KvlistValue(list)) => Value::Object(
            list.values.into_iter().map(|kv| (kv.key, kv.value.map_or(Value::Null, proto_value))).collect(),
        ),
        // No field takes bytes; an empty array keeps them refused.
        Some(V::BytesValue(_)) => Value::Array(Vec::new()),
    }
}

// -------------------------------------------------------------------- JSON

/// A member by its lowerCamelCase name or its proto name; `null` is absent.
fn member<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake)).filter(|v| !v.is_null())
}

fn bad_json(at: &str, what: &str) -> AppError {
    AppError::BadRequest(format!("{}: {what}", at.trim_end_matches('.')))
}

fn json_object(value: &Value, at: impl FnOnce() -> String) -> Result<&Map<String, Value>, AppError> {
    value.as_object().ok_or_else(|| bad_json(&at(), "expected an object"))
}

/// A repeated member: absent or `null` is empty.
fn json_array<'a>(
    object: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
    at: impl FnOnce() -> String,
) -> Result<&'a [Value], AppError> {
    match member(object, camel, snake) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad_json(&format!("{}{camel}", at()), "expected an array")),
    }
}

/// A fixed64 time: a string of digits (the OTLP JSON form) or a number.
fn json_nanos(
    object: &Map<String, Value>,
    camel: &str,
    snake: &str,
    at: impl FnOnce() -> String,
) -> Result<u64, AppError> {
    let nanos = match member(object, camel, snake) {
        None => return Ok(0),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(_) => None,
    };
    nanos.ok_or_else(|| bad_json(&format!("{}{camel}", at()), "expected unix nanoseconds as a string of digits"))
}

fn logs_from_json(body: &[u8]) -> Result<Logs, AppError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
    let root = json_object(&root, || "the body".into())?;
    let mut logs = Logs::default();
    for (r, resource_logs) in json_array(root, "resourceLogs", "resource_logs", String::new)?.iter().enumerate() {
        let at_resource = || format!("resourceLogs[{r}].");
        let resource_logs = json_object(resource_logs, || format!("resourceLogs[{r}]"))?;
        let resource = match member(resource_logs, "resource", "resource") {
            None => Vec::new(),
            Some(resource) => {
                let at = || format!("{}resource.", at_resource());
                json_attributes(json_object(resource, at)?, is_resource_key, at)?
            }
        };
        logs.resources.push(resource);
        for (s, scope_logs) in json_array(resource_logs, "scopeLogs", "scope_logs", at_resource)?.iter().enumerate() {
            let at_scope = || format!("{}scopeLogs[{s}].", at_resource());
            let scope_logs = json_object(scope_logs, at_scope)?;
            for (l, record) in json_array(scope_logs, "logRecords", "log_records", at_scope)?.iter().enumerate() {
                let at = || format!("{}logRecords[{l}].", at_scope());
                let record = json_object(record, at)?;
                logs.records.push(Record {
                    location: Location { resource: r, scope: s, record: l },
                    attributes: json_attributes(record, is_record_key, at)?,
                    time_unix_nano: json_nanos(record, "timeUnixNano", "time_unix_nano", at)?,
                    observed_time_unix_nano: json_nanos(record, "observedTimeUnixNano", "observed_time_unix_nano", at)?,
                });
            }
        }
    }
    Ok(logs)
}

/// The `attributes` of `object` whose key passes `keep`.
fn json_attributes(
    object: &Map<String, Value>,
    keep: fn(&str) -> bool,
    at: impl Fn() -> String,
) -> Result<Attributes, AppError> {
    let mut attributes = Vec::new();
    for (i, kv) in json_array(object, "attributes", "attributes", &at)?.iter().enumerate() {
        let at_kv = || format!("{}attributes[{i}]", at());
        let kv = json_object(kv, at_kv)?;
        let Some(Value::String(key)) = kv.get("key") else {
            return Err(bad_json(&format!("{}.key", at_kv()), "expected a string"));
        };
        if keep(key) {
            attributes.push((key.clone(), kv.get("value").map_or(Value::Null, json_value)));
        }
    }
    Ok(attributes)
}

/// An OTLP JSON `AnyValue`. Never fails: a value of the wrong shape is kept
/// as sent, so only a record that uses it as a field is refused, with the
/// validator's reason.
fn json_value(value: &Value) -> Value {
    let Value::Object(any) = value else { return value.clone() };
    if let Some(s) = member(any, "stringValue", "string_value") {
        return s.clone();
    }
    if let Some(b) = member(any, "boolValue", "bool_value") {
        return b.clone();
    }
    if let Some(i) = member(any, "intValue", "int_value") {
        // int64 is a string in OTLP JSON; a number is accepted too.
        return match i {
            Value::String(s) => s.parse::<i64>().map_or_else(|_| i.clone(), Value::from),
            other => other.clone(),
        };
    }
    if let Some(d) = member(any, "doubleValue", "double_value") {
        return match d {
            Value::String(s) => {
                s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(|| d.clone(), Value::Number)
            }
            other => other.clone(),
        };
    }
    if let Some(array) = member(any, "arrayValue", "array_value") {
        let values = array.as_object().and_then(|a| a.get("values")).and_then(Value::as_array);
        return Value::Array(values.map(|v| v.iter().map(json_value).collect()).unwrap_or_default());
    }
    if let Some(list) = member(any, "kvlistValue", "kvlist_value") {
        let values = list.as_object().and_then(|l| l.get("values")).and_then(Value::as_array);
        let entries = values.into_iter().flatten().filter_map(|kv| {
            let kv = kv.as_object()?;
            let key = kv.get("key")?.as_str()?.to_string();
            Some((key, kv.get("value").map_or(Value::Null, json_value)))
        });
        return Value::Object(entries.collect());
    }
    if member(any, "bytesValue", "bytes_value").is_some() {
        return Value::Array(Vec::new());
    }
    Value::Null
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    const NANOS: u64 = 1_795_000_000_123_456_789;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn s(text: &str) -> any_value::Value {
        any_value::Value::StringValue(text.into())
    }

    fn proto_request(resource: Vec<KeyValue>, records: Vec<Vec<KeyValue>>) -> Vec<u8> {
        let log_records = records
            .into_iter()
            .map(|attributes| LogRecord { time_unix_nano: NANOS, attributes, ..Default::default() })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: resource, ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "sync".into(), ..Default::default() }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn sync_record(event_id: &str, duration: any_value::Value) -> Vec<KeyValue> {
        vec![
            kv("sync.event_id", s(event_id)),
            kv("sync.success", any_value::Value::BoolValue(true)),
            kv("sync.duration_ms", duration),
            kv("sync.network", s("wifi")),
            kv("sync.sample_rate", any_value::Value::DoubleValue(0.5)),
            kv("http.route", s("/ignored")),
        ]
    }

    const ID1: &str = "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a";
    const ID2: &str = "0b0e6a4c-5d55-4c8a-8d1e-0d5f0f6f9a11";

    #[test]
    fn protobuf_records_map_with_resource_and_semconv_fallbacks() {
        let resource = vec![
            kv("sync.device_id", s("pixel-1")),
            kv("device.id", s("loses-to-sync.device_id")),
            kv("service.version", s("2.3.0")),
            kv("os.type", s("android")),
            kv("os.version", s("14")),
            kv("device.model.identifier", s("Pixel 8")),
        ];
        let mut own_os = sync_record(ID2, any_value::Value::IntValue(20));
        own_os.push(kv("sync.os", s("ios")));
        let plain_log = vec![kv("message", s("hello"))];
        let body = proto_request(resource, vec![sync_record(ID1, any_value::Value::IntValue(840)), own_os, plain_log]);
        let mapped = map_logs(&logs_from_protobuf(&body).unwrap());
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        assert_eq!(mapped.skipped, 1);
        let e = &mapped.events[0].1;
        assert_eq!(e.event_id.to_string(), ID1);
        assert_eq!(e.device_id, "pixel-1");
        assert_eq!(e.app_version, "2.3.0");
        assert_eq!(e.os, "android");
        assert_eq!(e.os_version.as_deref(), Some("14"));
        assert_eq!(e.device_model.as_deref(), Some("Pixel 8"));
        assert_eq!(e.duration_ms, 840);
        assert_eq!(e.sample_rate, 0.5);
        assert_eq!(e.occurred_at.unix_timestamp_nanos(), i128::from(NANOS));
        assert_eq!(mapped.events[1].1.os, "ios", "the record's own attribute wins over the resource");
    }

    #[test]
    fn otlp_json_as_sdks_send_it_maps_like_protobuf() {
        let body = json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "notes"}},
                {"key": "service.version", "value": {"stringValue": "2.3.0"}},
                {"key": "device.id", "value": {"stringValue": "pixel-1"}},
                {"key": "os.type", "value": {"stringValue": "android"}},
                {"key": "tags", "value": {"arrayValue": {}}},
            ], "droppedAttributesCount": 0},
            "scopeLogs": [{"scope": {"name": "sync"}, "logRecords": [{
                "timeUnixNano": NANOS.to_string(),
                "observedTimeUnixNano": "1795000000200000000",
                "severityNumber": 9, "severityText": "INFO",
                "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": null,
                "body": {"stringValue": "sync finished"},
                "attributes": [
                    {"key": "sync.event_id", "value": {"stringValue": ID1}},
                    {"key": "sync.success", "value": {"boolValue": true}},
                    {"key": "sync.duration_ms", "value": {"intValue": "840"}},
                    {"key": "sync.conflicts", "value": {"intValue": 2}},
                    {"key": "sync.network", "value": {"stringValue": "wifi"}},
                    {"key": "sync.sample_rate", "value": {"doubleValue": "0.5"}},
                    {"key": "sync.last_success_at", "value": {"stringValue": "2026-11-21T09:55:00Z"}},
                    {"key": "broken", "value": {"intValue": "not a number"}},
                ]
            }]}]
        }]});
        let mapped = map_logs(&logs_from_json(&serde_json::to_vec(&body).unwrap()).unwrap());
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        let e = &mapped.events[0].1;
        assert_eq!((e.duration_ms, e.conflicts, e.sample_rate), (840, 2, 0.5));
        assert_eq!((e.device_id.as_str(), e.app_version.as_str(), e.os.as_str()), ("pixel-1", "2.3.0", "android"));
        assert_eq!(e.occurred_at.unix_timestamp_nanos(), i128::from(NANOS));
        assert!(e.last_success_at.is_some());

        let proto = proto_request(
            vec![kv("service.version", s("2.3.0")), kv("device.id", s("pixel-1")), kv("os.type", s("android"))],
            vec![vec![
                kv("sync.event_id", s(ID1)),
                kv("sync.success", any_value::Value::BoolValue(true)),
                kv("sync.duration_ms", any_value::Value::IntValue(840)),
                kv("sync.conflicts", any_value::Value::IntValue(2)),
                kv("sync.network", s("wifi")),
                kv("sync.sample_rate", any_value::Value::DoubleValue(0.5)),
                kv("sync.last_success_at", s("2026-11-21T09:55:00Z")),
                kv("tags", any_value::Value::ArrayValue(ArrayValue::default())),
            ]],
        );
        assert_eq!(map_logs(&logs_from_protobuf(&proto).unwrap()).events, mapped.events);
    }

    #[test]
    fn proto_field_names_are_read_too() {
        let body = json!({"resource_logs": [{"scope_logs": [{"log_records": [{
            "time_unix_nano": NANOS,
            "attributes": [{"key": "sync.device_id", "value": {"string_value": "d1"}}],
        }]}]}]});
        let logs = logs_from_json(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(logs.records.len(), 1);
        assert_eq!(logs.records[0].time_unix_nano, NANOS);
        assert_eq!(logs.records[0].attributes, vec![("sync.device_id".to_string(), json!("d1"))]);
    }

    #[test]
    fn a_bad_record_is_rejected_by_attribute_and_its_neighbours_pass() {
        let body = proto_request(
            vec![kv("sync.device_id", s("d1")), kv("sync.app_version", s("2.3.0")), kv("sync.os", s("ios"))],
            vec![
                sync_record(ID1, any_value::Value::IntValue(10)),
                sync_record(ID2, s("slow")),
                vec![kv("sync.event_id", s("6f1c1a7e-2f7b-4c1e-9a53-000000000000")), kv("sync.success", s("maybe"))],
            ],
        );
        let mapped = map_logs(&logs_from_protobuf(&body).unwrap());
        assert_eq!(mapped.events.len(), 1);
        let got: Vec<(String, &str, &str)> =
            mapped.rejected.iter().map(|r| (r.location.to_string(), r.attribute.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (
                    "resourceLogs[0].scopeLogs[0].logRecords[1]".into(),
                    "sync.duration_ms",
                    "expected a non-negative integer, got a string"
                ),
                (
                    "resourceLogs[0].scopeLogs[0].logRecords[2]".into(),
                    "sync.success",
                    "expected a boolean, got a string"
                ),
            ]
        );
    }

    fn kvlist(entries: Vec<KeyValue>) -> any_value::Value {
        any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList { values: entries })
    }

    fn detail(entity: &str, kind: &str, resolution: &str, count: any_value::Value) -> AnyValue {
        AnyValue {
            value: Some(kvlist(vec![
                kv("entity", s(entity)),
                kv("kind", s(kind)),
                kv("resolution", s(resolution)),
                kv("count", count),
            ])),
        }
    }

    #[test]
    fn conflict_details_queue_time_and_dimensions_map_from_nested_values_and_prefixed_attributes() {
        let resource = vec![
            kv("sync.device_id", s("pixel-1")),
            kv("sync.app_version", s("2.3.0")),
            kv("sync.os", s("android")),
            kv("sync.dimension.engine", s("from-resource")),
            kv("sync.dimension.region", s("eu-west")),
        ];
        let mut record = sync_record(ID1, any_value::Value::IntValue(840));
        record.extend([
            kv(
                "sync.conflict_details",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        detail("todo", "update_update", "last_write_wins", any_value::Value::IntValue(4)),
                        // A bridge that stringified the count.
                        detail("list", "update_delete", "crdt_merge", s("1")),
                    ],
                }),
            ),
            kv("sync.queue_oldest_at", s("2026-11-21T09:55:00.250Z")),
            kv("sync.dimension.engine", s("powersync")),
            kv("sync.dimension.plan", s("pro")),
        ]);
        // The same details as JSON text, for SDKs whose attributes cannot nest.
        let mut as_text = sync_record(ID2, any_value::Value::IntValue(20));
        as_text.push(kv(
            "sync.conflict_details",
            s(r#"[{"entity": "todo", "kind": "insert_insert", "resolution": "server_wins", "count": "2"}]"#),
        ));
        let mapped = map_logs(&logs_from_protobuf(&proto_request(resource, vec![record, as_text])).unwrap());
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        let e = &mapped.events[0].1;
        let details: Vec<(&str, &str, &str, u32)> = e
            .conflict_details
            .iter()
            .map(|d| (d.entity.as_str(), d.kind.as_str(), d.resolution.as_str(), d.count))
            .collect();
        assert_eq!(
            details,
            [("todo", "update_update", "last_write_wins", 4), ("list", "update_delete", "crdt_merge", 1)]
        );
        assert_eq!(e.conflicts, 5, "an absent conflicts is the details' sum, as on /v1/events");
        let oldest = OffsetDateTime::parse("2026-11-21T09:55:00.250Z", &Rfc3339).unwrap();
        assert_eq!(e.queue_oldest_at, Some(oldest));
        let dimensions: Vec<(&str, &str)> = e.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(dimensions, [("engine", "powersync"), ("plan", "pro"), ("region", "eu-west")], "the record wins");
        let text = &mapped.events[1].1;
        assert_eq!(text.conflict_details.len(), 1);
        assert_eq!((text.conflict_details[0].count, text.conflicts), (2, 2));
        assert_eq!(text.dimensions.len(), 2, "the resource's dimensions alone");
    }

    #[test]
    fn otlp_json_conflict_details_and_dimensions_map_like_protobuf() {
        let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
            "timeUnixNano": NANOS.to_string(),
            "attributes": [
                {"key": "sync.event_id", "value": {"stringValue": ID1}},
                {"key": "sync.device_id", "value": {"stringValue": "pixel-1"}},
                {"key": "sync.app_version", "value": {"stringValue": "2.3.0"}},
                {"key": "sync.os", "value": {"stringValue": "ios"}},
                {"key": "sync.success", "value": {"boolValue": false}},
                {"key": "sync.duration_ms", "value": {"intValue": "1200"}},
                {"key": "sync.conflicts", "value": {"intValue": "3"}},
                {"key": "sync.conflict_details", "value": {"arrayValue": {"values": [{"kvlistValue": {"values": [
                    {"key": "entity", "value": {"stringValue": "note"}},
                    {"key": "kind", "value": {"stringValue": "constraint"}},
                    {"key": "resolution", "value": {"stringValue": "manual"}},
                    {"key": "count", "value": {"intValue": "3"}}
                ]}}]}}},
                {"key": "sync.queue_oldest_at", "value": {"stringValue": "2026-11-21T09:55:00Z"}},
                {"key": "sync.dimension.plan", "value": {"stringValue": "free"}}
            ]
        }]}]}]});
        let mapped = map_logs(&logs_from_json(body.to_string().as_bytes()).unwrap());
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        let e = &mapped.events[0].1;
        assert_eq!(e.conflict_details.len(), 1);
        assert_eq!((e.conflict_details[0].entity.as_str(), e.conflict_details[0].count), ("note", 3));
        assert_eq!(e.conflict_details[0].resolution.as_str(), "manual");
        assert!(e.queue_oldest_at.is_some());
        assert_eq!(e.dimensions.get("plan").map(String::as_str), Some("free"));
    }

    /// Each bad value refused through OTLP with exactly the reason the JSON
    /// API gives for the same event, named by the attribute that carried it.
    #[test]
    fn bad_conflict_details_queue_times_and_dimensions_are_refused_with_the_json_apis_reasons() {
        let base = || {
            let mut record = sync_record(ID1, any_value::Value::IntValue(840));
            record.extend([kv("sync.device_id", s("d")), kv("sync.app_version", s("1")), kv("sync.os", s("ios"))]);
            record
        };
        let json_base = || {
            json!({"event_id": ID1, "device_id": "d", "app_version": "1", "os": "ios", "success": true,
                   "duration_ms": 840, "network": "wifi", "sample_rate": 0.5,
                   "occurred_at": OffsetDateTime::from_unix_timestamp_nanos(i128::from(NANOS)).unwrap().format(&Rfc3339).unwrap()})
        };
        let details = |entries: Vec<AnyValue>| any_value::Value::ArrayValue(ArrayValue { values: entries });
        let int = any_value::Value::IntValue;
        let cases: Vec<(Vec<KeyValue>, Value, &str)> = vec![
            (
                vec![kv("sync.conflict_details", details(vec![detail("todo", "merge", "manual", int(1))]))],
                json!({"conflict_details": [{"entity": "todo", "kind": "merge", "resolution": "manual", "count": 1}]}),
                "sync.conflict_details",
            ),
            (
                vec![kv("sync.conflict_details", details(vec![detail("todo", "other", "custom", int(0))]))],
                json!({"conflict_details": [{"entity": "todo", "kind": "other", "resolution": "custom", "count": 0}]}),
                "sync.conflict_details",
            ),
            (
                vec![
                    kv("sync.conflicts", int(1)),
                    kv("sync.conflict_details", details(vec![detail("todo", "other", "custom", int(2))])),
                ],
                json!({"conflicts": 1, "conflict_details": [{"entity": "todo", "kind": "other", "resolution": "custom", "count": 2}]}),
                "sync.conflict_details",
            ),
            (
                vec![kv("sync.conflict_details", s("not json"))],
                json!({"conflict_details": "not json"}),
                "sync.conflict_details",
            ),
            (
                vec![kv("sync.queue_oldest_at", s("yesterday"))],
                json!({"queue_oldest_at": "yesterday"}),
                "sync.queue_oldest_at",
            ),
            (vec![kv("sync.dimension.Plan", s("pro"))], json!({"dimensions": {"Plan": "pro"}}), "sync.dimension.Plan"),
            (
                vec![kv("sync.dimension.plan", s(&"x".repeat(65)))],
                json!({"dimensions": {"plan": "x".repeat(65)}}),
                "sync.dimension.plan",
            ),
            (vec![kv("sync.dimension.plan", int(3))], json!({"dimensions": {"plan": 3}}), "sync.dimension.plan"),
            (
                (0..9).map(|i| kv(&format!("sync.dimension.d{i}"), s("x"))).collect(),
                json!({"dimensions": (0..9).map(|i| (format!("d{i}"), json!("x"))).collect::<Map<String, Value>>()}),
                "sync.dimension.*",
            ),
        ];
        for (attributes, json_fields, attribute) in cases {
            let mut record = base();
            record.extend(attributes);
            let mapped = map_logs(&logs_from_protobuf(&proto_request(Vec::new(), vec![record])).unwrap());
            let mut event = json_base();
            event.as_object_mut().unwrap().extend(json_fields.as_object().unwrap().clone());
            let (_, want) = SyncEvent::from_json(event.clone()).unwrap_err();
            assert_eq!(mapped.rejected.len(), 1, "{event}: {:?}", mapped.events);
            assert_eq!(mapped.rejected[0].reason, want, "{event}");
            assert_eq!(mapped.rejected[0].attribute, attribute, "{event}");
        }
    }

    #[test]
    fn a_field_from_the_resource_is_named_as_such_when_refused() {
        let body = proto_request(
            vec![kv("device.id", s("d1")), kv("service.version", s("")), kv("os.type", s("linux"))],
            vec![sync_record(ID1, any_value::Value::IntValue(10))],
        );
        let mapped = map_logs(&logs_from_protobuf(&body).unwrap());
        assert_eq!(mapped.rejected[0].attribute, "resource service.version");
        assert_eq!(mapped.rejected[0].reason, "must not be empty");
    }

    #[test]
    fn occurred_at_prefers_the_attribute_then_time_then_observed_time() {
        let record = |attributes: Attributes, time: u64, observed: u64| Record {
            location: Location { resource: 0, scope: 0, record: 0 },
            attributes,
            time_unix_nano: time,
            observed_time_unix_nano: observed,
        };
        let base = || -> Attributes {
            vec![
                ("sync.event_id".into(), json!(ID1)),
                ("sync.device_id".into(), json!("d1")),
                ("sync.success".into(), json!(true)),
                ("sync.duration_ms".into(), json!(1)),
                ("sync.app_version".into(), json!("1")),
                ("sync.os".into(), json!("web")),
            ]
        };
        let mut with_attribute = base();
        with_attribute.push(("sync.occurred_at".into(), json!("2026-11-21T10:00:00Z")));
        let at = |r: &Record| to_event(r, &[]).map(|e| e.occurred_at.unix_timestamp_nanos());
        assert_eq!(at(&record(with_attribute, NANOS, 7)), Ok(1_795_255_200_000_000_000));
        assert_eq!(at(&record(base(), NANOS, 7)), Ok(i128::from(NANOS)));
        assert_eq!(at(&record(base(), 0, 7)), Ok(7));
        let (attribute, reason) = at(&record(base(), 0, 0)).unwrap_err();
        assert_eq!(attribute, "sync.occurred_at");
        assert!(reason.starts_with("missing required field"), "{reason}");
    }

    #[test]
    fn values_are_read_leniently_only_where_unambiguous() {
        assert_eq!(coerce(Kind::Integer, json!("840")), json!(840));
        assert_eq!(coerce(Kind::Integer, json!(840.0)), json!(840));
        assert_eq!(coerce(Kind::Integer, json!("-5")), json!(-5));
        assert_eq!(coerce(Kind::Integer, json!(840.5)), json!(840.5));
        assert_eq!(coerce(Kind::Integer, json!("slow")), json!("slow"));
        assert_eq!(coerce(Kind::Number, json!("0.25")), json!(0.25));
        assert_eq!(coerce(Kind::Number, json!("NaN")), json!("NaN"));
        assert_eq!(coerce(Kind::Bool, json!("true")), json!(true));
        assert_eq!(coerce(Kind::Bool, json!("yes")), json!("yes"));
        assert_eq!(coerce(Kind::Text, json!(12)), json!(12));
        assert_eq!(proto_value(AnyValue { value: Some(any_value::Value::DoubleValue(f64::NAN)) }), json!("NaN"));
        assert_eq!(json_value(&json!({})), Value::Null);
        assert_eq!(json_value(&json!({"intValue": "12x"})), json!("12x"));
    }

    #[test]
    fn a_body_that_is_not_an_otlp_logs_request_is_a_400() {
        let detail = |r: Result<Logs, AppError>| match r {
            Err(AppError::BadRequest(detail)) => detail,
            other => panic!("expected a 400, got {other:?}"),
        };
        assert!(detail(logs_from_protobuf(b"\xff\xff\xff")).contains("protobuf"));
        assert!(detail(logs_from_json(b"{")).starts_with("invalid JSON"));
        assert_eq!(detail(logs_from_json(b"[]")), "the body: expected an object");
        assert_eq!(detail(logs_from_json(br#"{"resourceLogs": {}}"#)), "resourceLogs: expected an array");
        let bad_time = br#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}"#;
        assert_eq!(
            detail(logs_from_json(bad_time)),
            "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano: expected unix nanoseconds as a string of digits"
        );
        let no_key = br#"{"resourceLogs": [{"resource": {"attributes": [{"value": {}}]}}]}"#;
        assert_eq!(detail(logs_from_json(no_key)), "resourceLogs[0].resource.attributes[0].key: expected a string");
    }

    #[test]
    fn the_message_lists_the_first_rejections_and_the_skipped_count() {
        let rejected: Vec<Rejected> = (0..7)
            .map(|i| Rejected {
                location: Location { resource: 0, scope: 0, record: i },
                attribute: "sync.duration_ms".into(),
                reason: "bad".into(),
            })
            .collect();
        let message = partial_success_message(&rejected, 3, &IgnoredDimensions::new());
        assert!(message.starts_with(
            "7 sync log record(s) rejected: resourceLogs[0].scopeLogs[0].logRecords[0] sync.duration_ms: bad; "
        ));
        assert!(message.contains("logRecords[4] sync.duration_ms: bad; and 2 more. 3 log record(s)"), "{message}");
        assert_eq!(partial_success_message(&[], 0, &IgnoredDimensions::new()), "");
    }

    #[test]
    fn the_message_names_each_undeclared_dimension_with_its_records() {
        let ignored: IgnoredDimensions = [("region".to_string(), 2), ("tier".to_string(), 1)].into();
        assert_eq!(
            partial_success_message(&[], 0, &ignored),
            "undeclared dimensions ignored (stored without them; the project declares the dimensions it keeps): \
             sync.dimension.region in 2 record(s), sync.dimension.tier in 1 record(s)"
        );
    }

    /// The inputs kept from fuzzing (`fuzz/regressions/otlp_logs`, first
    /// byte even: protobuf, odd: JSON) decode to an answer without a panic.
    #[test]
    fn the_fuzzing_regression_inputs_decode_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/otlp_logs");
        let mut events = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let (first, body) = bytes.split_first().unwrap();
            events.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                decode_and_map_for_fuzzing(body, first % 2 == 0),
            ));
        }
        events.sort();
        assert!(events.len() >= 4, "the regression inputs are in {}", dir.display());
        assert!(events.contains(&("valid-json.bin".to_string(), 1)), "{events:?}");
    }
}
