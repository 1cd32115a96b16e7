//! Durations as people write them in alert rules: `"30s"`, `"10m"`, `"1h"`,
//! `"7d"`, or several parts run together, largest first: `"1h30m"`.
//!
//! Units are `s`, `m`, `h` and `d` (a day is 24 hours). Nothing finer than a
//! second: alert windows and delays are never sub-second, and `"500ms"` next to
//! `"5m"` is a typo waiting to happen. Parsing is strict: no spaces, no signs,
//! no fractions, no unit twice, no unit out of order, at most [`MAX`].

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serializer};
use time::Duration;

/// The longest duration accepted anywhere in a rule: a year.
pub const MAX: Duration = Duration::days(365);

/// Units, largest first, with their length in seconds.
const UNITS: [(char, i64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Why a duration did not parse. Its message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{text}`: {problem} (units: s, m, h, d, as in \"30s\", \"10m\", \"1h30m\", \"7d\")")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Parses `"30s"`, `"10m"`, `"1h30m"`, `"7d"`, ... (see the module doc).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let fail = |problem: String| DurationError { text: text.to_string(), problem };
    if text.is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut total: i64 = 0;
    // Index into UNITS of the largest unit still allowed: each part must use
    // a smaller unit than the one before.
    let mut next_unit = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            let c = rest.chars().next().unwrap_or_default();
            return Err(fail(format!("expected a number before `{c}`")));
        }
        let (number, after) = rest.split_at(digits);
        let word = &after[..after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len())];
        if word.is_empty() {
            return Err(fail(format!("`{number}` has no unit")));
        }
        let Some(index) = UNITS.iter().position(|(u, _)| word.len() == 1 && word.starts_with(*u)) else {
            return Err(fail(format!("unknown unit `{word}`")));
        };
        let (unit, length) = UNITS[index];
        if index < next_unit {
            return Err(fail(format!("unit `{unit}` is repeated or out of order (largest first, as in \"1h30m\")")));
        }
        next_unit = index + 1;
        let too_long = || fail(format!("it is longer than the maximum of {}", format(MAX)));
        let value: i64 = number.parse().map_err(|_| too_long())?;
        total = value.checked_mul(length).and_then(|s| total.checked_add(s)).ok_or_else(too_long)?;
        if total > MAX.whole_seconds() {
            return Err(too_long());
        }
        rest = &after[word.len()..];
    }
    Ok(Duration::seconds(total))
}

/// Writes a duration the way [`parse`] reads it, largest units first:
/// `"0s"`, `"45s"`, `"10m"`, `"1h30m"`, `"7d"`. Sub-second parts are dropped;
/// a negative duration is written with a leading `-` (which [`parse`] rejects).
pub fn format(duration: Duration) -> String {
    Formatted(duration).to_string()
}

/// [`format`] as a [`fmt::Display`] value.
struct Formatted(Duration);

impl fmt::Display for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.whole_seconds();
        if seconds == 0 {
            return f.write_str("0s");
        }
        if seconds < 0 {
            f.write_str("-")?;
        }
        let mut rest = seconds.unsigned_abs();
        for (unit, length) in UNITS {
            let length = length.unsigned_abs();
            if rest >= length {
                write!(f, "{}{unit}", rest / length)?;
                rest %= length;
            }
        }
        Ok(())
    }
}

/// Reads a duration string, and says what was expected when given anything
/// else (`keep_firing_for = 600`).
struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"30s\", \"10m\", \"1h30m\" or \"7d\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

/// `#[serde(with = "crate::duration::serde_str")]` for a [`Duration`] field.
pub(crate) mod serde_str {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Formatted(*duration))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// `#[serde(with = "crate::duration::serde_opt")]` for an `Option<Duration>`
/// field (add `default` so that leaving the key out means `None`).
pub(crate) mod serde_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => serializer.collect_str(&Formatted(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        struct Text(Duration);
        impl<'de> Deserialize<'de> for Text {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
                deserializer.deserialize_str(DurationVisitor).map(Text)
            }
        }
        Ok(Option::<Text>::deserialize(deserializer)?.map(|Text(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units_parse() {
        assert_eq!(parse("30s"), Ok(Duration::seconds(30)));
        assert_eq!(parse("10m"), Ok(Duration::minutes(10)));
        assert_eq!(parse("1h"), Ok(Duration::hours(1)));
        assert_eq!(parse("7d"), Ok(Duration::days(7)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parts_run_together_largest_first() {
        assert_eq!(parse("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse("1d2h3m4s"), Ok(Duration::seconds(86_400 + 7_200 + 180 + 4)));
        assert_eq!(parse("90m"), Ok(Duration::minutes(90)));
    }

    #[test]
    fn a_bare_number_is_rejected_for_lack_of_unit() {
        let e = parse("10").unwrap_err();
        assert_eq!(e.text, "10");
        assert!(e.to_string().contains("`10` has no unit"), "{e}");
    }

    #[test]
    fn unknown_units_are_named_in_the_error() {
        let e = parse("500ms").unwrap_err();
        assert!(e.to_string().contains("unknown unit `ms`"), "{e}");
        let e = parse("2w").unwrap_err();
        assert!(e.to_string().contains("unknown unit `w`"), "{e}");
        let e = parse("5 m").unwrap_err();
        assert!(e.to_string().contains("unknown unit ` m`"), "{e}");
    }

    #[test]
    fn empty_signed_fractional_and_disordered_text_is_rejected() {
        for bad in ["", "-5m", "1.5h", "m", "30m1h", "1m1m", "h1", " 5m", "5m "] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("").unwrap_err().to_string().contains("it is empty"));
        assert!(parse("30m1h").unwrap_err().to_string().contains("out of order"));
    }

    #[test]
    fn durations_beyond_a_year_and_overflowing_numbers_are_rejected() {
        assert_eq!(parse("365d"), Ok(MAX));
        assert!(parse("366d").unwrap_err().to_string().contains("longer than the maximum of 365d"));
        assert!(parse("99999999999999999999999s").is_err());
        assert!(parse("9223372036854775807d").is_err());
    }

    #[test]
    fn formatting_uses_the_largest_units_and_round_trips() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::seconds(45)), "45s");
        assert_eq!(format(Duration::minutes(90)), "1h30m");
        assert_eq!(format(Duration::days(7)), "7d");
        assert_eq!(format(Duration::seconds(-60)), "-1m");
        assert_eq!(format(Duration::milliseconds(1500)), "1s");
        for text in ["0s", "59s", "1m1s", "2h", "1d1h1m1s", "365d"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
