//! Store conformance tests: the same suite against the embedded SQLite store
//! and ClickHouse (see `conformance.rs`).

mod alerting;
mod conformance;
mod devices;
mod helpers;
