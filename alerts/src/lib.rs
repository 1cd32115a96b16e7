//! Threshold alerts over the sync-health metrics: the rule model and the
//! life of each alert instance.
//!
//! On-call engineers want to be told when a vital sign crosses a line (sync
//! success rate below 95%, p99 duration above a minute, upload queues backing
//! up), once, with the segment it happened in, without being paged over a
//! handful of events or spammed by a metric hovering around the line. This
//! crate holds the parts of that which are pure and decidable in isolation:
//!
//! - [`rule`]: [`Rule`], as written in TOML config, its validation and the
//!   shipped [`Rule::defaults`];
//! - [`state`]: [`AlertState`] and [`step`], the state machine of one alert
//!   instance (ok → pending → firing → resolved → ok), with `for`,
//!   `keep_firing_for`, `repeat_interval` and `min_events`;
//! - [`instance`]: [`AlertKey`] (rule and segment) with its stable
//!   [`AlertKey::fingerprint`], and [`AlertInstance`], the state kept between
//!   evaluations with its silence;
//! - [`duration`]: the `"30s"`, `"10m"`, `"1h30m"`, `"7d"` durations of rules.
//!
//! [`Evaluator`] does the I/O: it queries the store on a schedule, steps the
//! instances, keeps their state in the store (under a lease, so replicas do
//! not double-send) and hands notifications to [`delivery`] (email,
//! Slack-compatible, Alertmanager and generic webhooks). An evaluation
//! of a rule at `now` reads the store over [`Rule::window_at`] with the rule's
//! filters (grouped by its `group_by`, if any), turns each group's
//! [`synchealth_store::Summary`] into an [`Observation`], and feeds it to the
//! instance of that group's [`AlertKey`].

pub mod delivery;
pub mod duration;
mod error;
mod evaluator;
pub mod instance;
pub mod rule;
pub mod state;

pub use error::{Error, Result};
pub use evaluator::{segment_label, Evaluator, Fired};
pub use instance::{AlertInstance, AlertKey};
pub use rule::{metric_name, validate_all, Comparison, Condition, Rule, RuleError, Severity};
pub use state::{step, AlertState, Notification, Observation, ResolveReason, Transition, Verdict};
