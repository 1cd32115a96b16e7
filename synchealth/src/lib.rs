//! The `synchealth` binary as a library: settings, the store it opens, the
//! first-start provisioning, and [`Application`], which runs any set of roles
//! (collector, dashboard, alerts) on one listener. `main.rs` only parses the
//! command line; tests build the same [`Application`] on port 0.

pub mod bench;
pub mod bench_dashboard;
pub mod bootstrap;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod metrics_catalog;
mod ops;
pub mod serve;
pub mod settings;
pub mod startup;
pub mod telemetry;

pub use crate::settings::{Secret, Settings};
pub use crate::startup::{open_store, Application, Roles};
