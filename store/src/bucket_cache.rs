//! Sub-hour series from memory, on both stores: the per-device half of each
//! whole time bucket a series has read (devices, queue depths, staleness),
//! stamped with the bucket's event count in `rollup_minute`.
//!
//! Why: a bucket's device figures come from each device's latest event in
//! it, which no rollup holds below the hour (`device_hour_latest` is per
//! hour), so a 5-minute series read every event of its window: 7 to 28
//! seconds for 6 to 24 hours at ten million events a day (issue 16). A past
//! bucket changes only when an event lands in it, and its figures are a
//! few hundred bytes whatever the fleet's size, so they are kept per bucket,
//! not per device: 288 buckets make a day at five minutes.
//!
//! A bucket is stamped with the sum of its minutes' counts in
//! `rollup_minute`, all segments, read before its events: any insert into
//! the bucket moves it (for a filtered series too, which then reads the
//! bucket again for nothing, rather than trusting a count of its own
//! segments that a later dimension could not have). The partial buckets at
//! a window's edges are read from `events` every time. On ClickHouse a
//! bucket's figures also carry its `rollup_minute` sums (summing a day of
//! minute rows' duration maps was most of a series' time), which the same
//! stamp guards; the compensations for copies are subtracted over the whole
//! window on every read, as for the hourly cache's sums. A space is one
//! (project, filters, step, queue threshold): the figures depend on all
//! four.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::metrics::{Aggregate, GroupKey, Grouping, Query};
use crate::pieces::split;

/// Buckets kept across all spaces (a few hundred bytes each): a week at
/// one minute is 10,080, so this holds a few dozen such series.
const MAX_BUCKETS: usize = 200_000;

/// Longest window served from memory; longer ones are read as before.
const MAX_WINDOW_MS: i64 = 31 * 24 * 3600 * 1000;

/// A bucket's start, ms.
pub(crate) type Bucket = i64;

/// The step, ms, of a grouping this cache serves: time buckets of whole
/// minutes that are not whole hours (those come from the hourly caches),
/// over a window of at most [`MAX_WINDOW_MS`].
pub(crate) fn serves(query: &Query, grouping: Grouping) -> Option<i64> {
    let Grouping::Time { step_seconds } = grouping else { return None };
    let step = i64::from(step_seconds);
    let fits = step > 0 && step % 60 == 0 && step % 3600 != 0 && query.to_ms - query.from_ms <= MAX_WINDOW_MS;
    fits.then_some(step * 1000)
}

/// The window's whole buckets (their starts) and its partial edges.
fn buckets(from_ms: i64, to_ms: i64, step_ms: i64) -> (Vec<Bucket>, Vec<(i64, i64)>) {
    match split(from_ms, to_ms, step_ms) {
        (Some((a, b)), edges) => ((a..b).step_by(step_ms as usize).collect(), edges),
        (None, edges) => (Vec::new(), edges),
    }
}

/// The `[first, last)` span, ms, of the minutes whose counts stamp the
/// window's whole buckets, if it has any.
pub(crate) fn stamp_span(query: &Query, step_ms: i64) -> Option<(i64, i64)> {
    let (whole, _) = buckets(query.from_ms, query.to_ms, step_ms);
    Some((*whole.first()?, whole.last()? + step_ms))
}

/// Contiguous buckets (sorted starts) as `[from, to)` ranges, ms.
fn ranges(buckets: &[Bucket], step_ms: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &b in buckets {
        match out.last_mut() {
            Some(range) if range.1 == b => range.1 = b + step_ms,
            _ => out.push((b, b + step_ms)),
        }
    }
    out
}

/// What a series reads: the cached figures of the buckets whose stamp
/// held, and the ranges to read from `events`: the stale buckets, gathered
/// where adjacent, and the partial edges.
#[derive(Debug)]
pub(crate) struct Plan {
    step_ms: i64,
    fresh: Vec<(Bucket, Aggregate)>,
    stale: Vec<Bucket>,
    pub(crate) loads: Vec<(i64, i64)>,
    pub(crate) edges: Vec<(i64, i64)>,
}

impl Plan {
    /// Every range to read, loads first.
    pub(crate) fn reads(&self) -> Vec<(i64, i64)> {
        [self.loads.as_slice(), self.edges.as_slice()].concat()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Space {
    project: String,
    filters: String,
    step_ms: i64,
    threshold: u32,
}

impl Space {
    fn of(query: &Query, step_ms: i64) -> Space {
        Space {
            project: query.project.as_str().to_string(),
            filters: format!("{:?}", query.filters),
            step_ms,
            threshold: query.queue_threshold,
        }
    }
}

#[derive(Default)]
struct Entries {
    /// Per bucket: its stamp and its per-device figures.
    buckets: HashMap<Bucket, (u64, Aggregate)>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    spaces: HashMap<Space, Entries>,
    tick: u64,
    total: usize,
}

/// The cache (one per store).
#[derive(Default)]
pub(crate) struct BucketCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for BucketCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BucketCache")
    }
}

