//! The device lists ([`crate::DeviceList`]) from pieces of a window, on both
//! stores: each device's attempts in a piece of time (an hour, a minute, the
//! few seconds at a window's edge) summed up as a [`Run`], runs of
//! consecutive pieces chained in time order, and a [`RunCache`] of the runs
//! of whole hours and minutes, so that a list reads `events` only for what
//! changed since the last read and for the partial minutes at its edges.
//!
//! Why: every list needs, per device, its latest attempt, its attempt count,
//! the failures after its last success and its last [`STUCK_ATTEMPTS`] queue
//! depths. Read from `events`, that is every event of the window, ordered per
//! device: 20 to 30 seconds for a day at ten million events a day (issue 16).
//! All four are exact under chaining: pieces of time are disjoint, so the
//! newer piece's latest is the latest, counts add, failures in a row carry
//! over only when the newer piece has no success, and the last queue depths
//! are the newer piece's, topped up with the older one's.
//!
//! A cached unit is stamped with its event count in the store's rollup of
//! that unit (`rollup_hour`, `rollup_minute`), read before its events: any
//! insert into a unit moves the count, so a unit whose count is unchanged is
//! unchanged, and one whose count moved is read again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::devices::{DeviceList, DeviceSummary, MAX_DEVICE_LIST, STUCK_ATTEMPTS};

/// How many of the latest queue depths a run keeps.
const QUEUES: usize = STUCK_ATTEMPTS as usize;

/// Runs kept across all projects and filters (64 bytes each with its
/// device number, so at most 256 MiB): a week of 20,000 devices active every
/// hour is 3.4 million.
const MAX_RUNS: usize = 4_000_000;

/// The order of "latest" everywhere: corrected time, then the event id as
/// text (a UUID's hyphenated lowercase text sorts as its 128-bit value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) time_ms: i64,
    pub(crate) id: (u64, u64),
}

impl Key {
    pub(crate) fn new(time_ms: i64, id: uuid::Uuid) -> Key {
        let id = id.as_u128();
        Key { time_ms, id: ((id >> 64) as u64, id as u64) }
    }

    pub(crate) fn uuid(self) -> uuid::Uuid {
        uuid::Uuid::from_u128((u128::from(self.id.0) << 64) | u128::from(self.id.1))
    }
}

/// One stored attempt, as much of it as the lists rank by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Attempt {
    pub(crate) key: Key,
    pub(crate) success: bool,
    pub(crate) queue_depth: u32,
    pub(crate) staleness_ms: Option<i64>,
}

/// A device's attempts in a piece of time, summed up (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    latest: Key,
    /// Staleness of the latest attempt; -1 when it said it never synced.
    staleness_ms: i64,
    attempts: u32,
    /// Failures after the last success (all attempts when none succeeded).
    trailing_failures: u32,
    /// Queue depths of the latest attempts, newest first; the first
    /// `min(attempts, QUEUES)` are meaningful.
    queues: [u32; QUEUES],
    latest_success: bool,
    any_success: bool,
}

impl Run {
    fn of(a: &Attempt) -> Run {
        let mut queues = [0; QUEUES];
        queues[0] = a.queue_depth;
        Run {
            latest: a.key,
            staleness_ms: a.staleness_ms.map_or(-1, |s| s.max(0)),
            attempts: 1,
            trailing_failures: u32::from(!a.success),
            queues,
            latest_success: a.success,
            any_success: a.success,
        }
    }

    /// This run followed by `newer`, a run of a later piece of time.
    fn then(self, newer: Run) -> Run {
        let mut queues = newer.queues;
        let have = (newer.attempts as usize).min(QUEUES);
        for (slot, older) in queues.iter_mut().skip(have).zip(self.queues) {
            *slot = older;
        }
        Run {
            attempts: self.attempts.saturating_add(newer.attempts),
            trailing_failures: if newer.any_success {
                newer.trailing_failures
            } else {
                self.trailing_failures.saturating_add(newer.attempts)
            },
            queues,
            any_success: self.any_success || newer.any_success,
            ..newer
        }
    }

    pub(crate) fn latest(&self) -> Key {
        self.latest
    }

    fn queue_depth(&self) -> u32 {
        self.queues[0]
    }

    /// At least [`STUCK_ATTEMPTS`] attempts, a queue above zero, and no
    /// shrink across the last ones.
    fn stuck(&self) -> bool {
        self.attempts as usize >= QUEUES && self.queue_depth() > 0 && self.queues.windows(2).all(|w| w[0] >= w[1])
    }
}

