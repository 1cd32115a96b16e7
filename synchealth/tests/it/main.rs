//! HTTP-level tests of the real application and binary.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod api;
mod collector_limits;
mod durability;
mod helpers;
mod ingest;
mod otlp;
mod process;
