//! Optional (`otlp` feature): every event the probe records is also
//! exported as an OpenTelemetry log record over OTLP/HTTP (protobuf), for
//! teams that run an OpenTelemetry pipeline. The mapping is the collector's
//! (schema/README.md, "OTLP logs mapping"): one record per attempt, timed at
//! `occurred_at`, every SyncEvent field `F` as the attribute `sync.F`, so the
//! synchealth collector's own `/v1/logs` takes these records too. Fields
//! that are not scalars follow the collector's mapping: `sync.queue_oldest_at`
//! is an RFC 3339 string like the other times, `sync.conflict_details` an
//! array of key-value lists `{entity, kind, resolution, count}`, and each
//! dimension its own string attribute `sync.dimension.NAME`, so a backend
//! can group by one without parsing.
//!
//! Best effort, like an OpenTelemetry SDK's exporter: one request per group
//! of newly recorded events, no buffer and no retries of its own (the
//! durable path is the probe's upload); a failure is logged.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use synchealth_schema::SyncEvent;

/// OTLP severity number of INFO (successes) and WARN (failures).
const SEVERITY_INFO: i32 = 9;
const SEVERITY_WARN: i32 = 13;

/// Sends log records to one OTLP/HTTP endpoint.
#[derive(Debug)]
pub(crate) struct Exporter {
    agent: ureq::Agent,
    url: String,
    authorization: String,
}

impl Exporter {
    /// `base` is the OTLP/HTTP base URL; `/v1/logs` is added.
    pub(crate) fn new(base: &str, ingest_key: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        Exporter { agent, url: format!("{base}/v1/logs"), authorization: format!("Bearer {ingest_key}") }
    }

    /// Exports `events`, once; failures are logged.
    pub(crate) fn export(&self, events: &[SyncEvent]) {
        if events.is_empty() {
            return;
        }
        let body = request(events).encode_to_vec();
        let sent = self
            .agent
            .post(&self.url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/x-protobuf")
            .send(&body[..]);
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::warn!(status = response.status().as_u16(), "OTLP log export refused."),
            Err(error) => tracing::warn!(%error, "OTLP log export failed."),
        }
    }
}

/// The OTLP request for `events`.
pub(crate) fn request(events: &[SyncEvent]) -> ExportLogsServiceRequest {
    let records = events.iter().map(record).collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "synchealth-probe".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn record(event: &SyncEvent) -> LogRecord {
    let nanos = u64::try_from(event.occurred_at.unix_timestamp_nanos()).unwrap_or(0);
    let mut attributes: Vec<KeyValue> = match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(fields)) => {
            fields.into_iter().filter_map(|(name, value)| Some(kv(format!("sync.{name}"), scalar(value)?))).collect()
        }
        _ => Vec::new(),
    };
    if !event.conflict_details.is_empty() {
        let entries = event
            .conflict_details
            .iter()
            .map(|d| {
                let fields = vec![
                    kv("entity".into(), any_value::Value::StringValue(d.entity.clone())),
                    kv("kind".into(), any_value::Value::StringValue(d.kind.as_str().into())),
                    kv("resolution".into(), any_value::Value::StringValue(d.resolution.as_str().into())),
                    kv("count".into(), any_value::Value::IntValue(i64::from(d.count))),
                ];
                AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: fields })) }
            })
            .collect();
        attributes
            .push(kv("sync.conflict_details".into(), any_value::Value::ArrayValue(ArrayValue { values: entries })));
    }
    for (name, value) in &event.dimensions {
        attributes.push(kv(format!("sync.dimension.{name}"), any_value::Value::StringValue(value.clone())));
    }
    LogRecord {
        time_unix_nano: nanos,
        observed_time_unix_nano: nanos,
        severity_number: if event.success { SEVERITY_INFO } else { SEVERITY_WARN },
        severity_text: if event.success { "INFO" } else { "WARN" }.into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(
                if event.success { "sync succeeded" } else { "sync failed" }.into(),
            )),
        }),
        attributes,
        ..Default::default()
    }
}

