//! The wire format: `{"sent_at": RFC3339, "events": [SyncEvent, ...]}`, plus an
//! optional `telemetry_loss` report from the probe.
//!
//! Events are validated one by one from untyped JSON so that a bad event is
//! rejected with its index, the field at fault and why, while its neighbours
//! go through. Unknown fields are ignored, so older collectors accept newer
//! probes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Error, Result};

/// The most events one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 5000;
/// The longest `error_message` accepted, in characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1024;
/// Longest `device_id`, in characters.
const MAX_DEVICE_ID_CHARS: usize = 128;
/// Longest short label (`app_version`, `os`, `os_version`, `device_model`, `sync_type`).
const MAX_LABEL_CHARS: usize = 128;
/// Most entries in one event's `conflict_details`.
pub const MAX_CONFLICT_DETAILS: usize = 32;
/// Longest `conflict_details[].entity`, in characters.
pub const MAX_ENTITY_CHARS: usize = 64;
/// Most custom `dimensions` on one event.
pub const MAX_DIMENSIONS: usize = 8;
/// Longest dimension key, in characters (`[a-z][a-z0-9_]*`: it is a URL
/// parameter name, `dim.NAME`).
pub const MAX_DIMENSION_KEY_CHARS: usize = 32;
/// Longest dimension value, in characters.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 64;
/// A sync attempt longer than this is a broken clock or counter, not a sync.
const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;
/// The smallest `sample_rate`: one event stands for at most 1,000 attempts,
/// so no single event (ingest keys ship inside apps: anyone may send one)
/// can outweigh a project's real traffic or make a weight infinite.
pub const MIN_SAMPLE_RATE: f64 = 0.001;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $(#[doc = $text] $variant),+ }

        impl $name {
            /// Every value, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the wire spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            fn expected() -> String {
                let all: &[&str] = &[$($text),+];
                format!("one of {}", all.join(", "))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The network the device was on when the attempt started.
    Network { Wifi => "wifi", Cellular => "cellular", Ethernet => "ethernet", Offline => "offline", Unknown => "unknown" }
);
string_enum!(
    /// What started the sync attempt.
    Trigger { AppOpen => "app_open", Resume => "resume", User => "user", LocalWrite => "local_write", Scheduled => "scheduled", Reconnect => "reconnect", Other => "other" }
);
string_enum!(
    /// Why a sync attempt failed.
    ErrorKind { Network => "network", Timeout => "timeout", Server => "server", Auth => "auth", Validation => "validation", Conflict => "conflict", Cancelled => "cancelled", Unknown => "unknown" }
);

string_enum!(
    /// How two versions of a record met during an attempt.
    ConflictKind { UpdateUpdate => "update_update", UpdateDelete => "update_delete", DeleteUpdate => "delete_update", InsertInsert => "insert_insert", Constraint => "constraint", Other => "other" }
);
string_enum!(
    /// How the sync engine settled a conflict. `last_write_wins`,
    /// `server_wins` and `client_wins` keep one side and drop the other: an
    /// edit may have been silently overwritten.
    ConflictResolution { LastWriteWins => "last_write_wins", ServerWins => "server_wins", ClientWins => "client_wins", CrdtMerge => "crdt_merge", Manual => "manual", Custom => "custom", Unresolved => "unresolved" }
);

impl ConflictResolution {
    /// Whether this resolution keeps one side and drops the other's edit.
    pub fn overwrites(self) -> bool {
        matches!(
            self,
            ConflictResolution::LastWriteWins | ConflictResolution::ServerWins | ConflictResolution::ClientWins
        )
    }
}

/// Conflicts of one kind on one entity type, settled one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictDetail {
    /// The entity (table, collection, record type) that conflicted, 1..=64 characters.
    pub entity: String,
    /// How the versions met.
    pub kind: ConflictKind,
    /// How the engine settled them.
    pub resolution: ConflictResolution,
    /// How many conflicts, at least 1.
    pub count: u32,
}

/// One sync attempt, as the device reported it, after validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncEvent {
    /// Idempotency key: the same event stored twice counts once.
    pub event_id: Uuid,
    /// Pseudonymous device identifier, 1..=128 characters.
    pub device_id: String,
    /// When the attempt started, on the device clock.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Whether the attempt succeeded.
    pub success: bool,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// Conflicts met during the attempt.
    #[serde(default)]
    pub conflicts: u32,
    /// Pending local mutations after the attempt.
    #[serde(default)]
    pub queue_depth: u32,
    /// The device's last successful sync before this attempt; `None` = never synced.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// Version of the app that made the attempt.
    pub app_version: String,
    /// Operating system family (`android`, `ios`, `windows`, ...).
    pub os: String,
    /// Operating system version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Network type at the start of the attempt.
    #[serde(default = "default_network")]
    pub network: Network,
    /// Device model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model: Option<String>,
    /// Kind of sync (`push`, `pull`, `full`, `delta`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_type: Option<String>,
    /// What started the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Why the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// Error text, at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Retries inside the attempt.
    #[serde(default)]
    pub retries: u32,
    /// Records pushed.
    #[serde(default)]
    pub records_up: u64,
    /// Records pulled.
    #[serde(default)]
    pub records_down: u64,
    /// Bytes pushed.
    #[serde(default)]
    pub bytes_up: u64,
    /// Bytes pulled.
    #[serde(default)]
    pub bytes_down: u64,
    /// The event stands for `1 / sample_rate` attempts (0.001 <= r <= 1).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    /// The attempt's conflicts by entity, kind and resolution (at most 32
    /// entries, adding up to at most `conflicts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict_details: Vec<ConflictDetail>,
    /// When the oldest still-pending local change was made, on the device
    /// clock; `None` when the queue is empty. Queue lag is `occurred_at`
    /// minus this (both device clock, so skew cancels).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub queue_oldest_at: Option<OffsetDateTime>,
    /// Up to 8 custom low-cardinality values the project segments by
    /// (`{"engine": "powersync", "plan": "pro"}`); keys `[a-z][a-z0-9_]*` of
    /// at most 32 characters, values 1..=64 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
}

