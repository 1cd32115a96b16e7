//! The evaluation loop: every interval, each rule is read over its window
//! for every project, through the same store queries and metric definitions
//! as the dashboard, and each alert instance (rule × project × segment) takes
//! one step of its state machine.
//!
//! One evaluation ([`Evaluator::evaluate_once`], public so tests step it):
//! 1. takes or renews the evaluator lease in the store; a replica without it
//!    evaluates nothing, so several replicas never send the same notice twice,
//!    and a standby takes over once the holder stops renewing (after the lease
//!    TTL, a few intervals);
//! 2. loads every instance's state and the silences from the store: the store
//!    is the truth, so a restarted process (or a standby that just took over)
//!    carries on where the last evaluation left off, neither re-sending nor
//!    forgetting;
//! 3. steps each instance, stores its new state, and only then hands the
//!    notifications, if any and not silenced, to the [`Dispatcher`], which
//!    records and delivers them in the background: every notice of one rule
//!    in one project in one evaluation as one group (with the instances
//!    still firing beside them), so four segments firing together make one
//!    email, not four. Storing first means a crash
//!    in between loses a notice rather than sending it twice after a restart
//!    (at most once: the on-call engineer still sees the state on the
//!    dashboard).
//!
//! Metrics (names and labels; their help texts are declared centrally by the
//! binary): `synchealth_alert_evaluations_total` and
//! `synchealth_alert_evaluation_errors_total` count this replica's
//! evaluations (those holding the lease) and the failed ones;
//! `synchealth_alert_instances{state}` is how many instances this replica's
//! last evaluation left in each state (`ok`, `pending`, `firing`,
//! `resolved`; zero on a standby, so the sum over replicas is the truth).
//!
//! Deliveries still `pending` when their process stopped (an SMTP server down
//! through a restart) are resumed by the next lease holder, when it takes the
//! lease, from the stored record, rule and instance state.

use std::collections::HashMap;
use std::time::Duration;

use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::alerting::EVALUATOR_LEASE;
use synchealth_store::signals::DEFAULT_QUEUE_LAG_THRESHOLD_MS;
use synchealth_store::{
    AlertInstanceRecord, Dimension, GroupKey, Grouping, NotificationRecord, Query, SharedStore, Silence, Summary,
};
use time::OffsetDateTime;

use crate::delivery::{AlertGroup, AlertMessage, Delivery, Dispatcher, MessageKind};
use crate::error::Result;
use crate::{AlertInstance, AlertKey, AlertState, Notification, Observation, Rule, Verdict};

/// One notification produced by an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// The project it concerns.
    pub project: ProjectName,
    /// The alert instance.
    pub key: AlertKey,
    /// What happened.
    pub notification: Notification,
    /// The metric value that triggered it.
    pub value: Option<f64>,
}

/// Runs rules against a store, keeps every alert instance's state in it, and
/// hands notifications to the dispatcher.
#[derive(Debug)]
pub struct Evaluator {
    store: SharedStore,
    rules: Vec<Rule>,
    dispatcher: Option<Dispatcher>,
    holder: String,
    lease_ttl: Duration,
    instances: HashMap<(ProjectName, AlertKey), AlertInstance>,
    /// Deliveries in flight.
    deliveries: Vec<Delivery>,
    /// Whether the last evaluation held the lease: on taking it, the
    /// deliveries a previous holder left pending are resumed.
    holding: bool,
}

/// Dropping the evaluator (the role stopping) cancels its deliveries in
/// flight, as the end of the process would; they stay `pending` in the store
/// and the next lease holder resumes them.
impl Drop for Evaluator {
    fn drop(&mut self) {
        for delivery in &self.deliveries {
            delivery.handle.abort();
        }
    }
}

/// Evaluations this replica made (holding the lease).
const EVALUATIONS: &str = "synchealth_alert_evaluations_total";
/// Evaluations that failed (a store error, mostly).
const EVALUATION_ERRORS: &str = "synchealth_alert_evaluation_errors_total";
/// Instances per state after this replica's last evaluation.
const INSTANCES: &str = "synchealth_alert_instances";
/// The states of [`AlertState::name`].
const STATES: [&str; 4] = ["ok", "pending", "firing", "resolved"];

