//! The custom dimensions a project declares (issue 19): the contract lets an
//! event carry up to 8 `dimensions`, and a project says which keys it keeps;
//! the collector drops the others before storing. The rule a declared list
//! must meet lives here, once, so both stores refuse the same lists and the
//! command line can check a list before it opens a store.

use synchealth_schema::{is_dimension_key, MAX_DIMENSIONS};

use crate::{Error, Result};

/// `keys` as a project's declared list: sorted, each once. A key that breaks
/// the contract's key rule ([`is_dimension_key`]) is refused by name (the
/// first one, in the order given); more than [`MAX_DIMENSIONS`] distinct
/// keys are refused too, since an event can never carry more.
pub fn declared_keys(keys: &[String]) -> Result<Vec<String>> {
    if let Some(bad) = keys.iter().find(|key| !is_dimension_key(key)) {
        return Err(Error::InvalidDimensionKey { key: bad.clone() });
    }
    let mut declared = keys.to_vec();
    declared.sort();
    declared.dedup();
    if declared.len() > MAX_DIMENSIONS {
        return Err(Error::TooManyDimensions { count: declared.len() });
    }
    Ok(declared)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_list_is_sorted_and_each_key_kept_once() {
        assert_eq!(declared_keys(&keys(&["plan", "engine", "plan"])).unwrap(), keys(&["engine", "plan"]));
        assert!(declared_keys(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_key_outside_the_rule_is_refused_by_name() {
        for bad in ["Plan", "1plan", "", "plan-tier", &"x".repeat(33)] {
            let err = declared_keys(&keys(&["engine", bad])).unwrap_err();
            assert!(matches!(&err, Error::InvalidDimensionKey { key } if key == bad), "{err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(declared_keys(&keys(&[&"x".repeat(32)])).is_ok());
    }

    #[test]
    fn more_than_eight_distinct_keys_are_refused() {
        let nine: Vec<String> = (0..9).map(|i| format!("d{i}")).collect();
        let err = declared_keys(&nine).unwrap_err();
        assert!(matches!(err, Error::TooManyDimensions { count: 9 }), "{err}");
        assert_eq!(declared_keys(&nine[..8]).unwrap().len(), 8);
    }
}