fn default_network() -> Network {
    Network::Unknown
}

fn default_sample_rate() -> f64 {
    1.0
}

/// Why one event of a batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Position of the event in the batch's `events` array.
    pub index: usize,
    /// The field at fault (`""` when the event itself is not an object).
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

/// A batch after validation: the good events and the reasons for the bad ones.
#[derive(Debug, Clone)]
pub struct ParsedBatch {
    /// When the device sent the batch, on its clock.
    pub sent_at: OffsetDateTime,
    /// The valid events, each with its index in the batch.
    pub events: Vec<(usize, SyncEvent)>,
    /// The invalid events.
    pub rejected: Vec<Rejection>,
    /// What the sending probe reports it dropped, if it said.
    pub telemetry_loss: Option<TelemetryLossReport>,
}

/// Most reasons one telemetry-loss report may name.
const MAX_LOSS_REASONS: usize = 32;
/// Longest reason name, in characters.
const MAX_LOSS_REASON_CHARS: usize = 64;

/// A probe's report of the events it dropped before they could be sent: the
/// optional `telemetry_loss` member of a batch. Counts are cumulative since
/// the probe's storage was created, so a resent report is idempotent and a
/// lost one is repaired by the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryLossReport {
    /// The reporting device, 1..=128 characters.
    pub device_id: String,
    /// Dropped events by reason (`buffer_full`, `expired`, `rejected`, or any
    /// other lowercase identifier).
    pub dropped: std::collections::BTreeMap<String, u64>,
}

impl TelemetryLossReport {
    /// Validates the `telemetry_loss` member of a batch; the message names
    /// what is wrong.
    pub fn from_json(value: Value) -> std::result::Result<TelemetryLossReport, String> {
        let Value::Object(mut map) = value else {
            return Err("expected an object with device_id and dropped".into());
        };
        let device_id = match map.remove("device_id") {
            Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_DEVICE_ID_CHARS => id,
            Some(Value::String(_)) => return Err(format!("device_id: expected 1 to {MAX_DEVICE_ID_CHARS} characters")),
            Some(_) => return Err("device_id: expected a string".into()),
            None => return Err("device_id: missing".into()),
        };
        let reasons = match map.remove("dropped") {
            Some(Value::Object(reasons)) => reasons,
            Some(_) => return Err("dropped: expected an object of reason: count".into()),
            None => return Err("dropped: missing".into()),
        };
        if reasons.len() > MAX_LOSS_REASONS {
            return Err(format!("dropped: at most {MAX_LOSS_REASONS} reasons, got {}", reasons.len()));
        }
        let mut dropped = std::collections::BTreeMap::new();
        for (reason, count) in reasons {
            if !is_reason(&reason) {
                return Err(format!(
                    "dropped: reason {reason:?} is not a lowercase identifier of at most {MAX_LOSS_REASON_CHARS} characters"
                ));
            }
            let Some(count) = count.as_u64() else {
                return Err(format!("dropped.{reason}: expected a non-negative integer"));
            };
            dropped.insert(reason, count);
        }
        Ok(TelemetryLossReport { device_id, dropped })
    }
}

