//! The `synchealth` binary as a library: settings, the store it opens, the
//! first-start provisioning, and [`Application`], which runs any set of roles
//! (collector, dashboard, alerts) on one listener. `main.rs` only parses the
//! command line; tests build the same [`Application`] on port 0.
//!
//! - `roles/`: each role built from its settings (no socket), assembled by
//!   `startup.rs` and served by `serve.rs`;
//! - `commands/`: the admin commands that run once and exit (`keys`, `users`,
//!   `alerts silence|silences|unsilence|test`);
//! - `bench/`: `synchealth bench ingest|dashboard|alerts`;
//! - `demo/`: the simulated fleet of `synchealth demo` and `up --demo`.

pub mod bench;
pub mod bootstrap;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod metrics_catalog;
mod ops;
pub mod roles;
pub mod serve;
pub mod settings;
pub mod startup;
pub mod telemetry;

pub use crate::roles::Roles;
pub use crate::settings::{Secret, Settings};
pub use crate::startup::{open_store, Application};
