//! Keeping what the app hands over inside the contract's bounds: conflict
//! details, the queue's oldest change and custom dimensions. The collector
//! rejects an event that breaks one of them, and a rejected event is lost;
//! the app's strings and counts are not the app's fault to lose data over.
//! So instead of refusing, the probe bounds each input (cut at a character
//! boundary, folded, dropped), counts what it changed by reason in
//! `ProbeStats::adjusted` and logs it once per reason, and the event goes.
//!
//! The rules, which every binding documents in its own words:
//! - a conflict entity is cut to 64 characters, an empty one is `unknown`;
//!   entries with the same entity, kind and resolution are merged, entries
//!   with a count of 0 left out; past 32 entries the 31 largest are kept and
//!   the rest folded into one entry of entity `other` (the kind and the
//!   resolution the most of the folded conflicts had), so no conflict is
//!   lost; `conflicts` is raised to the entries' sum when the app gave less;
//! - `queue_oldest_at` is left out when the queue is empty or the time is
//!   before 2000 (the collector's floor), and brought back to the attempt's
//!   end when it is later (a pending change cannot be younger than that);
//! - a dimension key must be `[a-z][a-z0-9_]*` of at most 32 characters, or
//!   the dimension is dropped; an empty value drops it too; a value is cut to
//!   64 characters; past 8 keys, later ones are dropped (the app's
//!   configured ones are placed first, an attempt's may replace them).

use std::collections::BTreeMap;

use synchealth_schema::{
    ConflictDetail, ConflictKind, ConflictResolution, SyncEvent, MAX_CONFLICT_DETAILS, MAX_DIMENSIONS,
    MAX_DIMENSION_KEY_CHARS, MAX_DIMENSION_VALUE_CHARS, MAX_ENTITY_CHARS,
};
use time::OffsetDateTime;

use crate::shared::Counters;

/// Entity of the entry the smallest conflict details are folded into.
pub(crate) const FOLDED_ENTITY: &str = "other";
/// Most distinct entries one attempt gathers before folding on the caller's
/// thread: a loop over thousands of record types must not grow without end.
pub(crate) const MAX_GATHERED_DETAILS: usize = 4 * MAX_CONFLICT_DETAILS;
/// The collector's earliest acceptable time, 2000-01-01 (Unix ms).
const EARLIEST_MS: i64 = synchealth_schema::EARLIEST_EVENT_TIME_MS;

/// `text` cut to at most `max` characters, at a character boundary.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// Adds `count` conflicts to `details`, merging an equal entry, the entity
/// cut to `entity_chars`. On the caller's thread (an allocation for the
/// entity and a short scan) that is one past the bound, so the worker, which
/// cuts to the bound, still sees the cut and counts it.
pub(crate) fn add_conflict(
    details: &mut Vec<ConflictDetail>,
    entity: &str,
    entity_chars: usize,
    kind: ConflictKind,
    resolution: ConflictResolution,
    count: u32,
) {
    if count == 0 {
        return;
    }
    let entity = if entity.is_empty() { "unknown" } else { entity };
    let entity = truncate_chars(entity, entity_chars);
    let same =
        |d: &&mut ConflictDetail, entity: &str| d.entity == entity && d.kind == kind && d.resolution == resolution;
    if let Some(d) = details.iter_mut().find(|d| same(d, &entity)) {
        d.count = d.count.saturating_add(count);
        return;
    }
    if details.len() >= MAX_GATHERED_DETAILS {
        // Folded now rather than kept: the worker folds these anyway.
        if let Some(d) = details.iter_mut().find(|d| same(d, FOLDED_ENTITY)) {
            d.count = d.count.saturating_add(count);
            return;
        }
        details.push(ConflictDetail { entity: FOLDED_ENTITY.into(), kind, resolution, count });
        return;
    }
    details.push(ConflictDetail { entity, kind, resolution, count });
}

