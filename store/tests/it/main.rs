//! Store conformance tests: the same suite against the embedded SQLite store
//! and ClickHouse (see `conformance.rs`).

mod conformance;
mod helpers;
