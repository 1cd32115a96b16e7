//! The labels of the collector's per-project counters. Project names are
//! the customer's business, and `/metrics` is unauthenticated, so the
//! `project` label is opt-in (`metrics.per_project`); without it the
//! counters are process totals. One switch per process, like the recorder,
//! and once on it stays on: every `Application` of a process (tests build
//! many) shares the recorder, so one that asks for labels gets them.

use std::sync::atomic::{AtomicBool, Ordering};

use synchealth_schema::ProjectName;

static PER_PROJECT: AtomicBool = AtomicBool::new(false);

/// Turns the `project` label of the collector's counters on (`false`
/// leaves the switch as it is).
pub fn set_per_project_metrics(on: bool) {
    if on {
        PER_PROJECT.store(true, Ordering::Relaxed);
    }
}

/// The labels of a per-project counter: `project` when turned on, none otherwise.
pub(crate) fn project(project: &ProjectName) -> Vec<metrics::Label> {
    if PER_PROJECT.load(Ordering::Relaxed) {
        vec![metrics::Label::new("project", project.as_str().to_string())]
    } else {
        Vec::new()
    }
}
