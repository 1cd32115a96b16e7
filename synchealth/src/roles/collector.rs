//! The collector role built from the settings: its ingest pipeline (batcher
//! and spool) and its router's limits.

use anyhow::Context;
use synchealth_collector::{CollectorState, Limits, Pipeline};
use synchealth_store::SharedStore;

use crate::Settings;

/// Starts the ingest pipeline, replaying what the spool holds from a
/// previous run.
pub async fn pipeline(store: SharedStore, settings: &Settings) -> anyhow::Result<Pipeline> {
    let config = settings.ingest.pipeline_config(&settings.data_dir, settings.clickhouse.url.is_some())?;
    let dir = config.spool_dir.clone();
    Pipeline::start(store, config).await.with_context(|| format!("opening the ingest spool in {}", dir.display()))
}

/// The ingest API's state: the request limits of the settings, writing
/// through `pipeline`.
pub fn state(store: SharedStore, settings: &Settings, pipeline: &Pipeline) -> CollectorState {
    let limits = Limits {
        max_body_bytes: settings.max_body_bytes,
        max_body_bytes_in_flight: settings.max_body_bytes_in_flight,
        max_events_per_batch: settings.max_events_per_batch,
        rate_limit: settings.rate_limit.limit(),
    };
    CollectorState::new(store, limits, pipeline.handle())
}
