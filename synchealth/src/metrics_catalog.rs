//! Every metric family the process exports at `/metrics`, declared once:
//! name, type, labels and help text, and for histograms their buckets.
//!
//! Prometheus tooling (`promtool check metrics`, alerting rules on `rate()`
//! or `absent()`) needs `HELP` and `TYPE` on every family and counters that
//! exist before their first increment; several collectors behind a load
//! balancer need histograms (with buckets, aggregatable across instances),
//! not summaries. The crates record through the `metrics` facade by name;
//! this table is what makes the names a documented interface, and a test
//! renders `/metrics` through `promtool`.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// What kind of family a metric is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Only goes up; exported at 0 from the start when it has no labels.
    Counter,
    /// A current value.
    Gauge,
    /// Observations in buckets.
    Histogram(&'static [f64]),
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The labels it carries ("project" only with `metrics.per_project`).
    pub labels: &'static [&'static str],
    /// The `HELP` text.
    pub help: &'static str,
}

/// Seconds, for store inserts: a millisecond to a timeout.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Rows per insert or per acknowledged write.
const ROWS: &[f64] = &[1.0, 10.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0];

/// Every family, in the order `/metrics` documents them.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "synchealth_build_info",
        kind: Kind::Gauge,
        labels: &["version"],
        help: "Always 1; the version of the running binary.",
    },
    Family {
        name: "synchealth_events_accepted_total",
        kind: Kind::Counter,
        labels: &["project"],
        help: "Events newly stored (or spooled) and acknowledged.",
    },
    Family {
        name: "synchealth_events_duplicate_total",
        kind: Kind::Counter,
        labels: &["project"],
        help: "Events answered as duplicates (stored before, or repeated in the request).",
    },
    Family {
        name: "synchealth_events_rejected_total",
        kind: Kind::Counter,
        labels: &["project"],
        help: "Events refused by validation, each named in its answer.",
    },
    Family {
        name: "synchealth_rate_limited_total",
        kind: Kind::Counter,
        labels: &["project"],
        help: "Events refused with a 429 by the per-ingest-key rate limit.",
    },
    Family {
        name: "synchealth_events_duplicate_at_insert_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Events the store found stored already when inserting an acknowledged batch.",
    },
    Family {
        name: "synchealth_spooled_events_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Events written to the local spool.",
    },
    Family {
        name: "synchealth_spool_writes_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Appends (each one fsync) to the local spool.",
    },
    Family {
        name: "synchealth_replayed_events_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Events replayed from the spool into the store.",
    },
    Family { name: "synchealth_spool_bytes", kind: Kind::Gauge, labels: &[], help: "Bytes in the local spool." },
    Family {
        name: "synchealth_spool_oldest_age_seconds",
        kind: Kind::Gauge,
        labels: &[],
        help: "Age of the oldest spool segment not yet replayed.",
    },
    Family { name: "synchealth_batch_rows", kind: Kind::Histogram(ROWS), labels: &[], help: "Rows per store insert." },
    Family {
        name: "synchealth_ack_batch_rows",
        kind: Kind::Histogram(ROWS),
        labels: &[],
        help: "Rows per acknowledged write (a stored batch or a spool append).",
    },
    Family {
        name: "synchealth_insert_seconds",
        kind: Kind::Histogram(SECONDS),
        labels: &["source"],
        help: "Duration of store inserts, by source (batch or replay).",
    },
    Family {
        name: "synchealth_alert_evaluations_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Alert rule evaluation rounds run by this process.",
    },
    Family {
        name: "synchealth_alert_evaluation_errors_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Alert evaluation rounds that failed (the store did not answer).",
    },
    Family {
        name: "synchealth_alert_instances",
        kind: Kind::Gauge,
        labels: &["state"],
        help: "Alert instances by state, as of the last evaluation.",
    },
    Family {
        name: "synchealth_notifications_total",
        kind: Kind::Counter,
        labels: &["channel", "outcome"],
        help: "Notifications delivered (outcome sent) or given up (outcome failed), by channel.",
    },
];

/// The builder with every histogram's buckets, so each renders as a
/// Prometheus histogram.
pub fn with_buckets(mut builder: PrometheusBuilder) -> Result<PrometheusBuilder, BuildError> {
    for family in FAMILIES {
        if let Kind::Histogram(buckets) = family.kind {
            builder = builder.set_buckets_for_metric(Matcher::Full(family.name.to_string()), buckets)?;
        }
    }
    Ok(builder)
}

/// Declares every family's help text and makes the counters without labels
/// (and, with per-project metrics off, the per-project ones, which then
/// have none) exist at 0. Idempotent: every `Application` of a process
/// calls it.
pub fn register(per_project: bool) {
    for family in FAMILIES {
        match family.kind {
            Kind::Counter => {
                metrics::describe_counter!(family.name, family.help);
                let unlabeled = family.labels.is_empty() || (family.labels == ["project"] && !per_project);
                if unlabeled {
                    metrics::counter!(family.name).increment(0);
                }
            }
            Kind::Gauge => metrics::describe_gauge!(family.name, family.help),
            Kind::Histogram(_) => metrics::describe_histogram!(family.name, family.help),
        }
    }
    metrics::gauge!("synchealth_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_once_with_a_prefix_and_help() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family is declared twice");
        for f in FAMILIES {
            assert!(f.name.starts_with("synchealth_"), "{}", f.name);
            assert!(!f.help.is_empty(), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
        }
    }
}
