//! The evaluator against a real (embedded) store, stepped with explicit
//! times.
#![allow(clippy::unwrap_used)]

mod evaluator;