/// A JSON scalar as an OTLP value; nulls, arrays and objects are left to
/// their own mapping (or out).
fn scalar(value: serde_json::Value) -> Option<any_value::Value> {
    Some(match value {
        serde_json::Value::String(s) => any_value::Value::StringValue(s),
        serde_json::Value::Bool(b) => any_value::Value::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        _ => return None,
    })
}

fn kv(key: String, value: any_value::Value) -> KeyValue {
    KeyValue { key, value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_field_becomes_a_sync_attribute_of_one_record() {
        let event: SyncEvent = serde_json::from_value(serde_json::json!({
            "event_id": "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a", "device_id": "d1",
            "occurred_at": "2026-11-21T10:00:00Z", "success": false, "duration_ms": 840,
            "app_version": "2.3.0", "os": "android", "network": "cellular", "sample_rate": 0.5,
            "error_kind": "timeout"
        }))
        .unwrap();
        let request = request(std::slice::from_ref(&event));
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.time_unix_nano, 1_795_255_200_000_000_000);
        let attr =
            |k: &str| r.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone()).and_then(|v| v.value);
        assert_eq!(attr("sync.duration_ms"), Some(any_value::Value::IntValue(840)));
        assert_eq!(attr("sync.success"), Some(any_value::Value::BoolValue(false)));
        assert_eq!(attr("sync.sample_rate"), Some(any_value::Value::DoubleValue(0.5)));
        assert_eq!(attr("sync.error_kind"), Some(any_value::Value::StringValue("timeout".into())));
        assert_eq!(attr("sync.last_success_at"), None, "nulls are left out");
        assert_eq!(r.severity_number, SEVERITY_WARN);
        assert!(r.attributes.iter().all(|a| !a.key.starts_with("sync.dimension.") && a.key != "sync.conflict_details"));
    }

    #[test]
    fn conflict_details_are_an_array_of_kvlists_and_each_dimension_its_own_attribute() {
        let event: SyncEvent = serde_json::from_value(serde_json::json!({
            "event_id": "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a", "device_id": "d1",
            "occurred_at": "2026-11-21T10:00:00Z", "success": true, "duration_ms": 840,
            "app_version": "2.3.0", "os": "android", "conflicts": 3, "queue_depth": 2,
            "queue_oldest_at": "2026-11-21T09:55:00Z",
            "conflict_details": [{"entity": "todo", "kind": "update_update", "resolution": "server_wins", "count": 3}],
            "dimensions": {"engine": "powersync", "plan": "pro"}
        }))
        .unwrap();
        let request = request(std::slice::from_ref(&event));
        let r = &request.resource_logs[0].scope_logs[0].log_records[0];
        let attr =
            |k: &str| r.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone()).and_then(|v| v.value);
        assert_eq!(attr("sync.queue_oldest_at"), Some(any_value::Value::StringValue("2026-11-21T09:55:00Z".into())));
        assert_eq!(attr("sync.dimension.plan"), Some(any_value::Value::StringValue("pro".into())));
        assert_eq!(attr("sync.dimension.engine"), Some(any_value::Value::StringValue("powersync".into())));
        assert_eq!(attr("sync.dimensions"), None);
        let Some(any_value::Value::ArrayValue(array)) = attr("sync.conflict_details") else {
            panic!("an array: {:?}", attr("sync.conflict_details"))
        };
        let Some(any_value::Value::KvlistValue(entry)) = array.values[0].value.clone() else { panic!("a kvlist") };
        let fields: Vec<(String, any_value::Value)> =
            entry.values.into_iter().map(|kv| (kv.key, kv.value.unwrap().value.unwrap())).collect();
        assert_eq!(
            fields,
            vec![
                ("entity".into(), any_value::Value::StringValue("todo".into())),
                ("kind".into(), any_value::Value::StringValue("update_update".into())),
                ("resolution".into(), any_value::Value::StringValue("server_wins".into())),
                ("count".into(), any_value::Value::IntValue(3)),
            ]
        );
    }
}