/// Counts one adjustment and logs its reason, with what it was about, the
/// first time.
fn adjusted(counters: &Counters, reason: &'static str, what: &str) {
    if counters.add_adjusted(reason) {
        let what = truncate_chars(what, 80);
        tracing::warn!(reason, what, "An input was bounded to fit the contract (logged once per reason).");
    }
}

/// Brings an event's conflict details within the contract.
pub(crate) fn conflict_details(event: &mut SyncEvent, counters: &Counters) {
    if event.conflict_details.is_empty() {
        return;
    }
    let mut merged: Vec<ConflictDetail> = Vec::with_capacity(event.conflict_details.len());
    for d in std::mem::take(&mut event.conflict_details) {
        let chars = d.entity.chars().count();
        if chars > MAX_ENTITY_CHARS || chars == 0 {
            adjusted(counters, if chars == 0 { "entity_empty" } else { "entity_truncated" }, &d.entity);
        }
        if d.count == 0 {
            adjusted(counters, "conflict_count_zero", &d.entity);
        }
        add_conflict(&mut merged, &d.entity, MAX_ENTITY_CHARS, d.kind, d.resolution, d.count);
    }
    if merged.len() > MAX_CONFLICT_DETAILS {
        adjusted(counters, "conflict_details_folded", &format!("{} entries", merged.len()));
        merged = fold(merged);
    }
    // The sum must fit the u32 `conflicts`: trimmed from the smallest entries.
    let mut excess = merged.iter().map(|d| u64::from(d.count)).sum::<u64>().saturating_sub(u64::from(u32::MAX));
    if excess > 0 {
        merged.sort_by_key(|d| std::cmp::Reverse(d.count));
        while let (true, Some(last)) = (excess > 0, merged.last_mut()) {
            let cut = u64::from(last.count).min(excess);
            last.count -= u32::try_from(cut).unwrap_or(last.count);
            excess -= cut;
            if last.count == 0 {
                merged.pop();
            }
        }
    }
    let total = u32::try_from(merged.iter().map(|d| u64::from(d.count)).sum::<u64>()).unwrap_or(u32::MAX);
    if event.conflicts < total {
        if event.conflicts > 0 {
            adjusted(counters, "conflicts_raised", &format!("{} to {total}", event.conflicts));
        }
        event.conflicts = total;
    }
    event.conflict_details = merged;
}

/// The 31 largest entries and one `other` entry holding the rest.
fn fold(mut details: Vec<ConflictDetail>) -> Vec<ConflictDetail> {
    // Largest first; ties in a fixed order, so a rerun folds the same way.
    details.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (&a.entity, a.kind.as_str()).cmp(&(&b.entity, b.kind.as_str())))
    });
    let rest = details.split_off(MAX_CONFLICT_DETAILS - 1);
    let mut kinds: BTreeMap<&str, (u64, ConflictKind)> = BTreeMap::new();
    let mut resolutions: BTreeMap<&str, (u64, ConflictResolution)> = BTreeMap::new();
    let mut count = 0u32;
    for d in &rest {
        kinds.entry(d.kind.as_str()).or_insert((0, d.kind)).0 += u64::from(d.count);
        resolutions.entry(d.resolution.as_str()).or_insert((0, d.resolution)).0 += u64::from(d.count);
        count = count.saturating_add(d.count);
    }
    let kind = kinds.values().max_by_key(|(n, _)| *n).map_or(ConflictKind::Other, |(_, k)| *k);
    let resolution = resolutions.values().max_by_key(|(n, _)| *n).map_or(ConflictResolution::Custom, |(_, r)| *r);
    match details.iter_mut().find(|d| d.entity == FOLDED_ENTITY && d.kind == kind && d.resolution == resolution) {
        Some(d) => d.count = d.count.saturating_add(count),
        None => details.push(ConflictDetail { entity: FOLDED_ENTITY.into(), kind, resolution, count }),
    }
    details
}