/// `[a-z][a-z0-9_]*`, bounded.
fn is_reason(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= MAX_LOSS_REASON_CHARS
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses and validates a JSON batch body of at most [`MAX_BATCH_EVENTS`]
/// events; see [`parse_batch_with_limit`].
pub fn parse_batch(body: &[u8]) -> Result<ParsedBatch> {
    parse_batch_with_limit(body, MAX_BATCH_EVENTS)
}

/// Parses and validates a JSON batch body of at most `max_events` events.
///
/// A body that is not a batch at all (not JSON, no `events` array, no valid
/// `sent_at`) is an [`Error::NotABatch`]; more than `max_events` events is an
/// [`Error::TooManyEvents`]; a bad event inside a good batch is a
/// [`Rejection`] and does not stop the others.
pub fn parse_batch_with_limit(body: &[u8], max_events: usize) -> Result<ParsedBatch> {
    #[derive(Deserialize)]
    struct RawBatch<'a> {
        sent_at: Option<Value>,
        #[serde(borrow)]
        events: Option<&'a RawValue>,
        #[serde(default)]
        telemetry_loss: Option<Value>,
    }
    // The common case in one pass over the body: every event read straight
    // into the typed struct as the array is read, as `SyncEvent::from_raw`
    // reads each one, and within the bounds it checks; so this path accepts
    // exactly what the per-event path would. One bad event makes the whole
    // typed read fail, and the batch takes the paths below instead.
    #[derive(Deserialize)]
    struct Typed<'a> {
        sent_at: &'a str,
        events: Vec<SyncEvent>,
        #[serde(default)]
        telemetry_loss: Option<Value>,
    }
    if let Ok(batch) = serde_json::from_slice::<Typed<'_>>(body) {
        if batch.events.len() <= max_events && batch.events.iter().all(SyncEvent::within_bounds) {
            if let (Ok(sent_at), Some(telemetry_loss)) = (parse_time(batch.sent_at), loss_report(batch.telemetry_loss))
            {
                return Ok(ParsedBatch {
                    sent_at,
                    events: batch.events.into_iter().enumerate().collect(),
                    rejected: Vec::new(),
                    telemetry_loss,
                });
            }
        }
    }
    // A well-formed batch with some bad events: split out as they are read.
    // Anything else takes the path below, which names exactly what is wrong.
    #[derive(Deserialize)]
    struct WellFormed<'a> {
        sent_at: &'a str,
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
        #[serde(default)]
        telemetry_loss: Option<Value>,
    }
    if let Ok(batch) = serde_json::from_slice::<WellFormed<'_>>(body) {
        if let (Ok(sent_at), true) = (parse_time(batch.sent_at), batch.events.len() <= max_events) {
            if let Some(parsed) = validate_events(sent_at, &batch.events, batch.telemetry_loss) {
                return Ok(parsed);
            }
        }
    }
    let raw: RawBatch<'_> = serde_json::from_slice(body).map_err(|e| Error::NotABatch(format!("invalid JSON: {e}")))?;
    let sent_at = match raw.sent_at {
        Some(Value::String(s)) => parse_time(&s).map_err(|reason| Error::NotABatch(format!("sent_at: {reason}")))?,
        Some(_) => return Err(Error::NotABatch("sent_at: expected an RFC 3339 timestamp string".into())),
        None => return Err(Error::NotABatch("sent_at: missing".into())),
    };
    let events: Vec<&RawValue> = match raw.events {
        Some(events) => {
            serde_json::from_str(events.get()).map_err(|_| Error::NotABatch("events: expected an array".into()))?
        }
        None => return Err(Error::NotABatch("events: missing".into())),
    };
    if events.len() > max_events {
        return Err(Error::TooManyEvents { count: events.len(), max: max_events });
    }
    // `null` reads as absent, like any optional member.
    let telemetry_loss = match raw.telemetry_loss {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            TelemetryLossReport::from_json(value)
                .map_err(|reason| Error::NotABatch(format!("telemetry_loss: {reason}")))?,
        ),
    };
    Ok(events_of(sent_at, &events, telemetry_loss))
}

/// The well-formed path's events and telemetry-loss report; `None` when
/// the report is invalid (the slow path then names the error).
fn validate_events(
    sent_at: OffsetDateTime,
    events: &[&RawValue],
    telemetry_loss: Option<Value>,
) -> Option<ParsedBatch> {
    Some(events_of(sent_at, events, loss_report(telemetry_loss)?))
}

/// A batch's telemetry-loss report on the fast paths: `Some(None)` when
/// absent, `None` when invalid (the slow path then names the error).
fn loss_report(telemetry_loss: Option<Value>) -> Option<Option<TelemetryLossReport>> {
    match telemetry_loss {
        None | Some(Value::Null) => Some(None),
        Some(value) => TelemetryLossReport::from_json(value).ok().map(Some),
    }
}

/// Each event validated on its own: a bad one is a [`Rejection`] and does
/// not stop the others.
fn events_of(
    sent_at: OffsetDateTime,
    events: &[&RawValue],
    telemetry_loss: Option<TelemetryLossReport>,
) -> ParsedBatch {
    let mut parsed =
        ParsedBatch { sent_at, events: Vec::with_capacity(events.len()), rejected: Vec::new(), telemetry_loss };
    for (index, raw_event) in events.iter().enumerate() {
        match SyncEvent::from_raw(raw_event.get()) {
            Ok(event) => parsed.events.push((index, event)),
            Err((field, reason)) => parsed.rejected.push(Rejection { index, field: field.to_string(), reason }),
        }
    }
    parsed
}

