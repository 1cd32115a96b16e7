//! What the probe remembers across restarts besides the buffered events:
//! the device id (`device_id`, generated once unless the app supplies one)
//! and `state.json` (`last_success_at`, and the cumulative counts of events
//! dropped by reason and thinned, which the telemetry-loss report carries).
//!
//! `state.json` is replaced whole (write a temporary file, rename), so a kill
//! leaves the old version or the new one, never half of each.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const DEVICE_ID_FILE: &str = "device_id";
const STATE_FILE: &str = "state.json";
/// Longest device id the contract accepts.
const MAX_DEVICE_ID_CHARS: usize = 128;

/// The probe's persisted counters and timestamps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProbeState {
    /// The last successful attempt's start, Unix milliseconds, device clock.
    #[serde(default)]
    pub(crate) last_success_at_ms: Option<i64>,
    /// Events dropped since the storage was created, by reason.
    #[serde(default)]
    pub(crate) dropped: BTreeMap<String, u64>,
    /// Successes thinned since the storage was created (not lost: their
    /// weight moved to the kept ones).
    #[serde(default)]
    pub(crate) thinned: u64,
}

impl ProbeState {
    /// Adds `n` to the dropped count of `reason`.
    pub(crate) fn add_dropped(&mut self, reason: &str, n: u64) {
        if n > 0 {
            let count = self.dropped.entry(reason.to_string()).or_default();
            *count = count.saturating_add(n);
        }
    }
}

/// The device id: the app's if valid, else the stored one, else a new one
/// (stored for next time when there is a directory).
pub(crate) fn device_id(dir: Option<&Path>, supplied: Option<&str>) -> String {
    if let Some(id) = supplied {
        if valid_device_id(id) {
            return id.to_string();
        }
        tracing::warn!("The app's device id is not 1 to 128 characters; using a generated one.");
    }
    let Some(dir) = dir else {
        return Uuid::new_v4().to_string();
    };
    let path = dir.join(DEVICE_ID_FILE);
    if let Ok(stored) = std::fs::read_to_string(&path) {
        let stored = stored.trim();
        if valid_device_id(stored) {
            return stored.to_string();
        }
    }
    let id = Uuid::new_v4().to_string();
    if let Err(error) = write_atomically(dir, DEVICE_ID_FILE, id.as_bytes()) {
        tracing::warn!(%error, "Could not store the device id; it will change at the next start.");
    }
    id
}

fn valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_DEVICE_ID_CHARS
}

/// The stored state, or a fresh one if there is none or it is unreadable.
pub(crate) fn load(dir: Option<&Path>) -> ProbeState {
    let Some(dir) = dir else { return ProbeState::default() };
    match std::fs::read(dir.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(%error, "Probe state unreadable; starting from fresh counters.");
            ProbeState::default()
        }),
        Err(_) => ProbeState::default(),
    }
}

/// Replaces the stored state.
pub(crate) fn save(dir: &Path, state: &ProbeState) -> io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
    write_atomically(dir, STATE_FILE, &bytes)
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_device_id_is_generated_once_and_kept_and_the_apps_own_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = device_id(Some(dir.path()), None);
        assert_eq!(Uuid::parse_str(&first).unwrap().get_version_num(), 4);
        assert_eq!(device_id(Some(dir.path()), None), first);
        assert_eq!(device_id(Some(dir.path()), Some("app-chosen")), "app-chosen");
        assert_eq!(device_id(Some(dir.path()), Some("")), first);
        assert_ne!(device_id(None, None), device_id(None, None));
    }

    #[test]
    fn state_round_trips_and_a_damaged_file_gives_fresh_counters() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(Some(dir.path())), ProbeState::default());
        let mut state = ProbeState { last_success_at_ms: Some(1_700_000_000_000), ..ProbeState::default() };
        state.add_dropped("expired", 3);
        state.add_dropped("expired", 2);
        state.add_dropped("rejected", 0);
        save(dir.path(), &state).unwrap();
        let loaded = load(Some(dir.path()));
        assert_eq!(loaded, state);
        assert_eq!(loaded.dropped.get("expired"), Some(&5));
        assert!(!loaded.dropped.contains_key("rejected"));
        std::fs::write(dir.path().join(STATE_FILE), b"{\"last_suc").unwrap();
        assert_eq!(load(Some(dir.path())), ProbeState::default());
    }
}