/// `queue_oldest_at` as the event may carry it: none for an empty queue or
/// before 2000, at most the attempt's end.
pub(crate) fn queue_oldest_at(event: &mut SyncEvent, counters: &Counters) {
    let Some(oldest) = event.queue_oldest_at else { return };
    if event.queue_depth == 0 {
        event.queue_oldest_at = None;
        return;
    }
    let ms = unix_ms(oldest);
    if ms < EARLIEST_MS {
        adjusted(counters, "queue_oldest_at_out_of_range", &ms.to_string());
        event.queue_oldest_at = None;
        return;
    }
    let duration = time::Duration::milliseconds(i64::try_from(event.duration_ms).unwrap_or(i64::MAX));
    let end = event.occurred_at.saturating_add(duration);
    if oldest > end {
        adjusted(counters, "queue_oldest_at_after_attempt", &ms.to_string());
        event.queue_oldest_at = Some(end);
    }
}

/// Adds one dimension to `into` if it is valid and there is room; counts
/// what it changed or dropped. An existing key is replaced.
pub(crate) fn add_dimension(into: &mut BTreeMap<String, String>, key: &str, value: &str, counters: &Counters) {
    if !is_dimension_key(key) {
        adjusted(counters, "dimension_key_invalid", &truncate_chars(key, MAX_DIMENSION_KEY_CHARS + 8));
        return;
    }
    if value.is_empty() {
        adjusted(counters, "dimension_value_empty", key);
        return;
    }
    if !into.contains_key(key) && into.len() >= MAX_DIMENSIONS {
        adjusted(counters, "too_many_dimensions", key);
        return;
    }
    let value = if value.chars().count() > MAX_DIMENSION_VALUE_CHARS {
        adjusted(counters, "dimension_value_truncated", key);
        truncate_chars(value, MAX_DIMENSION_VALUE_CHARS)
    } else {
        value.to_string()
    };
    into.insert(key.to_string(), value);
}

/// The dimensions an event goes with: the configured ones, then the
/// attempt's (or the app-made event's own) over them.
pub(crate) fn dimensions<'a>(
    configured: &BTreeMap<String, String>,
    own: impl IntoIterator<Item = (&'a str, &'a str)>,
    counters: &Counters,
) -> BTreeMap<String, String> {
    let mut out = configured.clone();
    for (key, value) in own {
        add_dimension(&mut out, key, value, counters);
    }
    out
}