type FieldError = (&'static str, String);

impl SyncEvent {
    /// Validates one event from its JSON text. The common case (a valid
    /// event) is read straight into the typed struct, about three times
    /// cheaper than through an untyped tree; anything the typed read refuses,
    /// or that breaks a bound, goes through [`SyncEvent::from_json`], the one
    /// place that decides (and names) what is wrong. So both paths accept
    /// exactly the same events.
    pub fn from_raw(json: &str) -> std::result::Result<SyncEvent, (&'static str, String)> {
        if let Ok(event) = serde_json::from_str::<SyncEvent>(json) {
            if event.within_bounds() {
                return Ok(event);
            }
        }
        let value: Value = serde_json::from_str(json).map_err(|e| ("", format!("invalid JSON: {e}")))?;
        SyncEvent::from_json(value)
    }

    /// The bounds the typed read does not check by itself.
    fn within_bounds(&self) -> bool {
        let chars = |s: &str| s.chars().count();
        let optional =
            |s: &Option<String>, min: usize, max: usize| s.as_deref().is_none_or(|s| (min..=max).contains(&chars(s)));
        (1..=MAX_DEVICE_ID_CHARS).contains(&chars(&self.device_id))
            && self.duration_ms <= MAX_DURATION_MS
            && (1..=MAX_LABEL_CHARS).contains(&chars(&self.app_version))
            && (1..=MAX_LABEL_CHARS).contains(&chars(&self.os))
            && optional(&self.os_version, 0, MAX_LABEL_CHARS)
            && optional(&self.device_model, 0, MAX_LABEL_CHARS)
            && optional(&self.sync_type, 1, 32)
            && optional(&self.error_message, 0, MAX_ERROR_MESSAGE_CHARS)
            && self.sample_rate >= MIN_SAMPLE_RATE
            && self.sample_rate <= 1.0
            && self.conflict_details.len() <= MAX_CONFLICT_DETAILS
            && self.conflict_details.iter().all(|d| (1..=MAX_ENTITY_CHARS).contains(&chars(&d.entity)) && d.count >= 1)
            // A sum above `conflicts` is either an error or (`conflicts`
            // absent) a total to fill in: `from_json` tells them apart.
            && details_total(&self.conflict_details) <= u64::from(self.conflicts)
            && self.dimensions.len() <= MAX_DIMENSIONS
            && self.dimensions.iter().all(|(k, v)| is_dimension_key(k) && (1..=MAX_DIMENSION_VALUE_CHARS).contains(&chars(v)))
    }

    /// Validates one event from untyped JSON, naming the first field at fault.
    pub fn from_json(value: Value) -> std::result::Result<SyncEvent, (&'static str, String)> {
        let Value::Object(mut obj) = value else {
            return Err(("", "expected a JSON object".into()));
        };
        let event_id = required(&mut obj, "event_id", |v| {
            let s = as_str(v)?;
            Uuid::parse_str(&s).map_err(|_| format!("expected a UUID, got {s:?}"))
        })?;
        let device_id = required(&mut obj, "device_id", |v| bounded_string(v, 1, MAX_DEVICE_ID_CHARS))?;
        let occurred_at = required(&mut obj, "occurred_at", |v| parse_time(&as_str(v)?))?;
        let success = required(&mut obj, "success", |v| v.as_bool().ok_or_else(|| expected("a boolean", &v)))?;
        let duration_ms = required(&mut obj, "duration_ms", |v| {
            let d = as_u64(&v)?;
            if d > MAX_DURATION_MS {
                return Err(format!("{d} ms is longer than 30 days"));
            }
            Ok(d)
        })?;
        let conflicts = optional(&mut obj, "conflicts", |v| as_u32(&v))?;
        let queue_depth = optional(&mut obj, "queue_depth", |v| as_u32(&v))?.unwrap_or(0);
        let last_success_at = optional(&mut obj, "last_success_at", |v| parse_time(&as_str(v)?))?;
        let app_version = required(&mut obj, "app_version", |v| bounded_string(v, 1, MAX_LABEL_CHARS))?;
        let os = required(&mut obj, "os", |v| bounded_string(v, 1, MAX_LABEL_CHARS))?;
        let os_version = optional(&mut obj, "os_version", |v| bounded_string(v, 0, MAX_LABEL_CHARS))?;
        let network = optional(&mut obj, "network", |v| parse_enum(v, Network::parse, Network::expected))?
            .unwrap_or(Network::Unknown);
        let device_model = optional(&mut obj, "device_model", |v| bounded_string(v, 0, MAX_LABEL_CHARS))?;
        let sync_type = optional(&mut obj, "sync_type", |v| bounded_string(v, 1, 32))?;
        let trigger = optional(&mut obj, "trigger", |v| parse_enum(v, Trigger::parse, Trigger::expected))?;
        let error_kind = optional(&mut obj, "error_kind", |v| parse_enum(v, ErrorKind::parse, ErrorKind::expected))?;
        let error_message = optional(&mut obj, "error_message", |v| bounded_string(v, 0, MAX_ERROR_MESSAGE_CHARS))?;
        let retries = optional(&mut obj, "retries", |v| as_u32(&v))?.unwrap_or(0);
        let records_up = optional(&mut obj, "records_up", |v| as_u64(&v))?.unwrap_or(0);
        let records_down = optional(&mut obj, "records_down", |v| as_u64(&v))?.unwrap_or(0);
        let bytes_up = optional(&mut obj, "bytes_up", |v| as_u64(&v))?.unwrap_or(0);
        let bytes_down = optional(&mut obj, "bytes_down", |v| as_u64(&v))?.unwrap_or(0);
        let sample_rate = optional(&mut obj, "sample_rate", |v| {
            let r = v.as_f64().ok_or_else(|| expected("a number", &v))?;
            if (MIN_SAMPLE_RATE..=1.0).contains(&r) {
                Ok(r)
            } else {
                Err(format!(
                    "must be at least {MIN_SAMPLE_RATE} (one event for at most 1000 attempts) and at most 1, got {r}"
                ))
            }
        })?
        .unwrap_or(1.0);
        let conflict_details = optional(&mut obj, "conflict_details", conflict_details)?.unwrap_or_default();
        let total = details_total(&conflict_details);
        let conflicts = match conflicts {
            None => u32::try_from(total)
                .map_err(|_| ("conflict_details", format!("counts add up to {total}, more than {}", u32::MAX)))?,
            Some(c) if total > u64::from(c) => {
                return Err(("conflict_details", format!("counts add up to {total}, more than conflicts ({c})")))
            }
            Some(c) => c,
        };
        let queue_oldest_at = optional(&mut obj, "queue_oldest_at", |v| parse_time(&as_str(v)?))?;
        let dimensions = optional(&mut obj, "dimensions", dimensions)?.unwrap_or_default();
        Ok(SyncEvent {
            event_id,
            device_id,
            occurred_at,
            success,
            duration_ms,
            conflicts,
            queue_depth,
            last_success_at,
            app_version,
            os,
            os_version,
            network,
            device_model,
            sync_type,
            trigger,
            error_kind,
            error_message,
            retries,
            records_up,
            records_down,
            bytes_up,
            bytes_down,
            sample_rate,
            conflict_details,
            queue_oldest_at,
            dimensions,
        })
    }
}

fn details_total(details: &[ConflictDetail]) -> u64 {
    details.iter().map(|d| u64::from(d.count)).sum()
}

/// `[a-z][a-z0-9_]*`, at most [`MAX_DIMENSION_KEY_CHARS`]: the rule for a
/// key an event carries, and so for a key a project declares.
pub fn is_dimension_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_DIMENSION_KEY_CHARS
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `conflict_details`; a reason names the entry (`[3].kind: ...`).
fn conflict_details(v: Value) -> std::result::Result<Vec<ConflictDetail>, String> {
    let Value::Array(entries) = v else {
        return Err(expected("an array", &v));
    };
    if entries.len() > MAX_CONFLICT_DETAILS {
        return Err(format!("at most {MAX_CONFLICT_DETAILS} entries, got {}", entries.len()));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(mut obj) = entry else {
                return Err(format!("[{i}]: {}", expected("an object", &entry)));
            };
            let at = |(field, reason): FieldError| format!("[{i}].{field}: {reason}");
            let entity = required(&mut obj, "entity", |v| bounded_string(v, 1, MAX_ENTITY_CHARS)).map_err(at)?;
            let kind = required(&mut obj, "kind", |v| parse_enum(v, ConflictKind::parse, ConflictKind::expected))
                .map_err(at)?;
            let resolution = required(&mut obj, "resolution", |v| {
                parse_enum(v, ConflictResolution::parse, ConflictResolution::expected)
            })
            .map_err(at)?;
            let count = required(&mut obj, "count", |v| match as_u32(&v)? {
                0 => Err("must be at least 1".into()),
                n => Ok(n),
            })
            .map_err(at)?;
            Ok(ConflictDetail { entity, kind, resolution, count })
        })
        .collect()
}

