//! The evaluation loop: every interval, each rule is read over its window
//! for every project, through the same store queries and metric definitions
//! as the dashboard, and each alert instance (rule × project × segment) takes
//! one step of its state machine.
//!
//! [`Evaluator::evaluate_once`] is public so tests step it instead of
//! sleeping. Notifications are returned and logged here; their delivery
//! (email, webhooks), the persistence of instance state and the lease that
//! keeps replicas from double-sending build on this loop.

use std::collections::HashMap;
use std::time::Duration;

use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::{GroupKey, Grouping, Query, SharedStore, Summary};
use time::OffsetDateTime;

use crate::{AlertInstance, AlertKey, Notification, Observation, Rule};

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

/// Runs rules against a store and keeps every alert instance's state.
#[derive(Debug)]
pub struct Evaluator {
    store: SharedStore,
    rules: Vec<Rule>,
    instances: HashMap<(ProjectName, AlertKey), AlertInstance>,
}

impl Evaluator {
    /// An evaluator with no history.
    pub fn new(store: SharedStore, rules: Vec<Rule>) -> Self {
        Evaluator { store, rules, instances: HashMap::new() }
    }

    /// The rules evaluated.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every alert instance seen so far, with its state.
    pub fn instances(&self) -> impl Iterator<Item = (&ProjectName, &AlertInstance)> {
        self.instances.iter().map(|((project, _), instance)| (project, instance))
    }

    /// One evaluation of every rule for every project at `now`.
    #[tracing::instrument(skip_all)]
    pub async fn evaluate_once(&mut self, now: OffsetDateTime) -> synchealth_store::Result<Vec<Fired>> {
        let projects = self.store.projects().await?;
        let mut fired = Vec::new();
        for rule in self.rules.clone() {
            for project in &projects {
                self.evaluate_rule(&rule, project, now, &mut fired).await?;
            }
        }
        Ok(fired)
    }

    async fn evaluate_rule(
        &mut self,
        rule: &Rule,
        project: &ProjectName,
        now: OffsetDateTime,
        fired: &mut Vec<Fired>,
    ) -> synchealth_store::Result<()> {
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
            observed.insert(key, Observation::of(&Summary::from_aggregate(&aggregate), rule.metric));
        }
        if rule.group_by.is_none() {
            observed.entry(AlertKey::total(rule.name.clone())).or_insert(Observation { value: None, events: 0 });
        }
        // Segments that went silent still step (on no data), so a firing
        // alert for a segment that stopped reporting resolves in time instead
        // of firing forever.
        for (p, key) in self.instances.keys() {
            if p == project && key.rule == rule.name {
                observed.entry(key.clone()).or_insert(Observation { value: None, events: 0 });
            }
        }
        for (key, observation) in observed {
            let instance = self
                .instances
                .entry((project.clone(), key.clone()))
                .or_insert_with(|| AlertInstance::new(key.clone()));
            if let Some(notification) = instance.observe(observation, now, rule) {
                tracing::warn!(
                    project = %project,
                    alert = %key,
                    fingerprint = %key.fingerprint(),
                    state = instance.state.name(),
                    value = ?observation.value,
                    events = observation.events,
                    ?notification,
                    "Alert notification."
                );
                fired.push(Fired { project: project.clone(), key, notification, value: observation.value });
            }
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