/// `[a-z][a-z0-9_]*`, at most 32 characters: the collector's rule.
fn is_dimension_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_DIMENSION_KEY_CHARS
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn detail(entity: &str, count: u32) -> ConflictDetail {
        ConflictDetail {
            entity: entity.into(),
            kind: ConflictKind::UpdateUpdate,
            resolution: ConflictResolution::LastWriteWins,
            count,
        }
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_chars("pushpull", 4), "push");
        assert_eq!(truncate_chars("ééé", 2), "éé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }

    #[test]
    fn equal_conflicts_merge_and_zero_counts_are_left_out() {
        let mut d = Vec::new();
        add_conflict(
            &mut d,
            "todo",
            MAX_ENTITY_CHARS,
            ConflictKind::UpdateUpdate,
            ConflictResolution::LastWriteWins,
            2,
        );
        add_conflict(
            &mut d,
            "todo",
            MAX_ENTITY_CHARS,
            ConflictKind::UpdateUpdate,
            ConflictResolution::LastWriteWins,
            3,
        );
        add_conflict(
            &mut d,
            "todo",
            MAX_ENTITY_CHARS,
            ConflictKind::UpdateDelete,
            ConflictResolution::LastWriteWins,
            1,
        );
        add_conflict(
            &mut d,
            "list",
            MAX_ENTITY_CHARS,
            ConflictKind::UpdateUpdate,
            ConflictResolution::LastWriteWins,
            0,
        );
        add_conflict(&mut d, "", MAX_ENTITY_CHARS, ConflictKind::Other, ConflictResolution::Manual, 1);
        let got: Vec<(&str, u32)> = d.iter().map(|d| (d.entity.as_str(), d.count)).collect();
        assert_eq!(got, vec![("todo", 5), ("todo", 1), ("unknown", 1)]);
    }

    #[test]
    fn past_32_entries_the_smallest_are_folded_into_other_and_no_count_is_lost() {
        let counters = Counters::default();
        let mut details: Vec<ConflictDetail> = (0..40).map(|i| detail(&format!("t{i:02}"), 100 - i)).collect();
        details[35].resolution = ConflictResolution::ServerWins;
        let total: u32 = details.iter().map(|d| d.count).sum();
        let mut event = event();
        event.conflict_details = details;
        conflict_details(&mut event, &counters);
        assert_eq!(event.conflict_details.len(), MAX_CONFLICT_DETAILS);
        assert_eq!(event.conflict_details.iter().map(|d| d.count).sum::<u32>(), total);
        assert_eq!(event.conflicts, total);
        let other = event.conflict_details.last().unwrap();
        assert_eq!((other.entity.as_str(), other.count), (FOLDED_ENTITY, (31..40).map(|i| 100 - i).sum()));
        assert_eq!(other.resolution, ConflictResolution::LastWriteWins, "the resolution most of them had");
        assert_eq!(event.conflict_details[30].entity, "t30");
        assert_eq!(counters.adjusted().get("conflict_details_folded"), Some(&1));
    }

    #[test]
    fn a_sum_past_u32_is_trimmed_from_the_smallest_entries() {
        let counters = Counters::default();
        let mut event = event();
        event.conflict_details = vec![detail("a", u32::MAX), detail("b", 7)];
        conflict_details(&mut event, &counters);
        assert_eq!(event.conflict_details, vec![detail("a", u32::MAX)]);
        assert_eq!(event.conflicts, u32::MAX);
    }

    #[test]
    fn dimensions_are_checked_cut_and_capped_and_each_change_is_counted() {
        let counters = Counters::default();
        let configured = dimensions(
            &BTreeMap::new(),
            [("engine", "powersync"), ("Plan", "pro"), ("region", ""), ("plan", &*"é".repeat(70))],
            &counters,
        );
        assert_eq!(configured.len(), 2);
        assert_eq!(configured["plan"].chars().count(), MAX_DIMENSION_VALUE_CHARS);
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let merged =
            dimensions(&configured, keys.iter().map(|k| (k.as_str(), "v")).chain([("engine", "electric")]), &counters);
        assert_eq!(merged.len(), MAX_DIMENSIONS);
        assert_eq!(merged["engine"], "electric", "an attempt's value replaces the configured one");
        let adjusted = counters.adjusted();
        assert_eq!(adjusted.get("dimension_key_invalid"), Some(&1));
        assert_eq!(adjusted.get("dimension_value_empty"), Some(&1));
        assert_eq!(adjusted.get("dimension_value_truncated"), Some(&1));
        assert_eq!(adjusted.get("too_many_dimensions"), Some(&4));
    }

    #[test]
    fn queue_oldest_at_goes_only_with_a_queue_and_within_the_collectors_range() {
        let counters = Counters::default();
        let mut e = event();
        e.queue_oldest_at = Some(e.occurred_at - time::Duration::minutes(5));
        queue_oldest_at(&mut e, &counters);
        assert_eq!(e.queue_oldest_at, None, "an empty queue has no oldest change");
        e.queue_depth = 3;
        e.queue_oldest_at = Some(OffsetDateTime::UNIX_EPOCH);
        queue_oldest_at(&mut e, &counters);
        assert_eq!(e.queue_oldest_at, None);
        e.queue_oldest_at = Some(e.occurred_at + time::Duration::hours(1));
        queue_oldest_at(&mut e, &counters);
        assert_eq!(e.queue_oldest_at, Some(e.occurred_at + time::Duration::milliseconds(1200)));
        assert_eq!(counters.adjusted().len(), 2);
    }

    pub(crate) fn event() -> SyncEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a", "device_id": "d1",
            "occurred_at": "2026-11-21T10:00:00Z", "success": true, "duration_ms": 1200,
            "app_version": "2.3.0", "os": "android"
        }))
        .unwrap()
    }
}
