//! The state the app's threads and the worker thread share: the inbox of
//! recorded attempts and flush requests (a mutex and a condvar), the
//! conditions the app sets (queue depth, network, battery, upload policy) and
//! the counters behind `Probe::stats`. Its own module so that `probe.rs`
//! (the public handle) and `worker.rs` both depend on it and not on each
//! other.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use synchealth_schema::Network;

use crate::config::{UploadConditions, UploadPolicy};
use crate::record::Incoming;

pub(crate) type DepthSource = Arc<dyn Fn() -> u32 + Send + Sync>;
/// Depth and oldest pending change (Unix ms) together, from the app.
pub(crate) type QueueSource = Arc<dyn Fn() -> (u32, Option<i64>) + Send + Sync>;
/// `queue_oldest_ms` when the app gave no time (or an empty queue).
pub(crate) const NO_TIME: i64 = i64::MIN;
pub(crate) type NetworkSource = Arc<dyn Fn() -> Network + Send + Sync>;

/// Shared between the app's threads and the worker.
pub(crate) struct Shared {
    pub(crate) device_id: String,
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) wake: Condvar,
    pub(crate) queue_depth: AtomicU32,
    /// The oldest pending change, Unix ms, or [`NO_TIME`].
    pub(crate) queue_oldest_ms: AtomicI64,
    pub(crate) network: AtomicU8,
    pub(crate) battery_low: AtomicBool,
    pub(crate) depth_source: RwLock<Option<DepthSource>>,
    pub(crate) queue_source: RwLock<Option<QueueSource>>,
    pub(crate) network_source: RwLock<Option<NetworkSource>>,
    pub(crate) policy: RwLock<UploadPolicy>,
    pub(crate) stopped: AtomicBool,
    pub(crate) counters: Counters,
}

/// What the worker has to do.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub(crate) items: Vec<Incoming>,
    pub(crate) flushes: Vec<(Instant, mpsc::Sender<FlushReport>)>,
    /// The worker is waiting on the condvar (so a first item must wake it).
    pub(crate) worker_idle: bool,
    pub(crate) stop: bool,
}

/// Counters since this probe started (not across restarts).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) recorded: AtomicU64,
    pub(crate) sampled_out: AtomicU64,
    pub(crate) uploaded: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) thinned: AtomicU64,
    pub(crate) restored: AtomicU64,
    pub(crate) buffered: AtomicU64,
    pub(crate) upload_failures: AtomicU64,
    pub(crate) dropped: Mutex<BTreeMap<String, u64>>,
    /// `queue_full` drops the worker has not added to the persisted counts yet.
    pub(crate) queue_full_unpersisted: AtomicU64,
    /// Inputs bounded to fit the contract, by reason (`bounds.rs`).
    pub(crate) adjusted: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    pub(crate) fn add_dropped(&self, reason: &str, n: u64) {
        if n > 0 {
            *lock(&self.dropped).entry(reason.to_string()).or_default() += n;
        }
    }

    /// Counts one bounded input; true the first time for `reason` (so it
    /// is logged once, not once per event).
    pub(crate) fn add_adjusted(&self, reason: &'static str) -> bool {
        let mut adjusted = lock(&self.adjusted);
        let count = adjusted.entry(reason).or_default();
        *count += 1;
        *count == 1
    }

    /// [`Counters::add_adjusted`], logged the first time.
    pub(crate) fn note_adjusted(&self, reason: &'static str) {
        if self.add_adjusted(reason) {
            tracing::warn!(reason, "An input was bounded to fit the contract (logged once per reason).");
        }
    }

    /// The adjusted counts, for `ProbeStats`.
    pub(crate) fn adjusted(&self) -> BTreeMap<String, u64> {
        lock(&self.adjusted).iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Events still in the buffer (not uploaded yet).
    pub pending: u64,
    /// The worker answered within the timeout.
    pub completed: bool,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock must not take the app down.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

pub(crate) fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(PoisonError::into_inner) = value;
}

pub(crate) fn network_code(network: Network) -> u8 {
    Network::ALL.iter().position(|n| *n == network).unwrap_or(0) as u8
}

fn network_of(code: u8) -> Network {
    Network::ALL.get(usize::from(code)).copied().unwrap_or(Network::Unknown)
}

impl Shared {
    /// Nothing recorded yet, conditions as configured.
    pub(crate) fn new(device_id: String, network: Network, policy: UploadPolicy) -> Shared {
        Shared {
            device_id,
            inbox: Mutex::new(Inbox::default()),
            wake: Condvar::new(),
            queue_depth: AtomicU32::new(0),
            queue_oldest_ms: AtomicI64::new(NO_TIME),
            network: AtomicU8::new(network_code(network)),
            battery_low: AtomicBool::new(false),
            depth_source: RwLock::new(None),
            queue_source: RwLock::new(None),
            network_source: RwLock::new(None),
            policy: RwLock::new(policy),
            stopped: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    pub(crate) fn request_stop(&self) {
        self.stopped.store(true, Ordering::Release);
        lock(&self.inbox).stop = true;
        self.wake.notify_all();
    }

    /// The network type now: the app's callback if set, else the last set value.
    pub(crate) fn network(&self) -> Network {
        match read(&self.network_source) {
            Some(source) => std::panic::catch_unwind(AssertUnwindSafe(|| source())).unwrap_or(Network::Unknown),
            None => network_of(self.network.load(Ordering::Relaxed)),
        }
    }

    /// Whether an upload may run now.
    pub(crate) fn upload_allowed(&self) -> bool {
        let conditions =
            UploadConditions { network: self.network(), battery_low: self.battery_low.load(Ordering::Relaxed) };
        read(&self.policy).allows(conditions)
    }
}
