//! SQL helpers more than one SQLite file shares: binding named parameters,
//! and reading a device's latest values and text bytes back from a row.
//! Nothing here runs a query of its own, so every other file may use it and
//! it uses none of them.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Row, Statement};

use crate::{Error, Result};

/// Binds those of `params` that the statement uses (not every statement
/// uses every parameter) and runs it.
pub(super) fn bound_query<'s>(stmt: &'s mut Statement<'_>, params: &[(&str, Value)]) -> Result<rusqlite::Rows<'s>> {
    for (name, value) in params {
        if let Some(index) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(index, value)?;
        }
    }
    Ok(stmt.raw_query())
}

/// The values the device metrics take from a device's latest event.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DeviceValues {
    pub(super) queue_depth: i64,
    pub(super) queue_bucket: u16,
    pub(super) staleness_bucket: u16,
    pub(super) never_synced: bool,
}

impl DeviceValues {
    /// From the columns queue depth, queue bucket, staleness bucket and
    /// never-synced flag of `row`, starting at `first`.
    pub(super) fn from_row(row: &Row<'_>, first: usize) -> Result<Self> {
        Ok(DeviceValues {
            queue_depth: row.get(first)?,
            queue_bucket: row.get(first + 1)?,
            staleness_bucket: row.get(first + 2)?,
            never_synced: row.get(first + 3)?,
        })
    }
}

/// A text column's bytes, borrowed from the row: for comparing, with no
/// UTF-8 check.
pub(super) fn bytes<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r [u8]> {
    match row.get_ref(index)? {
        ValueRef::Text(bytes) => Ok(bytes),
        other => Err(Error::Corrupt(format!("column {index} is {:?}, not text", other.data_type()))),
    }
}
