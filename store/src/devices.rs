//! Per-device views for the Devices page: the devices falling behind, the
//! stuck uploads and the devices gone quiet, each with its last report.
//!
//! Every list is over the events of a [`crate::Query`] (project, window,
//! filters) and uses the same "latest" as the metrics: the greatest
//! `(event_time_ms, event_id as text)`, so both stores pick the same row. The
//! definitions, shared by [`crate::Aggregates::devices`] on both stores and
//! checked against a brute-force count in the conformance suite:
//! - **queue depth**: devices by the `queue_depth` of their latest event,
//!   deepest first (devices with an empty queue are left out);
//! - **staleness**: by the staleness of their latest event, stalest first
//!   (never-synced devices are left out: they are counted by the summary's
//!   `never_synced_devices`, and have no staleness to rank);
//! - **consecutive failures**: by the number of failed attempts after the
//!   device's last successful one in the window (all of them when none
//!   succeeded), most first (devices whose latest attempt succeeded are left
//!   out);
//! - **stuck**: devices with at least [`STUCK_ATTEMPTS`] attempts in the
//!   window whose queue depth never shrank across their last
//!   [`STUCK_ATTEMPTS`] attempts and is above zero: uploads that do not get
//!   through. Deepest queue first;
//! - **quiet**: devices seen in the window but not during its last
//!   `silent_for_ms`: their staleness now is unknown, not absent
//!   ([`DeviceSummary::silent_for_ms`] says for how long). Longest silence
//!   first.
//!
//! Ties break on the device id, ascending, so a list is stable.

use serde::{Deserialize, Serialize};

/// How many of a device's most recent attempts must show a queue that never
/// shrinks for the device to count as stuck.
pub const STUCK_ATTEMPTS: u32 = 3;

/// Most devices one list may return.
pub const MAX_DEVICE_LIST: u32 = 1000;

/// Which devices to list, and in which order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "list")]
pub enum DeviceList {
    /// Deepest latest queue first.
    QueueDepth,
    /// Stalest latest report first.
    Staleness,
    /// Most failures since the last success first.
    ConsecutiveFailures,
    /// Queue that never shrank across the last [`STUCK_ATTEMPTS`] attempts.
    Stuck,
    /// Seen in the window, but not during its last `silent_for_ms`.
    Quiet {
        /// Silence, in milliseconds before the window's end, that makes a
        /// device quiet.
        silent_for_ms: i64,
    },
}

impl DeviceList {
    /// The list's name in URLs: `queue_depth`, `staleness`,
    /// `consecutive_failures`, `stuck` or `quiet`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceList::QueueDepth => "queue_depth",
            DeviceList::Staleness => "staleness",
            DeviceList::ConsecutiveFailures => "consecutive_failures",
            DeviceList::Stuck => "stuck",
            DeviceList::Quiet { .. } => "quiet",
        }
    }
}

/// One device as a list shows it: what its latest event in the window said,
/// and what its attempts in the window add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device.
    pub device_id: String,
    /// Corrected time of its latest event in the window, Unix ms.
    pub last_seen_ms: i64,
    /// App version of the latest event.
    pub app_version: String,
    /// OS of the latest event.
    pub os: String,
    /// Network type of the latest event (`wifi`, `cellular`, ...).
    pub network: String,
    /// Upload queue depth of the latest event.
    pub queue_depth: u32,
    /// Staleness reported by the latest event, ms; `None` when it said the
    /// device never synced. For a quiet device this is what it last said,
    /// not its staleness now (unknown: see `silent_for_ms`).
    pub staleness_ms: Option<i64>,
    /// Failed attempts after the last successful one in the window.
    pub consecutive_failures: u32,
    /// Whether the latest attempt succeeded.
    pub last_success: bool,
    /// Error kind of the latest attempt, if it failed with one.
    pub last_error_kind: Option<String>,
    /// Error message of the latest attempt, if any.
    pub last_error_message: Option<String>,
    /// Stored events of the device in the window (unweighted).
    pub attempts_in_window: u64,
    /// Only on the quiet list: window end minus `last_seen_ms`.
    pub silent_for_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_match_their_serde_tags() {
        for list in [
            DeviceList::QueueDepth,
            DeviceList::Staleness,
            DeviceList::ConsecutiveFailures,
            DeviceList::Stuck,
            DeviceList::Quiet { silent_for_ms: 1 },
        ] {
            let json = serde_json::to_value(list).unwrap_or_default();
            assert_eq!(json["list"], list.name());
        }
    }
}
