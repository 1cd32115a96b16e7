//! How numbers read on the pages: units always, no false precision, and an
//! honest dash where there is no data (no data is not 0% or 100%).

use synchealth_store::metrics::Metric;
use time::OffsetDateTime;

/// What the pages show for a value that does not exist.
pub(crate) const NONE: &str = "—";

/// A fraction as a percentage, `97.3 %`.
pub(crate) fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if (0.9995..1.0).contains(&v) => format!("{:.2} %", v * 100.0),
        Some(v) => format!("{:.1} %", v * 100.0),
        None => NONE.into(),
    }
}

/// Milliseconds in the unit that reads best: `840 ms`, `1.2 s`, `3.4 min`, `2.1 h`, `3.0 d`.
pub(crate) fn ms(v: Option<f64>) -> String {
    let Some(v) = v else { return NONE.into() };
    let a = v.abs();
    if a < 1000.0 {
        format!("{v:.0} ms")
    } else if a < 60_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if a < 3_600_000.0 {
        format!("{:.1} min", v / 60_000.0)
    } else if a < 86_400_000.0 {
        format!("{:.1} h", v / 3_600_000.0)
    } else {
        format!("{:.1} d", v / 86_400_000.0)
    }
}

/// A whole count with thousands separators, `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A plain number, one decimal below 100.
pub(crate) fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => count(v.round().max(0.0) as u64),
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => NONE.into(),
    }
}

/// Unix ms as `2026-11-22 01:05:09 UTC`.
pub(crate) fn time_utc(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| NONE.into())
}

/// Unix ms as `2026-11-22T01:05` (the custom range inputs, UTC).
pub(crate) fn input_utc(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| format!("{:04}-{:02}-{:02}T{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute()))
        .unwrap_or_default()
}

/// The unit a metric's values are in, for tiles and charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A fraction shown as a percentage.
    Ratio,
    /// Milliseconds.
    Millis,
    /// A plain number (queue items).
    Plain,
    /// A whole count (events, devices).
    Count,
}

impl Unit {
    /// The unit of a metric's values, wherever a page shows one.
    pub(crate) fn of(metric: Metric) -> Unit {
        match metric {
            Metric::SuccessRate | Metric::ConflictRate | Metric::QueueDepthOverThresholdShare => Unit::Ratio,
            Metric::DurationP50
            | Metric::DurationP90
            | Metric::DurationP99
            | Metric::StalenessP50
            | Metric::StalenessP90
            | Metric::StalenessP99 => Unit::Millis,
            Metric::Events
            | Metric::Attempts
            | Metric::Devices
            | Metric::NeverSyncedDevices
            | Metric::QueueDepthMax => Unit::Count,
            _ => Unit::Plain,
        }
    }

    /// A value in this unit.
    pub(crate) fn show(self, v: Option<f64>) -> String {
        match self {
            Unit::Ratio => pct(v),
            Unit::Millis => ms(v),
            Unit::Plain => num(v),
            Unit::Count => v.map(|v| count(v.round().max(0.0) as u64)).unwrap_or_else(|| NONE.into()),
        }
    }

    /// The change from `before` to `now`: percentage points for ratios,
    /// relative for the rest. `None` when either side has no data.
    pub(crate) fn change(self, now: Option<f64>, before: Option<f64>) -> Option<String> {
        let (now, before) = (now?, before?);
        match self {
            Unit::Ratio => Some(format!("{:+.1} pp", (now - before) * 100.0)),
            _ if before == 0.0 && now == 0.0 => Some("±0 %".into()),
            _ if before == 0.0 => Some("new".into()),
            _ => Some(format!("{:+.0} %", (now - before) / before * 100.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_with_their_units() {
        assert_eq!(pct(Some(0.9734)), "97.3 %");
        assert_eq!(pct(None), "—");
        assert_eq!(ms(Some(840.0)), "840 ms");
        assert_eq!(ms(Some(1250.0)), "1.2 s");
        assert_eq!(ms(Some(90_000.0)), "1.5 min");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(Unit::Ratio.change(Some(0.95), Some(0.97)).as_deref(), Some("-2.0 pp"));
        assert_eq!(Unit::Millis.change(Some(150.0), Some(100.0)).as_deref(), Some("+50 %"));
        assert_eq!(Unit::Plain.change(None, Some(1.0)), None);
        assert_eq!(time_utc(0), "1970-01-01 00:00:00 UTC");
    }
}
