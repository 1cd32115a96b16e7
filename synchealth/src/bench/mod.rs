//! `synchealth bench ingest|dashboard|alerts`: the product measured end to
//! end, one file per benchmark. Each builds what it measures from the same
//! settings and roles the binary runs with, so a figure describes the real
//! thing; BENCHMARKS.md records the results.

pub mod alerts;
pub mod dashboard;
pub mod ingest;
pub mod views;
