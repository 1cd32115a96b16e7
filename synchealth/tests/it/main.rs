//! HTTP-level tests of the real application and binary.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod alerts;
mod api;
mod auth_limits;
mod browser;
mod cluster;
mod collector_limits;
mod connections;
mod dashboard_api;
mod dimensions;
mod durability;
mod exactly_once;
mod helpers;
mod hostile_input;
mod ingest;
mod otlp;
mod pages;
mod probe;
mod process;