/// `dimensions`: an object of short string values under identifier keys.
fn dimensions(v: Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Value::Object(obj) = v else {
        return Err(expected("an object of name: value", &v));
    };
    if obj.len() > MAX_DIMENSIONS {
        return Err(format!("at most {MAX_DIMENSIONS} dimensions, got {}", obj.len()));
    }
    obj.into_iter()
        .map(|(key, value)| {
            if !is_dimension_key(&key) {
                return Err(format!(
                    "key {:?} is not a lowercase identifier of at most {MAX_DIMENSION_KEY_CHARS} characters",
                    key.chars().take(MAX_DIMENSION_KEY_CHARS + 8).collect::<String>()
                ));
            }
            let value =
                bounded_string(value, 1, MAX_DIMENSION_VALUE_CHARS).map_err(|reason| format!("{key}: {reason}"))?;
            Ok((key, value))
        })
        .collect()
}

fn required<T>(
    obj: &mut Map<String, Value>,
    field: &'static str,
    parse: impl FnOnce(Value) -> std::result::Result<T, String>,
) -> std::result::Result<T, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err((field, "missing required field".into())),
        Some(v) => parse(v).map_err(|reason| (field, reason)),
    }
}

/// `null` and absence both mean "not given".
fn optional<T>(
    obj: &mut Map<String, Value>,
    field: &'static str,
    parse: impl FnOnce(Value) -> std::result::Result<T, String>,
) -> std::result::Result<Option<T>, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some).map_err(|reason| (field, reason)),
    }
}

fn expected(what: &str, got: &Value) -> String {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("expected {what}, got {kind}")
}

fn as_str(v: Value) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(expected("a string", &other)),
    }
}