impl BucketCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What to take from memory and what to read for `query`'s series at
    /// `step_ms`, given its whole buckets' stamps (`counts`, by bucket; a
    /// bucket missing there had no events).
    pub(crate) fn plan(&self, query: &Query, step_ms: i64, counts: &HashMap<Bucket, u64>) -> Plan {
        let (whole, edges) = buckets(query.from_ms, query.to_ms, step_ms);
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let mut plan = Plan { step_ms, fresh: Vec::new(), stale: Vec::new(), loads: Vec::new(), edges };
        match inner.spaces.get_mut(&Space::of(query, step_ms)) {
            None => plan.stale = whole,
            Some(entries) => {
                entries.used = tick;
                for b in whole {
                    let stamp = counts.get(&b).copied().unwrap_or(0);
                    match entries.buckets.get(&b) {
                        Some((cached, figures)) if *cached == stamp => plan.fresh.push((b, figures.clone())),
                        _ => plan.stale.push(b),
                    }
                }
            }
        }
        plan.loads = ranges(&plan.stale, step_ms);
        plan
    }

    /// The series' per-device figures by bucket: `plan`'s cached ones and
    /// `read`, the figures of its reads (by group key, Unix seconds),
    /// whose whole buckets are kept with the stamps of `counts` (read before
    /// them).
    pub(crate) fn answer(
        &self,
        query: &Query,
        plan: Plan,
        counts: &HashMap<Bucket, u64>,
        read: Vec<(GroupKey, Aggregate)>,
    ) -> Vec<(GroupKey, Aggregate)> {
        let Plan { step_ms, fresh, stale, .. } = plan;
        let mut kept: HashMap<Bucket, Aggregate> = stale.iter().map(|b| (*b, Aggregate::default())).collect();
        for (key, figures) in &read {
            if let GroupKey::Time(start_s) = key {
                if let Some(slot) = kept.get_mut(&start_s.saturating_mul(1000)) {
                    slot.clone_from(figures);
                }
            }
        }
        self.put(query, step_ms, kept, counts);
        let mut out: Vec<(GroupKey, Aggregate)> =
            fresh.into_iter().map(|(b, figures)| (GroupKey::Time(b.div_euclid(1000)), figures)).collect();
        out.extend(read);
        out
    }

    /// Keeps the figures of buckets read with the stamps of `counts`,
    /// evicting the least recently used spaces when full.
    fn put(
        &self,
        query: &Query,
        step_ms: i64,
        read: impl IntoIterator<Item = (Bucket, Aggregate)>,
        counts: &HashMap<Bucket, u64>,
    ) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let space = Space::of(query, step_ms);
        let entries = inner.spaces.entry(space.clone()).or_default();
        entries.used = tick;
        let before = entries.buckets.len();
        for (b, figures) in read {
            entries.buckets.insert(b, (counts.get(&b).copied().unwrap_or(0), figures));
        }
        let added = entries.buckets.len() - before;
        inner.total += added;
        while inner.total > MAX_BUCKETS {
            let Some(oldest) =
                inner.spaces.iter().filter(|(s, _)| **s != space).min_by_key(|(_, e)| e.used).map(|(s, _)| s.clone())
            else {
                break;
            };
            if let Some(gone) = inner.spaces.remove(&oldest) {
                inner.total -= gone.buckets.len();
            }
        }
    }

    /// Forgets a project's buckets (a window whose counts are no stamp).
    pub(crate) fn forget(&self, project: &str) {
        let mut inner = self.lock();
        let gone: usize = inner.spaces.iter().filter(|(s, _)| s.project == project).map(|(_, e)| e.buckets.len()).sum();
        inner.spaces.retain(|s, _| s.project != project);
        inner.total -= gone;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().total
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::metrics::Filters;

    fn query(os: Option<&str>) -> Query {
        Query {
            project: synchealth_schema::ProjectName::parse("p").unwrap(),
            from_ms: 0,
            to_ms: 3_600_000,
            filters: Filters { os: os.map(str::to_string), ..Filters::default() },
            queue_threshold: 100,
        }
    }

    fn figures(devices: u64) -> Aggregate {
        Aggregate { devices, ..Aggregate::default() }
    }

    #[test]
    fn only_sub_hour_steps_of_whole_minutes_are_served() {
        let q = query(None);
        assert_eq!(serves(&q, Grouping::Time { step_seconds: 300 }), Some(300_000));
        assert_eq!(serves(&q, Grouping::Time { step_seconds: 5400 }), Some(5_400_000));
        assert_eq!(serves(&q, Grouping::Time { step_seconds: 3600 }), None);
        assert_eq!(serves(&q, Grouping::Time { step_seconds: 90 }), None);
        assert_eq!(serves(&q, Grouping::Total), None);
        let long = Query { to_ms: MAX_WINDOW_MS + 1, ..q };
        assert_eq!(serves(&long, Grouping::Time { step_seconds: 300 }), None);
    }

    #[test]
    fn a_window_is_cut_into_whole_buckets_and_partial_edges() {
        let (whole, edges) = buckets(100_000, 1_000_000, 300_000);
        assert_eq!(whole, vec![300_000, 600_000]);
        assert_eq!(edges, vec![(100_000, 300_000), (900_000, 1_000_000)]);
        let (whole, edges) = buckets(300_000, 900_000, 300_000);
        assert_eq!((whole, edges), (vec![300_000, 600_000], vec![]));
        let (whole, edges) = buckets(310_000, 500_000, 300_000);
        assert_eq!((whole, edges), (vec![], vec![(310_000, 500_000)]));
        assert_eq!(ranges(&[0, 300_000, 900_000], 300_000), vec![(0, 600_000), (900_000, 1_200_000)]);
        let q = Query { from_ms: 100_000, to_ms: 1_000_000, ..query(None) };
        assert_eq!(stamp_span(&q, 300_000), Some((300_000, 900_000)));
        assert_eq!(stamp_span(&Query { to_ms: 200_000, ..q }, 300_000), None);
    }

    fn devices_by_bucket(answer: &[(GroupKey, Aggregate)]) -> Vec<(i64, u64)> {
        let mut out: Vec<(i64, u64)> = answer
            .iter()
            .map(|(k, a)| match k {
                GroupKey::Time(s) => (*s, a.devices),
                other => panic!("{other:?}"),
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn a_bucket_is_served_while_its_stamp_holds_and_read_again_when_it_moves() {
        let cache = BucketCache::default();
        // Whole buckets 0, 300 and 600 s, and a partial one at 900 s.
        let q = Query { from_ms: 0, to_ms: 1_000_000, ..query(None) };
        let counts = HashMap::from([(0, 10), (300_000, 5)]);
        let plan = cache.plan(&q, 300_000, &counts);
        assert_eq!(plan.reads(), vec![(0, 900_000), (900_000, 1_000_000)]);
        // The reads found devices in the first two buckets and the edge.
        let read =
            vec![(GroupKey::Time(0), figures(3)), (GroupKey::Time(300), figures(2)), (GroupKey::Time(900), figures(1))];
        let answer = cache.answer(&q, plan, &counts, read);
        assert_eq!(devices_by_bucket(&answer), [(0, 3), (300, 2), (900, 1)]);
        assert_eq!(cache.len(), 3, "the three whole buckets, the empty one too, not the edge");

        let plan = cache.plan(&q, 300_000, &counts);
        assert_eq!(plan.reads(), vec![(900_000, 1_000_000)], "only the edge is read again");
        let answer = cache.answer(&q, plan, &counts, vec![(GroupKey::Time(900), figures(4))]);
        assert_eq!(devices_by_bucket(&answer), [(0, 3), (300, 2), (600, 0), (900, 4)]);

        // A late event in the second bucket, and a first one in the third.
        let moved = HashMap::from([(0, 10), (300_000, 6), (600_000, 1)]);
        let plan = cache.plan(&q, 300_000, &moved);
        assert_eq!(plan.reads(), vec![(300_000, 900_000), (900_000, 1_000_000)]);
        let read = vec![(GroupKey::Time(300), figures(5)), (GroupKey::Time(600), figures(1))];
        let answer = cache.answer(&q, plan, &moved, read);
        assert_eq!(devices_by_bucket(&answer), [(0, 3), (300, 5), (600, 1)]);
        assert_eq!(cache.plan(&q, 300_000, &moved).reads(), vec![(900_000, 1_000_000)]);

        // Another filter, step or threshold is another space.
        let reads = |q: &Query, step: i64| cache.plan(q, step, &counts).reads();
        assert_eq!(reads(&Query { filters: query(Some("ios")).filters, ..q.clone() }, 300_000)[0], (0, 900_000));
        assert_eq!(reads(&q, 60_000)[0], (0, 960_000));
        assert_eq!(reads(&Query { queue_threshold: 5, ..q.clone() }, 300_000)[0], (0, 900_000));
        cache.forget("p");
        assert_eq!(cache.len(), 0);
        assert_eq!(reads(&q, 300_000)[0], (0, 900_000));
    }

    #[test]
    fn the_least_recently_used_space_goes_first_when_full() {
        let cache = BucketCache::default();
        let many: Vec<(Bucket, Aggregate)> =
            (0..MAX_BUCKETS as i64 / 2 + 1).map(|i| (i * 60_000, figures(1))).collect();
        let (a, b) = (query(None), query(Some("ios")));
        let no_counts = HashMap::new();
        cache.put(&a, 60_000, many.clone(), &no_counts);
        cache.put(&b, 60_000, many, &no_counts);
        assert!(cache.len() <= MAX_BUCKETS);
        let stale =
            |q: &Query| cache.plan(&Query { from_ms: 0, to_ms: 60_000, ..q.clone() }, 60_000, &no_counts).reads();
        assert_eq!(stale(&a), vec![(0, 60_000)], "the older space was evicted");
        assert!(stale(&b).is_empty(), "the newer one stays");
    }
}
