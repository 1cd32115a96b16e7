//! HTTP-level tests of the real application and binary.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod api;
mod helpers;
mod ingest;
mod process;
