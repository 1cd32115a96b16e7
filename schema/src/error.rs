use thiserror::Error;

/// Everything that can go wrong at the contract boundary.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not a batch at all (not JSON, or not the batch shape).
    #[error("body is not a sync event batch: {0}")]
    NotABatch(String),
    /// The batch carries more events than allowed.
    #[error("too many events in one batch: {count}, at most {max} allowed")]
    TooManyEvents {
        /// Events in the batch.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// A project name that does not fit the naming rule.
    #[error("invalid project name {name:?}: {reason}")]
    InvalidProjectName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