/// How many of the latest notifications are scanned for pending ones when
/// the lease is taken.
const RESUME_SCAN: u32 = 1000;

/// The segment as stored and silenced: `dimension=value`.
pub fn segment_label(key: &AlertKey) -> Option<String> {
    key.segment.as_ref().map(|(d, v)| format!("{}={v}", d.column()))
}

/// The key of a stored instance; `None` if its segment is not understood.
fn key_of(record: &AlertInstanceRecord) -> Option<AlertKey> {
    match &record.segment {
        None => Some(AlertKey::total(record.rule.clone())),
        Some(segment) => {
            let (dimension, value) = segment.split_once('=')?;
            Some(AlertKey::segment(record.rule.clone(), Dimension::parse(dimension)?, value))
        }
    }
}

fn time_of(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The state a stored record says.
fn state_of(record: &AlertInstanceRecord) -> AlertState {
    let since = time_of(record.since_ms);
    match record.state.as_str() {
        "pending" => AlertState::Pending { since },
        "firing" => AlertState::Firing {
            since,
            last_notified: record.last_notified_ms.map_or(since, time_of),
            clear_since: record.clear_since_ms.map(time_of),
        },
        "resolved" => AlertState::Resolved { at: since },
        _ => AlertState::Ok,
    }
}

/// What pending records were dispatched together: project, rule, channel
/// and creation time.
type PendingGroup = (ProjectName, String, String, i64);

/// The start of a firing state's episode.
fn firing_since(state: AlertState) -> Option<OffsetDateTime> {
    match state {
        AlertState::Firing { since, .. } => Some(since),
        _ => None,
    }
}

fn verdict_name(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(Verdict::Holds) => "holds",
        Some(Verdict::Clear) => "clear",
        Some(Verdict::InsufficientData) => "insufficient_data",
        None => "",
    }
}

impl Evaluator {
    /// An evaluator that only records states (no channels), holding the lease
    /// under a random name.
    pub fn new(store: SharedStore, rules: Vec<Rule>) -> Self {
        // Present from the start, at zero, so a dashboard or alert on them
        // does not wait for the first event.
        metrics::counter!(EVALUATIONS).increment(0);
        metrics::counter!(EVALUATION_ERRORS).increment(0);
        for state in STATES {
            metrics::gauge!(INSTANCES, "state" => state).set(0.0);
        }
        Evaluator {
            store,
            rules,
            dispatcher: None,
            holder: format!("evaluator-{}", uuid::Uuid::new_v4()),
            lease_ttl: Duration::from_secs(45),
            instances: HashMap::new(),
            deliveries: Vec::new(),
            holding: false,
        }
    }

    /// Delivers notifications through `dispatcher`.
    pub fn with_dispatcher(mut self, dispatcher: Dispatcher) -> Self {
        self.dispatcher = Some(dispatcher);
        self
    }

    /// Holds the evaluator lease as `holder` (unique per replica) for `ttl`
    /// per evaluation; a standby takes over `ttl` after the holder's last
    /// evaluation. A few evaluation intervals is right.
    pub fn with_lease(mut self, holder: impl Into<String>, ttl: Duration) -> Self {
        self.holder = holder.into();
        self.lease_ttl = ttl;
        self
    }

    /// The rules evaluated.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every alert instance of the last evaluation, with its state.
    pub fn instances(&self) -> impl Iterator<Item = (&ProjectName, &AlertInstance)> {
        self.instances.iter().map(|((project, _), instance)| (project, instance))
    }

    /// Waits for the deliveries started so far and returns their final
    /// records (for tests and one-shot commands; the loop does not wait).
    pub async fn wait_for_deliveries(&mut self) -> Vec<NotificationRecord> {
        let mut done = Vec::new();
        for delivery in self.deliveries.drain(..) {
            match delivery.handle.await {
                Ok(records) => done.extend(records),
                Err(e) => tracing::warn!(error = %e, "A delivery task failed."),
            }
        }
        done
    }

