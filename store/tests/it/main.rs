//! Store conformance tests: the same suite against the embedded SQLite store
//! and ClickHouse (see `conformance.rs`).

// First, so its `on_both_stores!` is in scope for the suites below.
#[macro_use]
mod helpers;

mod alerting;
mod cluster;
mod conformance;
mod current_hour;
mod devices;
mod dimensions;
mod exactly_once;
mod extremes;
mod rollups;
mod segment_hours;
mod segments;
mod series;
mod signals;
mod versions;