fn bounded_string(v: Value, min: usize, max: usize) -> std::result::Result<String, String> {
    let s = as_str(v)?;
    let len = s.chars().count();
    if len < min {
        return Err(if min == 1 { "must not be empty".into() } else { format!("must be at least {min} characters") });
    }
    if len > max {
        return Err(format!("{len} characters, at most {max} allowed"));
    }
    Ok(s)
}

fn as_u64(v: &Value) -> std::result::Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("expected a non-negative integer, got {n}")),
        other => Err(expected("a non-negative integer", other)),
    }
}

fn as_u32(v: &Value) -> std::result::Result<u32, String> {
    let n = as_u64(v)?;
    u32::try_from(n).map_err(|_| format!("{n} is larger than {}", u32::MAX))
}

fn parse_enum<T>(
    v: Value,
    parse: fn(&str) -> Option<T>,
    expected_values: fn() -> String,
) -> std::result::Result<T, String> {
    let s = as_str(v)?;
    parse(&s).ok_or_else(|| format!("unknown value {s:?}, expected {}", expected_values()))
}

fn parse_time(s: &str) -> std::result::Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| format!("expected an RFC 3339 timestamp, got {s:?}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "event_id": "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a",
            "device_id": "dev-1",
            "occurred_at": "2026-11-21T10:00:00Z",
            "success": true,
            "duration_ms": 1200,
            "app_version": "2.3.0",
            "os": "android",
        })
    }

    fn batch(events: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"sent_at": "2026-11-21T10:00:05Z", "events": events})).unwrap()
    }

    #[test]
    fn a_minimal_event_takes_the_documented_defaults() {
        let parsed = parse_batch(&batch(vec![good()])).unwrap();
        assert!(parsed.rejected.is_empty());
        let e = &parsed.events[0].1;
        assert_eq!(e.conflicts, 0);
        assert_eq!(e.queue_depth, 0);
        assert_eq!(e.network, Network::Unknown);
        assert_eq!(e.sample_rate, 1.0);
        assert_eq!(e.last_success_at, None);
    }

    #[test]
    fn a_bad_event_is_rejected_with_index_field_and_reason_and_the_rest_pass() {
        let mut wrong_type = good();
        wrong_type["duration_ms"] = json!("slow");
        let mut missing = good();
        missing.as_object_mut().unwrap().remove("device_id");
        let mut out_of_range = good();
        out_of_range["sample_rate"] = json!(0);
        let mut bad_enum = good();
        bad_enum["network"] = json!("5g");
        let mut unknown_field = good();
        unknown_field["future_field"] = json!({"x": 1});
        let parsed =
            parse_batch(&batch(vec![good(), wrong_type, missing, out_of_range, bad_enum, unknown_field])).unwrap();
        assert_eq!(parsed.events.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 5]);
        let got: Vec<(usize, &str)> = parsed.rejected.iter().map(|r| (r.index, r.field.as_str())).collect();
        assert_eq!(got, vec![(1, "duration_ms"), (2, "device_id"), (3, "sample_rate"), (4, "network")]);
        assert_eq!(parsed.rejected[0].reason, "expected a non-negative integer, got a string");
        assert_eq!(parsed.rejected[1].reason, "missing required field");
    }

    #[test]
    fn a_valid_batch_read_in_one_pass_equals_its_events_read_one_by_one() {
        let mut full = good();
        full["event_id"] = json!("0190f3a2-7b1c-7d4e-8f00-000000000001");
        full["last_success_at"] = json!("2026-11-21T09:00:00.250+01:00");
        full["network"] = json!("cellular");
        full["os_version"] = json!("14");
        full["error_kind"] = json!("timeout");
        full["error_message"] = json!("gateway \"timeout\" \u{e9}");
        full["sample_rate"] = json!(0.5);
        full["future_field"] = json!([1, {"x": null}]);
        let events = vec![good(), full];
        let parsed = parse_batch(&batch(events.clone())).unwrap();
        assert!(parsed.rejected.is_empty());
        let one_by_one: Vec<(usize, SyncEvent)> =
            events.iter().enumerate().map(|(i, e)| (i, SyncEvent::from_raw(&e.to_string()).unwrap())).collect();
        assert_eq!(parsed.events, one_by_one);
        assert_eq!(parsed.events[1].1.error_message.as_deref(), Some("gateway \"timeout\" \u{e9}"));
    }

    #[test]
    fn an_event_within_the_typed_read_but_out_of_bounds_is_still_rejected() {
        let mut long_os = good();
        long_os["os"] = json!("x".repeat(MAX_LABEL_CHARS + 1));
        let parsed = parse_batch(&batch(vec![good(), long_os])).unwrap();
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!((parsed.rejected[0].index, parsed.rejected[0].field.as_str()), (1, "os"));
    }

    #[test]
    fn long_fields_and_negative_numbers_are_out_of_range() {
        let mut long_message = good();
        long_message["error_message"] = json!("x".repeat(1025));
        let mut long_device = good();
        long_device["device_id"] = json!("d".repeat(129));
        let mut negative = good();
        negative["conflicts"] = json!(-1);
        let mut too_big = good();
        too_big["queue_depth"] = json!(u64::from(u32::MAX) + 1);
        let parsed = parse_batch(&batch(vec![long_message, long_device, negative, too_big])).unwrap();
        let fields: Vec<&str> = parsed.rejected.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, vec!["error_message", "device_id", "conflicts", "queue_depth"]);
    }

    #[test]
    fn a_body_that_is_not_a_batch_is_an_error() {
        assert!(matches!(parse_batch(b"not json"), Err(Error::NotABatch(_))));
        assert!(matches!(parse_batch(b"{\"events\": []}"), Err(Error::NotABatch(m)) if m.contains("sent_at")));
        assert!(matches!(
            parse_batch(b"{\"sent_at\": \"2026-11-21T10:00:00Z\", \"events\": {}}"),
            Err(Error::NotABatch(m)) if m.contains("events")
        ));
    }

    #[test]
    fn a_telemetry_loss_report_is_parsed_with_unknown_reasons_and_a_bad_one_refuses_the_batch() {
        let body = |loss: &str| {
            format!("{{\"sent_at\": \"2026-11-21T10:00:00Z\", \"events\": [], \"telemetry_loss\": {loss}}}")
        };
        let parsed = parse_batch(
            body(r#"{"device_id": "d1", "dropped": {"buffer_full": 3, "expired": 0, "disk_error_2": 7}}"#).as_bytes(),
        )
        .unwrap();
        let report = parsed.telemetry_loss.unwrap();
        assert_eq!(report.device_id, "d1");
        assert_eq!(report.dropped.get("buffer_full"), Some(&3));
        assert_eq!(report.dropped.get("disk_error_2"), Some(&7));
        assert_eq!(report.dropped.len(), 3);
        assert!(parse_batch(body("null").as_bytes()).unwrap().telemetry_loss.is_none());
        for (bad, needle) in [
            ("[]", "expected an object"),
            (r#"{"dropped": {}}"#, "device_id: missing"),
            (r#"{"device_id": "", "dropped": {}}"#, "device_id"),
            (r#"{"device_id": "d", "dropped": []}"#, "dropped: expected an object"),
            (r#"{"device_id": "d", "dropped": {"Buffer Full": 1}}"#, "lowercase identifier"),
            (r#"{"device_id": "d", "dropped": {"expired": -1}}"#, "dropped.expired"),
            (r#"{"device_id": "d", "dropped": {"expired": "3"}}"#, "non-negative integer"),
        ] {
            match parse_batch(body(bad).as_bytes()) {
                Err(Error::NotABatch(m)) => assert!(m.contains("telemetry_loss") && m.contains(needle), "{bad}: {m}"),
                other => panic!("{bad}: expected NotABatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn too_many_events_is_its_own_error_naming_the_count_and_the_limit() {
        let too_many = batch(vec![good(); MAX_BATCH_EVENTS + 1]);
        let err = parse_batch(&too_many).unwrap_err();
        assert!(matches!(err, Error::TooManyEvents { count: 5001, max: MAX_BATCH_EVENTS }), "{err:?}");
        assert_eq!(err.to_string(), "too many events in one batch: 5001, at most 5000 allowed");
        let three = batch(vec![good(); 3]);
        assert!(matches!(parse_batch_with_limit(&three, 2), Err(Error::TooManyEvents { count: 3, max: 2 })));
        assert_eq!(parse_batch_with_limit(&three, 3).unwrap().events.len(), 3);
    }

    #[test]
    fn the_typed_fast_path_accepts_and_refuses_exactly_what_the_validator_does() {
        let mutations: Vec<(&str, Value)> = vec![
            ("conflicts", Value::Null),
            ("network", Value::Null),
            ("network", json!("cellular")),
            ("trigger", json!("local_write")),
            ("trigger", json!("bogus")),
            ("error_kind", json!("timeout")),
            ("duration_ms", json!(12.5)),
            ("duration_ms", json!(MAX_DURATION_MS + 1)),
            ("sample_rate", json!(1)),
            ("sample_rate", json!(1.5)),
            ("sample_rate", json!(-0.1)),
            ("sample_rate", json!(1e-310)),
            ("sample_rate", json!(1e-300)),
            ("sample_rate", json!(0.000_999)),
            ("sample_rate", json!(0.001)),
            ("device_id", json!("")),
            ("app_version", json!("")),
            ("sync_type", json!("")),
            ("sync_type", json!("x".repeat(33))),
            ("os_version", json!("")),
            ("error_message", json!("é".repeat(1024))),
            ("error_message", json!("é".repeat(1025))),
            ("event_id", json!("6F1C1A7E2F7B4C1E9A533F0E8C1D2B4A")),
            ("event_id", json!([1, 2, 3])),
            ("occurred_at", json!("2026-11-21 10:00:00")),
            ("last_success_at", Value::Null),
            ("queue_depth", json!(u64::from(u32::MAX))),
            ("success", json!("true")),
            ("conflict_details", Value::Null),
            (
                "conflict_details",
                json!([{"entity": "todo", "kind": "update_update", "resolution": "last_write_wins", "count": 3}]),
            ),
            (
                "conflict_details",
                json!([{"entity": "todo", "kind": "update_update", "resolution": "last_write_wins", "count": 0}]),
            ),
            ("conflict_details", json!([{"entity": "", "kind": "other", "resolution": "manual", "count": 1}])),
            ("conflict_details", json!([{"entity": "todo", "kind": "merge", "resolution": "manual", "count": 1}])),
            (
                "conflict_details",
                json!(vec![json!({"entity": "t", "kind": "other", "resolution": "custom", "count": 1}); 33]),
            ),
            ("queue_oldest_at", json!("2026-11-21T09:55:00Z")),
            ("queue_oldest_at", json!("five minutes ago")),
            ("dimensions", json!({"engine": "powersync", "plan": "pro"})),
            ("dimensions", json!({"Plan": "pro"})),
            ("dimensions", json!({"plan": ""})),
            ("dimensions", json!({"plan": 3})),
            ("dimensions", Value::Null),
        ];
        for (field, value) in mutations {
            let mut event = good();
            event[field] = value.clone();
            let text = serde_json::to_string(&event).unwrap();
            assert_eq!(SyncEvent::from_raw(&text), SyncEvent::from_json(event), "{field} = {value}");
        }
    }

    #[test]
    fn conflict_details_queue_age_and_dimensions_are_read_and_checked_entry_by_entry() {
        let detail = |entity: &str, kind: &str, resolution: &str, count: u64| json!({"entity": entity, "kind": kind, "resolution": resolution, "count": count});
        let mut summed = good();
        summed["conflict_details"] = json!([
            detail("todo", "update_update", "last_write_wins", 4),
            detail("list", "update_delete", "crdt_merge", 1)
        ]);
        summed["queue_oldest_at"] = json!("2026-11-21T09:55:00Z");
        summed["dimensions"] = json!({"engine": "powersync", "region": "eu"});
        let mut within = good();
        within["conflicts"] = json!(9);
        within["conflict_details"] = json!([detail("todo", "insert_insert", "server_wins", 9)]);
        let mut over = within.clone();
        over["conflicts"] = json!(2);
        let mut bad_entry = good();
        bad_entry["conflict_details"] =
            json!([detail("todo", "update_update", "manual", 1), detail("todo", "update_update", "rebase", 1)]);
        let mut too_many_dimensions = good();
        too_many_dimensions["dimensions"] = Value::Object((0..9).map(|i| (format!("d{i}"), json!("x"))).collect());
        let mut long_value = good();
        long_value["dimensions"] = json!({"plan": "x".repeat(65)});
        let mut late_queue = good();
        late_queue["queue_oldest_at"] = json!("2026-11-21T10:00:00");
        let parsed =
            parse_batch(&batch(vec![summed, within, over, bad_entry, too_many_dimensions, long_value, late_queue]))
                .unwrap();

        let e = &parsed.events[0].1;
        assert_eq!(e.conflicts, 5, "an absent conflicts is the details' sum");
        assert_eq!(e.conflict_details[0].resolution, ConflictResolution::LastWriteWins);
        assert!(e.conflict_details[0].resolution.overwrites() && !e.conflict_details[1].resolution.overwrites());
        assert_eq!(e.queue_oldest_at.map(|t| t.unix_timestamp()), Some(e.occurred_at.unix_timestamp() - 300));
        assert_eq!(e.dimensions.get("region").map(String::as_str), Some("eu"));
        assert_eq!(parsed.events[1].1.conflicts, 9);
        let got: Vec<(usize, &str, &str)> =
            parsed.rejected.iter().map(|r| (r.index, r.field.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "conflict_details", "counts add up to 9, more than conflicts (2)"),
                (
                    3,
                    "conflict_details",
                    "[1].resolution: unknown value \"rebase\", expected one of last_write_wins, server_wins, \
                     client_wins, crdt_merge, manual, custom, unresolved"
                ),
                (4, "dimensions", "at most 8 dimensions, got 9"),
                (5, "dimensions", "plan: 65 characters, at most 64 allowed"),
                (6, "queue_oldest_at", "expected an RFC 3339 timestamp, got \"2026-11-21T10:00:00\""),
            ]
        );
    }

    #[test]
    fn a_non_object_event_is_rejected_without_a_field() {
        let parsed = parse_batch(&batch(vec![json!(42)])).unwrap();
        assert_eq!(parsed.rejected[0].field, "");
    }

    #[test]
    fn an_event_round_trips_through_its_own_json() {
        let parsed = parse_batch(&batch(vec![good()])).unwrap();
        let event = parsed.events[0].1.clone();
        let again = SyncEvent::from_json(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(event, again);
    }

    /// The inputs kept from fuzzing (`fuzz/regressions/batch`): each parses
    /// to an answer without a panic, and what it accepts keeps the contract.
    #[test]
    fn the_fuzzing_regression_inputs_parse_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/batch");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(batch) = parse_batch_with_limit(&bytes, MAX_BATCH_EVENTS) {
                assert!(batch.events.iter().all(|(_, e)| (MIN_SAMPLE_RATE..=1.0).contains(&e.sample_rate)));
            }
            seen += 1;
        }
        assert!(seen >= 5, "the regression inputs are in {}", dir.display());
    }
}