    /// One evaluation of every rule for every project at `now`; an empty
    /// list when another replica holds the lease.
    #[tracing::instrument(skip_all, fields(holder = %self.holder))]
    pub async fn evaluate_once(&mut self, now: OffsetDateTime) -> Result<Vec<Fired>> {
        let result = self.evaluate(now).await;
        if self.holding {
            metrics::counter!(EVALUATIONS).increment(1);
        }
        if result.is_err() {
            metrics::counter!(EVALUATION_ERRORS).increment(1);
        }
        for state in STATES {
            let count = self.instances.values().filter(|i| i.state.name() == state).count();
            metrics::gauge!(INSTANCES, "state" => state).set(count as f64);
        }
        result
    }

    async fn evaluate(&mut self, now: OffsetDateTime) -> Result<Vec<Fired>> {
        self.deliveries.retain(|d| !d.handle.is_finished());
        let now_ms = unix_ms(now);
        let ttl_ms = i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        if !self.store.try_lease(EVALUATOR_LEASE, &self.holder, now_ms, ttl_ms).await? {
            tracing::debug!("Another replica holds the evaluator lease; skipping.");
            self.instances.clear();
            self.holding = false;
            return Ok(Vec::new());
        }
        let mut stored: HashMap<(ProjectName, AlertKey), AlertInstanceRecord> = HashMap::new();
        for record in self.store.alert_instances().await? {
            if let Some(key) = key_of(&record) {
                stored.insert((record.project.clone(), key), record);
            }
        }
        if !self.holding {
            self.holding = true;
            self.resume_pending(now, &stored).await?;
        }
        let silences = self.store.silences(now_ms).await?;
        let projects = self.store.projects().await?;
        let mut fired = Vec::new();
        self.instances.clear();
        for rule in self.rules.clone() {
            for project in &projects {
                self.evaluate_rule(&rule, project, now, &stored, &silences, &mut fired).await?;
            }
        }
        Ok(fired)
    }