/// Each device's run over `attempts` (device numbers and attempts, in any
/// order). Copies of one event (the same id) count once, at their greatest
/// key, as a device's latest is the same however often it is stored.
pub(crate) fn runs_of(mut attempts: Vec<(u32, Attempt)>) -> Vec<(u32, Run)> {
    attempts.sort_unstable_by_key(|(device, a)| (*device, a.key.id, std::cmp::Reverse(a.key.time_ms)));
    attempts.dedup_by_key(|(device, a)| (*device, a.key.id));
    attempts.sort_unstable_by_key(|(device, a)| (*device, a.key));
    let mut runs: Vec<(u32, Run)> = Vec::new();
    for (device, attempt) in &attempts {
        let run = Run::of(attempt);
        match runs.last_mut() {
            Some((last, chained)) if last == device => *chained = chained.then(run),
            _ => runs.push((*device, run)),
        }
    }
    runs
}

/// Chains pieces given in time order into one run per device, indexed by
/// device number (`devices` of them).
pub(crate) fn chain<'a>(devices: usize, pieces: impl IntoIterator<Item = &'a [(u32, Run)]>) -> Vec<Option<Run>> {
    let mut chained: Vec<Option<Run>> = vec![None; devices];
    for piece in pieces {
        for &(device, run) in piece {
            if let Some(slot) = chained.get_mut(device as usize) {
                *slot = Some(match slot.take() {
                    Some(older) => older.then(run),
                    None => run,
                });
            }
        }
    }
    chained
}

/// The devices a list shows, in its order, at most `limit` (and
/// [`MAX_DEVICE_LIST`]): device numbers with their runs. `name` gives a
/// number's device id, for the tie-break.
pub(crate) fn select<'a>(
    list: DeviceList,
    to_ms: i64,
    runs: &[Option<Run>],
    name: impl Fn(u32) -> &'a str,
    limit: u32,
) -> Vec<(u32, Run)> {
    let quiet_before = match list {
        DeviceList::Quiet { silent_for_ms } => to_ms.saturating_sub(silent_for_ms.max(0)),
        _ => i64::MIN,
    };
    let keep = |r: &Run| match list {
        DeviceList::QueueDepth => r.queue_depth() > 0,
        DeviceList::Staleness => r.staleness_ms >= 0,
        DeviceList::ConsecutiveFailures => r.trailing_failures > 0,
        DeviceList::Stuck => r.stuck(),
        DeviceList::Quiet { .. } => r.latest.time_ms < quiet_before,
    };
    // Greater first, except quiet (longest silence, oldest latest, first).
    let rank = |r: &Run| -> i64 {
        match list {
            DeviceList::QueueDepth | DeviceList::Stuck => -i64::from(r.queue_depth()),
            DeviceList::Staleness => -r.staleness_ms,
            DeviceList::ConsecutiveFailures => -i64::from(r.trailing_failures),
            DeviceList::Quiet { .. } => r.latest.time_ms,
        }
    };
    let mut chosen: Vec<(i64, &str, u32, Run)> = runs
        .iter()
        .enumerate()
        .filter_map(|(device, run)| run.filter(keep).map(|r| (device as u32, r)))
        .map(|(device, run)| (rank(&run), name(device), device, run))
        .collect();
    let limit = limit.min(MAX_DEVICE_LIST) as usize;
    let by_rank = |a: &(i64, &str, u32, Run), b: &(i64, &str, u32, Run)| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1));
    if chosen.len() > limit && limit > 0 {
        chosen.select_nth_unstable_by(limit - 1, by_rank);
        chosen.truncate(limit);
    }
    chosen.sort_unstable_by(by_rank);
    chosen.truncate(limit);
    chosen.into_iter().map(|(_, _, device, run)| (device, run)).collect()
}

/// What a list shows of a device's latest attempt beyond its run, read from
/// `events` by its key for the few devices listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Details {
    pub(crate) app_version: String,
    pub(crate) os: String,
    pub(crate) network: String,
    pub(crate) error_kind: String,
    pub(crate) error_message: String,
}

/// A listed device as the API shows it.
pub(crate) fn summary(device_id: String, run: &Run, details: Details, list: DeviceList, to_ms: i64) -> DeviceSummary {
    DeviceSummary {
        device_id,
        last_seen_ms: run.latest.time_ms,
        app_version: details.app_version,
        os: details.os,
        network: details.network,
        queue_depth: run.queue_depth(),
        staleness_ms: (run.staleness_ms >= 0).then_some(run.staleness_ms),
        consecutive_failures: run.trailing_failures,
        last_success: run.latest_success,
        last_error_kind: (!details.error_kind.is_empty()).then_some(details.error_kind),
        last_error_message: (!details.error_message.is_empty()).then_some(details.error_message),
        attempts_in_window: u64::from(run.attempts),
        silent_for_ms: matches!(list, DeviceList::Quiet { .. }).then(|| to_ms - run.latest.time_ms),
    }
}

