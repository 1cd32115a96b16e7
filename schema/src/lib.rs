//! The synchealth contract: what a client sends (`SyncEvent` inside a batch),
//! how it is validated, what the collector stores for it, and the storage
//! migrations for both stores.
//!
//! Every other crate depends on this one, so the rules of the wire format live
//! here once: the collector, the probe and the tests all call the same parser.

mod bucket;
mod error;
mod event;
mod fingerprint;
pub mod migrations;
mod stored;

pub use bucket::{bucket_of, bucket_value, weighted_quantile, MAX_BUCKET};
pub use error::{Error, Result};
pub use event::{
    is_dimension_key, parse_batch, parse_batch_with_limit, ConflictDetail, ConflictKind, ConflictResolution, ErrorKind,
    Network, ParsedBatch, Rejection, SyncEvent, TelemetryLossReport, Trigger, MAX_BATCH_EVENTS, MAX_CONFLICT_DETAILS,
    MAX_DIMENSIONS, MAX_DIMENSION_KEY_CHARS, MAX_DIMENSION_VALUE_CHARS, MAX_ENTITY_CHARS, MAX_ERROR_MESSAGE_CHARS,
    MIN_SAMPLE_RATE,
};
pub use fingerprint::{error_fingerprint, MAX_FINGERPRINT_CHARS};
pub use stored::{unix_ms, ProjectName, StoredEvent, CLOCK_SKEW_TOLERANCE_MS, EARLIEST_EVENT_TIME_MS, MAX_FUTURE_MS};