    async fn evaluate_rule(
        &mut self,
        rule: &Rule,
        project: &ProjectName,
        now: OffsetDateTime,
        stored: &HashMap<(ProjectName, AlertKey), AlertInstanceRecord>,
        silences: &[Silence],
        fired: &mut Vec<Fired>,
    ) -> Result<()> {
        let window = rule.window_at(now);
        let query = Query {
            project: project.clone(),
            from_ms: unix_ms(window.start),
            to_ms: unix_ms(window.end),
            filters: rule.filters.clone(),
            queue_threshold: rule.queue_threshold(),
        };
        let grouping = rule.group_by.map_or(Grouping::Total, Grouping::By);
        let groups = self.store.aggregate(&query, grouping).await?;
        let mut observed: HashMap<AlertKey, Observation> = HashMap::new();
        for (group, aggregate) in groups {
            let key = match (group, rule.group_by) {
                (GroupKey::Segment(value), Some(dimension)) => AlertKey::segment(rule.name.clone(), dimension, value),
                _ => AlertKey::total(rule.name.clone()),
            };
            let mut observation = Observation::of(&Summary::from_aggregate(&aggregate), rule.metric);
            if rule.metric.is_queue_lag() {
                // Per device, not per event: read for the group's own filters.
                let filters = match &key.segment {
                    Some((dimension, value)) => rule.filters.with_segment(*dimension, value),
                    None => rule.filters.clone(),
                };
                let lags = self.store.queue_lags(&Query { filters, ..query.clone() }).await?;
                observation.value = rule.metric.of_queue_lag(&lags.summary(DEFAULT_QUEUE_LAG_THRESHOLD_MS));
            }
            observed.insert(key, observation);
        }
        if rule.group_by.is_none() {
            observed.entry(AlertKey::total(rule.name.clone())).or_insert(Observation { value: None, events: 0 });
        }
        // Segments that went silent still step (on no data), so a firing
        // alert for a segment that stopped reporting resolves in time instead
        // of firing forever. Quiet ones that are just `ok` need no step.
        for ((p, key), record) in stored {
            if p == project && key.rule == rule.name && record.state != "ok" {
                observed.entry(key.clone()).or_insert(Observation { value: None, events: 0 });
            }
        }
        let now_ms = unix_ms(now);
        let mut observed: Vec<(AlertKey, Observation)> = observed.into_iter().collect();
        observed.sort_by_key(|(key, _)| segment_label(key));
        let mut changed = Vec::new();
        let mut still_firing = Vec::new();
        for (key, observation) in observed {
            let previous = stored.get(&(project.clone(), key.clone()));
            let segment = segment_label(&key);
            let silenced_until = silences
                .iter()
                .filter(|s| s.covers(project, &rule.name, segment.as_deref(), now_ms))
                .map(|s| s.ends_at_ms)
                .max();
            let mut instance = AlertInstance {
                key: key.clone(),
                state: previous.map_or(AlertState::Ok, state_of),
                verdict: None,
                silenced_until: silenced_until.map(time_of),
            };
            let before = instance.state;
            let notification = instance.observe(observation, now, rule);
            let record = self.record(project, rule, &instance, before, previous, observation, now_ms, silenced_until);
            self.store.put_alert_instance(&record).await?;
            if before != instance.state {
                tracing::info!(
                    project = %project, alert = %key, from = before.name(), to = instance.state.name(),
                    value = ?observation.value, events = observation.events, "Alert changed state."
                );
            }
            let started_at = firing_since(instance.state).or(firing_since(before)).unwrap_or(now);
            if let Some(notification) = notification {
                tracing::warn!(
                    project = %project, alert = %key, fingerprint = %record.fingerprint, state = %record.state,
                    value = ?observation.value, events = observation.events, ?notification, "Alert notification."
                );
                let kind = MessageKind::of(notification);
                changed.push(self.message(kind, project, rule, &key, &record, observation, now, started_at));
                fired.push(Fired {
                    project: project.clone(),
                    key: key.clone(),
                    notification,
                    value: observation.value,
                });
            } else if silenced_until.is_some() && before != instance.state {
                tracing::info!(project = %project, alert = %key, "Alert silenced; notification withheld.");
            } else if instance.state.is_firing() && !instance.is_silenced(now) {
                still_firing.push(self.message(
                    MessageKind::Firing,
                    project,
                    rule,
                    &key,
                    &record,
                    observation,
                    now,
                    started_at,
                ));
            }
            self.instances.insert((project.clone(), key), instance);
        }
        if let (Some(dispatcher), Some(group)) = (&self.dispatcher, AlertGroup::new(changed, still_firing)) {
            let deliveries = dispatcher.dispatch(&group, &rule.channels).await?;
            self.deliveries.extend(deliveries);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        project: &ProjectName,
        rule: &Rule,
        instance: &AlertInstance,
        before: AlertState,
        previous: Option<&AlertInstanceRecord>,
        observation: Observation,
        now_ms: i64,
        silenced_until_ms: Option<i64>,
    ) -> AlertInstanceRecord {
        let (since_ms, last_notified_ms, clear_since_ms) = match instance.state {
            AlertState::Ok => {
                let kept = previous.filter(|_| before == AlertState::Ok).map_or(now_ms, |p| p.since_ms);
                (kept, None, None)
            }
            AlertState::Pending { since } => (unix_ms(since), None, None),
            AlertState::Firing { since, last_notified, clear_since } => {
                (unix_ms(since), Some(unix_ms(last_notified)), clear_since.map(unix_ms))
            }
            AlertState::Resolved { at } => (unix_ms(at), previous.and_then(|p| p.last_notified_ms), None),
        };
        AlertInstanceRecord {
            fingerprint: instance.key.fingerprint(),
            rule: rule.name.clone(),
            project: project.clone(),
            segment: segment_label(&instance.key),
            state: instance.state.name().to_string(),
            value: observation.value,
            threshold: rule.threshold,
            since_ms,
            last_evaluated_ms: now_ms,
            last_notified_ms,
            clear_since_ms,
            verdict: verdict_name(instance.verdict).to_string(),
            events: observation.events,
            severity: rule.severity.as_str().to_string(),
            silenced_until_ms,
        }
    }

    /// The message of one instance's notice (or, for `MessageKind::Firing`
    /// without a notice, of its current firing state).
    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        kind: MessageKind,
        project: &ProjectName,
        rule: &Rule,
        key: &AlertKey,
        record: &AlertInstanceRecord,
        observation: Observation,
        now: OffsetDateTime,
        started_at: OffsetDateTime,
    ) -> AlertMessage {
        let since = match kind {
            MessageKind::Resolved(_) => now,
            _ => time_of(record.since_ms),
        };
        let public_url = self.dispatcher.as_ref().map_or("", Dispatcher::public_url);
        AlertMessage::new(
            kind,
            project,
            rule,
            key.segment.clone(),
            observation.value,
            observation.events,
            now,
            since,
            started_at,
            record.fingerprint.clone(),
            public_url,
        )
    }