/// A unit of time a cache entry covers, `[from_ms, to_ms)`: a whole hour or
/// a whole minute.
pub(crate) type Unit = (i64, i64);

/// A piece's runs by device number, shared between the cache and readers.
pub(crate) type Runs = Arc<Vec<(u32, Run)>>;

struct Cached {
    /// The unit's event count in its rollup when its runs were read.
    stamp: u64,
    runs: Runs,
}

/// The runs of one [`space`]: a project's lists, unfiltered or under one
/// set of filters.
#[derive(Default)]
struct ProjectRuns {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    units: BTreeMap<Unit, Cached>,
    /// When a list last read this space (a tick of [`RunCache::tick`]):
    /// eviction takes the spaces read longest ago first.
    used: u64,
}

/// See the module doc. One per store.
#[derive(Default)]
pub(crate) struct RunCache {
    projects: Mutex<HashMap<String, ProjectRuns>>,
    tick: AtomicU64,
}

/// Where a query's runs are cached: per project and filters. A filtered
/// list's units hold only the events its filters keep, read with them; the
/// stamps are the units' counts over all segments, which move whenever the
/// filtered ones do (and sometimes when they do not: a reload too many, never
/// one too few). The first list under new filters reads its window from
/// `events`; the next ones, only what changed.
pub(crate) fn space(query: &crate::metrics::Query) -> String {
    format!("{}\n{:?}", query.project.as_str(), query.filters)
}

impl std::fmt::Debug for RunCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunCache")
    }
}

/// A window's runs, in time order, with the device names they number.
pub(crate) struct Pieces {
    pub(crate) names: Vec<String>,
    pub(crate) pieces: Vec<Runs>,
}

