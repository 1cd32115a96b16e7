//! Which events this process stored recently, as a pair of Bloom filters.
//!
//! Telling a client which events of its batch were duplicates needs a look
//! at what is stored, and on ClickHouse a look-up per event id costs a scan
//! of the batch's time range: at a quarter of a million events per second,
//! far too much to do for every event. Nearly all duplicates are retries of
//! a batch the same collector stored seconds or minutes earlier, so the
//! store remembers the ids it wrote: an id the filter has never seen is new
//! for certain (Bloom filters have no false negatives) and skips the look-up;
//! only "maybe seen" ids (retries, plus about 1% false positives) are checked
//! exactly. Two generations rotate, so the memory stays fixed (about 5 MB)
//! while the last few million ids are always covered.
//!
//! What the filter does not know (ids stored by another replica or before a
//! restart) is inserted again; the rows are identical, so ReplacingMergeTree
//! and `FINAL` still count the event once. Only the `duplicates` figure of
//! that one answer is lower than the truth.

use bloomfilter::Bloom;
use uuid::Uuid;

/// Ids per generation before it rotates.
const GENERATION: usize = 2_000_000;
/// False-positive rate of each generation.
const FP_RATE: f64 = 0.01;

/// Two rotating Bloom filters of `(project, event_id)`.
pub(crate) struct RecentIds {
    current: Bloom<(u64, u128)>,
    previous: Option<Bloom<(u64, u128)>>,
    in_current: usize,
}

impl std::fmt::Debug for RecentIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentIds").field("in_current", &self.in_current).finish_non_exhaustive()
    }
}

impl RecentIds {
    pub(crate) fn new() -> Self {
        RecentIds { current: new_generation(), previous: None, in_current: 0 }
    }

    /// Whether the id may have been stored (false: certainly not by us).
    pub(crate) fn maybe_seen(&self, project: &str, id: Uuid) -> bool {
        let key = key(project, id);
        self.current.check(&key) || self.previous.as_ref().is_some_and(|p| p.check(&key))
    }

    /// Remembers a stored id.
    pub(crate) fn remember(&mut self, project: &str, id: Uuid) {
        if self.in_current >= GENERATION {
            self.previous = Some(std::mem::replace(&mut self.current, new_generation()));
            self.in_current = 0;
        }
        self.current.set(&key(project, id));
        self.in_current += 1;
    }
}

/// A fixed-size key: no allocation per look-up on the ingest path.
fn key(project: &str, id: Uuid) -> (u64, u128) {
    // FNV-1a: stable, and project names are few and short.
    let hash = project.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash, id.as_u128())
}

fn new_generation() -> Bloom<(u64, u128)> {
    // Fixed seed: the filter is private to the process, so predictability is harmless.
    Bloom::new_for_fp_rate_with_seed(GENERATION, FP_RATE, &[7; 32])
        .unwrap_or_else(|_| unreachable!("constant, valid filter parameters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_id_is_seen_and_an_unknown_one_mostly_not() {
        let mut recent = RecentIds::new();
        let ids: Vec<Uuid> = (0..10_000u64).map(|i| Uuid::from_u64_pair(1, i)).collect();
        for id in &ids {
            recent.remember("p", *id);
        }
        assert!(ids.iter().all(|id| recent.maybe_seen("p", *id)), "no false negatives");
        let strangers = (0..10_000u64).filter(|i| recent.maybe_seen("p", Uuid::from_u64_pair(2, *i))).count();
        assert!(strangers < 300, "false positives near 1%, got {strangers} of 10000");
        assert!(!recent.maybe_seen("other", ids[0]) || recent.maybe_seen("other", ids[1]), "keyed by project");
    }
}
