//! How a window is cut for reading from pre-aggregates: whole hours (read
//! from an hourly rollup), whole minutes around them (a per-minute rollup)
//! and the partial pieces at the very edges (read from `events`). Both
//! stores keep the same rollups, so both cut windows the same way, and a
//! window read in pieces gives the same answer as one read from `events`.

use crate::metrics::Grouping;

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// `[from_ms, to_ms)`.
type Range = (i64, i64);

/// `[from, to)` cut at multiples of `unit`: the whole units inside, if any,
/// and the partial pieces around them.
pub(crate) fn split(from_ms: i64, to_ms: i64, unit: i64) -> (Option<Range>, Vec<Range>) {
    let start = from_ms.div_euclid(unit) * unit + if from_ms.rem_euclid(unit) == 0 { 0 } else { unit };
    let end = to_ms.div_euclid(unit) * unit;
    if start >= end {
        return (None, vec![(from_ms, to_ms)]);
    }
    let edges = [(from_ms, start), (end, to_ms)].into_iter().filter(|(a, b)| a < b).collect();
    (Some((start, end)), edges)
}

/// Whether each time bucket is made of whole rollup units.
pub(crate) fn aligned(grouping: Grouping, unit_s: u32) -> bool {
    match grouping {
        Grouping::Time { step_seconds } => step_seconds.max(1) % unit_s == 0,
        Grouping::Total | Grouping::By(_) => true,
    }
}

/// Where each piece of a window is read from for the per-event totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Whole hours, from `rollup_hour`.
    Hours(i64, i64),
    /// Whole minutes, from `rollup_minute`.
    Minutes(i64, i64),
    /// The rest, from `events`.
    Raw(i64, i64),
}

/// The window cut into whole hours, whole minutes around them and raw
/// pieces at the very edges, as far as the grouping's buckets allow.
pub(crate) fn pieces(from_ms: i64, to_ms: i64, grouping: Grouping) -> Vec<Piece> {
    let minutes = |from: i64, to: i64| -> Vec<Piece> {
        if !aligned(grouping, 60) {
            return vec![Piece::Raw(from, to)];
        }
        let (whole, edges) = split(from, to, MINUTE_MS);
        let mut out: Vec<Piece> = edges.into_iter().map(|(a, b)| Piece::Raw(a, b)).collect();
        out.extend(whole.map(|(a, b)| Piece::Minutes(a, b)));
        out
    };
    if !aligned(grouping, 3600) {
        return minutes(from_ms, to_ms);
    }
    match split(from_ms, to_ms, HOUR_MS) {
        (Some((a, b)), edges) => {
            let mut out = vec![Piece::Hours(a, b)];
            for (x, y) in edges {
                out.extend(minutes(x, y));
            }
            out
        }
        (None, _) => minutes(from_ms, to_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_splits_into_whole_units_and_edges() {
        assert_eq!(
            split(90_000, 250_000, 60_000),
            (Some((120_000, 240_000)), vec![(90_000, 120_000), (240_000, 250_000)])
        );
        assert_eq!(split(120_000, 240_000, 60_000), (Some((120_000, 240_000)), vec![]));
        assert_eq!(split(90_000, 110_000, 60_000), (None, vec![(90_000, 110_000)]));
        assert_eq!(split(90_000, 150_000, 60_000), (None, vec![(90_000, 150_000)]));
    }

    #[test]
    fn totals_read_hours_then_minutes_then_events() {
        let h = HOUR_MS;
        let pieces = pieces(h + 90_000, 4 * h + 30_000, Grouping::Total);
        assert_eq!(
            pieces,
            vec![
                Piece::Hours(2 * h, 4 * h),
                Piece::Raw(h + 90_000, h + 120_000),
                Piece::Minutes(h + 120_000, 2 * h),
                Piece::Raw(4 * h, 4 * h + 30_000),
            ]
        );
        let quarter = super::pieces(h + 90_000, 4 * h + 30_000, Grouping::Time { step_seconds: 900 });
        assert!(quarter.iter().all(|p| !matches!(p, Piece::Hours(..))), "{quarter:?}");
        let odd = super::pieces(h + 90_000, 4 * h, Grouping::Time { step_seconds: 90 });
        assert_eq!(odd, vec![Piece::Raw(h + 90_000, 4 * h)]);
    }
}