impl RunCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProjectRuns>> {
        self.projects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The units of `units` to read again: those whose count now (`counts`,
    /// none meaning 0) is not the one they were read at, and those not held
    /// that have events. Units without events are forgotten.
    pub(crate) fn stale(&self, space: &str, units: &[Unit], counts: &HashMap<Unit, u64>) -> Vec<Unit> {
        let mut projects = self.lock();
        let cache = projects.entry(space.to_string()).or_default();
        let mut stale = Vec::new();
        for unit in units {
            let now = counts.get(unit).copied().unwrap_or(0);
            match cache.units.get(unit) {
                Some(cached) if cached.stamp == now => {}
                _ if now == 0 => {
                    cache.units.remove(unit);
                }
                _ => stale.push(*unit),
            }
        }
        stale
    }

    /// Each device's run over `attempts` (device ids and attempts, in any
    /// order, see [`runs_of`]), numbered for `space` (the same number for
    /// the same id across units).
    pub(crate) fn runs(&self, space: &str, attempts: Vec<(String, Attempt)>) -> Vec<(u32, Run)> {
        let numbered: Vec<(u32, Attempt)> = {
            let mut projects = self.lock();
            let ProjectRuns { ids, names, .. } = projects.entry(space.to_string()).or_default();
            attempts
                .into_iter()
                .map(|(id, attempt)| {
                    let n = *ids.entry(id).or_insert_with_key(|id| {
                        names.push(id.clone());
                        (names.len() - 1) as u32
                    });
                    (n, attempt)
                })
                .collect()
        };
        runs_of(numbered)
    }

    /// Forgets every unit of `project`, under every filter.
    pub(crate) fn forget(&self, project: &str) {
        let prefix = format!("{project}\n");
        for (space, cache) in self.lock().iter_mut() {
            if space.starts_with(&prefix) {
                cache.units.clear();
            }
        }
    }

    /// Keeps the runs of `unit`, read at `stamp`.
    pub(crate) fn put(&self, space: &str, unit: Unit, stamp: u64, runs: Vec<(u32, Run)>) {
        let mut projects = self.lock();
        let cache = projects.entry(space.to_string()).or_default();
        cache.units.insert(unit, Cached { stamp, runs: Arc::new(runs) });
    }

    /// The held runs of `units`, in the given order, with `extra` pieces
    /// (read from `events` now, numbered through [`RunCache::runs`])
    /// placed by their start; then evicts down to [`MAX_RUNS`], sparing
    /// these units.
    pub(crate) fn pieces(&self, space: &str, units: &[Unit], extra: Vec<(i64, Vec<(u32, Run)>)>) -> Pieces {
        let mut projects = self.lock();
        let cache = projects.entry(space.to_string()).or_default();
        cache.used = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut ordered: Vec<(i64, Runs)> =
            units.iter().filter_map(|u| cache.units.get(u).map(|c| (u.0, Arc::clone(&c.runs)))).collect();
        ordered.extend(extra.into_iter().map(|(start, runs)| (start, Arc::new(runs))));
        ordered.sort_by_key(|(start, _)| *start);
        let names = cache.names.clone();
        evict(&mut projects, space, units);
        Pieces { names, pieces: ordered.into_iter().map(|(_, runs)| runs).collect() }
    }
}

/// Drops units not in use until at most [`MAX_RUNS`] are held, the oldest
/// of the space read longest ago first; then the spaces left empty, and a
/// space's names once they mostly number devices no unit holds.
fn evict(projects: &mut HashMap<String, ProjectRuns>, in_use: &str, units: &[Unit]) {
    let held = |p: &ProjectRuns| -> usize { p.units.values().map(|c| c.runs.len()).sum() };
    let mut total: usize = projects.values().map(held).sum();
    while total > MAX_RUNS {
        let oldest = projects
            .iter()
            .flat_map(|(name, p)| p.units.keys().map(move |u| (p.used, *u, name.clone())))
            .filter(|(_, u, name)| name != in_use || !units.contains(u))
            .min();
        let Some((_, unit, name)) = oldest else { break };
        if let Some(removed) = projects.get_mut(&name).and_then(|p| p.units.remove(&unit)) {
            total -= removed.runs.len();
        }
    }
    // Never the space in use: its numbers are being handed out.
    projects.retain(|name, p| name == in_use || !p.units.is_empty());
    for (name, p) in projects.iter_mut() {
        if name != in_use && p.names.len() > 4 * held(p).max(250_000) {
            *p = ProjectRuns { used: p.used, ..ProjectRuns::default() };
        }
    }
}

/// The whole hours and whole minutes of a window a cache serves, and the
/// partial pieces at its edges, read from `events` every time.
pub(crate) fn units(from_ms: i64, to_ms: i64) -> (Vec<Unit>, Vec<(i64, i64)>) {
    use crate::pieces::{pieces, Piece, HOUR_MS, MINUTE_MS};
    let mut units = Vec::new();
    let mut raw = Vec::new();
    for piece in pieces(from_ms, to_ms, crate::metrics::Grouping::Total) {
        let (from, to, step) = match piece {
            Piece::Hours(a, b) => (a, b, HOUR_MS),
            Piece::Minutes(a, b) => (a, b, MINUTE_MS),
            Piece::Raw(a, b) => {
                raw.push((a, b));
                continue;
            }
        };
        units.extend((from..to).step_by(step as usize).map(|start| (start, start + step)));
    }
    units.sort_unstable();
    (units, raw)
}

/// The rollup reads that stamp `units`: per rollup table with units of its
/// length, the table, its time column, the unit length and the span
/// `[first, last)` of all the units, ms.
pub(crate) fn stamp_reads(units: &[Unit]) -> Vec<(&'static str, &'static str, i64, i64, i64)> {
    use crate::pieces::{HOUR_MS, MINUTE_MS};
    let (Some(first), Some(last)) = (units.iter().map(|u| u.0).min(), units.iter().map(|u| u.1).max()) else {
        return Vec::new();
    };
    [("rollup_hour", "hour", HOUR_MS), ("rollup_minute", "minute", MINUTE_MS)]
        .into_iter()
        .filter(|(_, _, length)| units.iter().any(|u| u.1 - u.0 == *length))
        .map(|(table, column, length)| (table, column, length, first, last))
        .collect()
}

/// `[from, to)` cut at whole hours: how a filtered list, which caches
/// nothing, reads its window, an hour at a time.
pub(crate) fn hours(from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
    use crate::pieces::{split, HOUR_MS};
    let (whole, edges) = split(from_ms, to_ms, HOUR_MS);
    let mut out = edges;
    if let Some((a, b)) = whole {
        out.extend((a..b).step_by(HOUR_MS as usize).map(|h| (h, h + HOUR_MS)));
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attempt(time_ms: i64, id: u128, success: bool, queue_depth: u32) -> Attempt {
        Attempt { key: Key::new(time_ms, uuid::Uuid::from_u128(id)), success, queue_depth, staleness_ms: Some(time_ms) }
    }

    /// The definitions of `devices.rs` over a device's attempts, latest first.
    fn brute(mut attempts: Vec<Attempt>) -> (u32, u32, bool, Key) {
        attempts.sort_by_key(|a| std::cmp::Reverse(a.key));
        let failures = attempts.iter().position(|a| a.success).unwrap_or(attempts.len()) as u32;
        let stuck = attempts.len() >= QUEUES
            && attempts[0].queue_depth > 0
            && attempts[..QUEUES].windows(2).all(|w| w[0].queue_depth >= w[1].queue_depth);
        (attempts.len() as u32, failures, stuck, attempts[0].key)
    }

    #[test]
    fn chained_pieces_give_what_the_whole_gives_at_every_cut() {
        // A pseudo-random device history, cut at every pair of points.
        let mut seed = 7_u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let history: Vec<Attempt> =
            (0..40).map(|i| attempt(i * 10, u128::from(next()), next() % 3 == 0, (next() % 4) as u32)).collect();
        for a in 0..history.len() {
            for b in a..history.len() {
                let pieces = [&history[..a], &history[a..b], &history[b..]];
                let runs: Vec<Vec<(u32, Run)>> =
                    pieces.iter().map(|p| runs_of(p.iter().map(|x| (0, *x)).collect())).collect();
                let run = chain(1, runs.iter().map(Vec::as_slice))[0].unwrap();
                let (n, failures, stuck, latest) = brute(history.clone());
                assert_eq!(
                    (run.attempts, run.trailing_failures, run.stuck(), run.latest),
                    (n, failures, stuck, latest),
                    "cut at {a}, {b}"
                );
            }
        }
    }

    #[test]
    fn copies_of_an_event_count_once_and_ties_on_time_break_on_the_id() {
        let runs = runs_of(vec![
            (3, attempt(100, 9, false, 1)),
            (3, attempt(100, 2, true, 5)),
            (3, attempt(100, 9, false, 1)),
        ]);
        assert_eq!(runs.len(), 1);
        let run = runs[0].1;
        assert_eq!((run.attempts, run.latest.id.1, run.trailing_failures, run.queue_depth()), (2, 9, 1, 1));
        assert_eq!(run.latest.uuid(), uuid::Uuid::from_u128(9));
    }

    #[test]
    fn lists_keep_their_order_limit_and_tie_break() {
        let run = |queue: u32, time: i64| runs_of(vec![(0, attempt(time, 1, false, queue))])[0].1;
        let runs = vec![Some(run(5, 10)), Some(run(9, 20)), None, Some(run(5, 5)), Some(run(0, 1))];
        let names = ["d0", "d1", "d2", "d3", "d4"];
        let got = select(DeviceList::QueueDepth, 100, &runs, |d| names[d as usize], 2);
        assert_eq!(got.iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![1, 0]);
        let quiet = select(DeviceList::Quiet { silent_for_ms: 92 }, 100, &runs, |d| names[d as usize], 10);
        assert_eq!(quiet.iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![4, 3]);
    }

    #[test]
    fn a_unit_is_read_again_once_its_count_moves() {
        let cache = RunCache::default();
        let unit = (0, 60_000);
        let counts = HashMap::from([(unit, 3)]);
        assert_eq!(cache.stale("p", &[unit], &counts), vec![unit]);
        let runs = cache.runs("p", vec![("device".to_string(), attempt(1, 1, true, 0))]);
        cache.put("p", unit, 3, runs);
        assert!(cache.stale("p", &[unit], &counts).is_empty());
        assert_eq!(cache.stale("p", &[unit], &HashMap::from([(unit, 4)])), vec![unit]);
        let pieces = cache.pieces("p", &[unit], vec![(60_000, Vec::new())]);
        assert_eq!((pieces.names, pieces.pieces.len()), (vec!["device".to_string()], 2));
    }

    #[test]
    fn a_run_with_its_device_number_takes_64_bytes() {
        assert_eq!(std::mem::size_of::<(u32, Run)>(), 64, "MAX_RUNS and the README count 64 bytes a run");
    }

    #[test]
    fn a_window_is_whole_hours_and_minutes_with_raw_edges() {
        let h = crate::pieces::HOUR_MS;
        let (units, raw) = units(h - 90_500, 2 * h + 61_000);
        assert_eq!(units.first(), Some(&(h - 60_000, h)));
        assert!(units.contains(&(h, 2 * h)) && units.contains(&(2 * h, 2 * h + 60_000)));
        assert_eq!(raw, vec![(h - 90_500, h - 60_000), (2 * h + 60_000, 2 * h + 61_000)]);
    }
}