    /// Resumes the deliveries a stopped holder left `pending`, rebuilding
    /// each message from its rule and the instance's stored state.
    async fn resume_pending(
        &mut self,
        now: OffsetDateTime,
        stored: &HashMap<(ProjectName, AlertKey), AlertInstanceRecord>,
    ) -> Result<()> {
        let Some(dispatcher) = self.dispatcher.clone() else {
            return Ok(());
        };
        let pending: Vec<NotificationRecord> = self
            .store
            .notifications(None, RESUME_SCAN)
            .await?
            .into_iter()
            .filter(|n| n.status == "pending")
            // This process's own retries, if it held the lease before, go on.
            .filter(|n| !self.deliveries.iter().any(|d| d.ids.contains(&n.id)))
            .collect();
        // One delivery per channel's records of one group, as dispatched.
        let mut groups: Vec<(PendingGroup, Vec<NotificationRecord>)> = Vec::new();
        for record in pending {
            let key = (record.project.clone(), record.rule.clone(), record.channel.clone(), record.created_at_ms);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, records)) => records.push(record),
                None => groups.push((key, vec![record])),
            }
        }
        for ((project, rule_name, _, created_at_ms), records) in groups {
            let mut messages = Vec::new();
            let mut kept = Vec::new();
            let rule = self.rules.iter().find(|r| r.name == rule_name);
            let at = time_of(created_at_ms);
            for mut record in records {
                let instance =
                    stored.iter().find(|((p, _), r)| *p == record.project && r.fingerprint == record.fingerprint);
                let kind = match record.kind.as_str() {
                    "firing" => Some(MessageKind::Firing),
                    "repeat" => Some(MessageKind::Repeat),
                    "resolved" => Some(MessageKind::Resolved(crate::ResolveReason::Recovered)),
                    _ => None,
                };
                let (Some(((_, key), instance)), Some(rule), Some(kind)) = (instance, rule, kind) else {
                    record.status = "failed".into();
                    record.last_error = Some("not resumed after a restart: its rule or alert is gone".into());
                    record.updated_at_ms = unix_ms(now);
                    self.store.put_notification(&record).await?;
                    continue;
                };
                // A resolved instance's stored `since` is its resolution,
                // the best start left once its firing state is gone.
                let since = if record.kind == "resolved" { at } else { time_of(instance.since_ms) };
                messages.push(AlertMessage::new(
                    kind,
                    &project,
                    rule,
                    key.segment.clone(),
                    instance.value,
                    instance.events,
                    at,
                    since,
                    time_of(instance.since_ms),
                    record.fingerprint.clone(),
                    dispatcher.public_url(),
                ));
                kept.push(record);
            }
            let firing: Vec<AlertMessage> = match rule {
                Some(rule) => stored
                    .iter()
                    .filter(|((p, k), r)| *p == project && k.rule == rule.name && r.state == "firing")
                    .map(|((_, k), r)| {
                        AlertMessage::new(
                            MessageKind::Firing,
                            &project,
                            rule,
                            k.segment.clone(),
                            r.value,
                            r.events,
                            at,
                            time_of(r.since_ms),
                            time_of(r.since_ms),
                            r.fingerprint.clone(),
                            dispatcher.public_url(),
                        )
                    })
                    .collect(),
                None => Vec::new(),
            };
            let Some(group) = AlertGroup::new(messages, firing) else {
                continue;
            };
            // Dispatch sorted the notices by segment; the records follow.
            kept.sort_by_key(|r| group.changed().iter().position(|m| m.fingerprint == r.fingerprint));
            tracing::info!(id = %kept[0].id, channel = %kept[0].channel, notices = kept.len(), "Resuming a pending delivery.");
            self.deliveries.push(dispatcher.resume(kept, group));
        }
        Ok(())
    }

    /// Evaluates every `interval` until the task is dropped.
    pub async fn run(mut self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.evaluate_once(OffsetDateTime::now_utc()).await {
                tracing::warn!(error = %e, "Alert evaluation failed; retrying next interval.");
            }
        }
    }
}
