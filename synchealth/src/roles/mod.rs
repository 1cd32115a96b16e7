//! The roles a process can run (collector, dashboard, alerts), each built
//! from its part of the settings. `startup.rs` assembles the chosen ones on
//! one listener; nothing here binds a socket, so tests and benchmarks build
//! a role the way the binary does.

pub mod alerts;
pub mod collector;
pub mod dashboard;

/// Which roles one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The ingest API.
    pub collector: bool,
    /// The JSON API and pages.
    pub dashboard: bool,
    /// The alert evaluator.
    pub alerts: bool,
}

impl Roles {
    /// Everything in one process (`synchealth up`).
    pub const ALL: Roles = Roles { collector: true, dashboard: true, alerts: true };
}
