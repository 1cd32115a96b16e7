//! The client probe: the library an offline-first app embeds next to its sync
//! engine. Every sync attempt becomes one [`SyncEvent`] of the shared
//! contract (`synchealth-schema`), so what the probe produces is exactly what
//! the collector accepts.
//!
//! ```
//! use synchealth_probe::{Details, DeviceContext, Recorder};
//!
//! let recorder = Recorder::new(DeviceContext::new("device-1", "2.3.0", "android"));
//! let attempt = recorder.start("push", "local_write");
//! // ... the app's own sync runs here ...
//! attempt.succeed(Details { records_up: 12, ..Details::default() });
//! let events = recorder.drain();
//! assert_eq!(events.len(), 1);
//! assert!(events[0].success);
//! ```
//!
//! This is the recording core: timing an attempt, the cancelled-on-drop
//! rule, `last_success_at` and queue depth bookkeeping. The durable on-disk
//! buffer, batching, upload with backoff and sampling build on it (see the
//! client-probe issue); recording never does I/O on the caller's thread.

mod recorder;

pub use recorder::{Attempt, Details, DeviceContext, Recorder};
pub use synchealth_schema::{ErrorKind, Network, SyncEvent, Trigger};
