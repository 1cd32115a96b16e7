//! The client probe: the library an offline-first app embeds next to its
//! sync engine. Every sync attempt becomes one `SyncEvent` of the shared
//! contract (`synchealth-schema`), buffered on disk and uploaded to the
//! synchealth collector.
//!
//! ```no_run
//! use std::time::Duration;
//! use synchealth_probe::{Details, ErrorKind, Network, Probe};
//!
//! let probe = Probe::builder("https://sync-health.example.com", "shk_public_ingest_key")
//!     .app_version("2.3.0")
//!     .os("android")
//!     .os_version("14")
//!     .device_model("Pixel 8")
//!     .storage_dir("/data/data/com.example.notes/files/synchealth")
//!     .sample_rate(0.5) // keep half the successes; failures are always kept
//!     .build();
//! probe.set_network(Network::Wifi);
//!
//! // Around each sync attempt of the app's own sync engine:
//! let attempt = probe.start("push", "local_write");
//! match push_local_changes() {
//!     Ok(pushed) => attempt.succeed(Details { records_up: pushed, ..Details::default() }),
//!     Err(e) => attempt.fail(ErrorKind::Network, &e, Details::default()),
//! }
//! probe.set_queue_depth(0);
//!
//! // When the app goes to the background:
//! probe.flush(Duration::from_secs(2));
//! # fn push_local_changes() -> Result<u64, String> { Ok(3) }
//! ```
//!
//! What it guarantees:
//! - **Cheap and non-blocking**: `start` + `succeed` cost well under a
//!   microsecond on the caller's thread (two clock reads, a lock, a push);
//!   the disk and the network are only touched by the probe's own worker
//!   thread. No async runtime is needed in the app.
//! - **Durable and bounded**: events wait in a checksummed append-only file
//!   in `storage_dir` (a kill loses at most the record being written), within
//!   10,000 events / 5 MB / 7 days by default; when full, successes are
//!   thinned first with their weight raised through `sample_rate`, and what
//!   is finally dropped is counted by reason and reported to the collector.
//! - **At least once, counted once**: events leave the buffer only after a
//!   2xx; retries (exponential backoff, full jitter, `Retry-After`) resend the
//!   same `event_id`s, which the collector stores once.
//! - **Never the app's problem**: no panic crosses the API, every internal
//!   error is logged (`tracing`) and swallowed.

mod bounds;
mod buffer;
mod config;
#[cfg(feature = "otlp")]
mod otlp;
mod probe;
mod record;
mod shared;
mod state;
mod upload;
mod worker;

pub use config::{BufferLimits, ProbeBuilder, UploadConditions, UploadPolicy, MAX_UPLOAD_BATCH};
pub use probe::{Probe, ProbeStats};
pub use record::{Attempt, Details};
pub use shared::FlushReport;
pub use synchealth_schema::{ConflictDetail, ConflictKind, ConflictResolution, ErrorKind, Network, SyncEvent, Trigger};
