//! The replayer: moves spooled events into the store, oldest segment first,
//! and deletes a segment only after the store confirmed all of it.
//!
//! While the store is unhealthy it is probed with a ping (not by re-reading
//! segments) at an exponential backoff; the first success marks it healthy,
//! which also sends new batches straight to the store again. A segment is
//! inserted in batches of at most `max_batch_rows`, each retried until the
//! store takes it (a batch that timed out is retried at half the size, so a
//! slow store still makes progress): if the process dies part-way, the next start replays the
//! whole segment again, which stores nothing twice (inserts deduplicate by
//! `event_id`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synchealth_schema::StoredEvent;
use tokio::sync::watch;

use super::spool::{self, Segment, SegmentContents};
use super::{InsertFailure, Shared};

/// How often the spool gauges (age grows by itself) are refreshed while idle.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The replayer stopped because the pipeline is stopping.
struct Stopped;

/// Runs until the pipeline stops.
pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(&shared);
    loop {
        if *stop.borrow() {
            return;
        }
        publish_spool_gauges(&shared);
        if !shared.store_healthy() {
            if probe(&shared).await {
                shared.set_store_healthy(true);
                backoff.reset(&shared);
            } else if backoff.wait(&shared, &mut stop).await.is_err() {
                return;
            }
            continue;
        }
        let Some(spool) = shared.spool.clone() else {
            // No spool: only health probing to do, and only when woken.
            if idle(&shared, &mut stop).await.is_err() {
                return;
            }
            continue;
        };
        let next = tokio::task::spawn_blocking(move || spool.oldest_for_replay()).await.ok().flatten();
        let Some(segment) = next else {
            if idle(&shared, &mut stop).await.is_err() {
                return;
            }
            continue;
        };
        match replay_segment(&shared, &segment, &mut backoff, &mut stop).await {
            Ok(()) => {}
            Err(Stopped) => return,
        }
    }
}

/// Waits for something to do: a spool write or a store failure, or the
/// gauge interval.
async fn idle(shared: &Shared, stop: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
    tokio::select! {
        () = shared.wake_replayer.notified() => Ok(()),
        () = tokio::time::sleep(GAUGE_INTERVAL) => Ok(()),
        _ = stop.changed() => Err(Stopped),
    }
}

/// Whether the store answers a ping within the insert timeout.
async fn probe(shared: &Shared) -> bool {
    match tokio::time::timeout(shared.config.insert_timeout, shared.store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Store still failing.");
            false
        }
        Err(_) => {
            tracing::debug!("Store ping timed out.");
            false
        }
    }
}

/// Replays one segment into the store and deletes it.
#[tracing::instrument(skip_all, fields(seq = segment.seq, bytes = segment.bytes))]
async fn replay_segment(
    shared: &Arc<Shared>,
    segment: &Segment,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stopped> {
    let path = segment.path.clone();
    let contents = loop {
        let path = path.clone();
        match tokio::task::spawn_blocking(move || spool::read_segment(&path)).await {
            Ok(Ok(contents)) => break contents,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Removed behind the spool's back: nothing left to replay.
                tracing::error!(path = %segment.path.display(), "A spool segment vanished before replay.");
                break SegmentContents::default();
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %segment.path.display(), "Cannot read a spool segment; will retry.")
            }
            Err(e) => tracing::error!(error = %e, "The spool read task failed; will retry."),
        }
        backoff.wait(shared, stop).await?;
    };
    let SegmentContents { events, records, .. } = contents;
    let total = events.len();
    let started = Instant::now();
    let (mut inserted, mut duplicates) = (0usize, 0usize);
    // A store too slow to take a full block within the insert timeout would
    // time out on the same block forever; each timeout halves the block (a
    // success lets it grow back), so a slow store still drains the spool.
    // Blocks are moved out of the segment's events, not copied: a segment
    // and a copy of it would double the replayer's memory.
    let max_rows = shared.config.max_batch_rows.max(1);
    let mut chunk_rows = max_rows;
    let mut left: VecDeque<StoredEvent> = events.into();
    let mut retry: Option<Arc<Vec<StoredEvent>>> = None;
    while retry.is_some() || !left.is_empty() {
        if *stop.borrow() {
            return Err(Stopped);
        }
        let chunk = retry.take().unwrap_or_else(|| Arc::new(left.drain(..chunk_rows.min(left.len())).collect()));
        // An earlier insert of these events that timed out may still land;
        // the duplicate check must run after it.
        shared.settle_abandoned().await;
        let attempt = Instant::now();
        let result = shared.insert(Arc::clone(&chunk), true).await;
        metrics::histogram!("synchealth_insert_seconds", "source" => "replay").record(attempt.elapsed().as_secs_f64());
        match result {
            Ok(outcome) => {
                inserted += outcome.inserted;
                duplicates += outcome.duplicates.len();
                metrics::counter!("synchealth_replayed_events_total").increment(chunk.len() as u64);
                shared.set_store_healthy(true);
                backoff.reset(shared);
                chunk_rows = (chunk_rows * 2).min(max_rows);
            }
            Err(failure) => {
                tracing::warn!(error = %failure, rows = chunk.len(), "Replay insert did not confirm; backing off.");
                retry = Some(if matches!(failure, InsertFailure::TimedOut) {
                    chunk_rows = shrink_block(chunk.len());
                    // The abandoned insert still holds the block: copy it
                    // (the rare path), keep the first part, give the rest back.
                    let mut block = Arc::try_unwrap(chunk).unwrap_or_else(|shared| (*shared).clone());
                    let rest = block.split_off(chunk_rows.min(block.len()));
                    for event in rest.into_iter().rev() {
                        left.push_front(event);
                    }
                    Arc::new(block)
                } else {
                    chunk
                });
                shared.set_store_healthy(false);
                backoff.wait(shared, stop).await?;
            }
        }
    }
    // Every event is confirmed: only now may the segment go.
    loop {
        let (spool, seg) = (shared.spool.clone(), segment.clone());
        let Some(spool) = spool else { break };
        match tokio::task::spawn_blocking(move || spool.remove(&seg)).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %segment.path.display(), "Cannot delete a replayed spool segment; will retry.")
            }
            Err(e) => tracing::error!(error = %e, "The spool delete task failed; will retry."),
        }
        backoff.wait(shared, stop).await?;
    }
    publish_spool_gauges(shared);
    tracing::info!(
        records,
        events = total,
        inserted,
        duplicates,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Replayed a spool segment into the store."
    );
    Ok(())
}

/// The block size after a timed-out replay insert of `rows`: half, but not
/// below [`MIN_REPLAY_BLOCK_ROWS`].
fn shrink_block(rows: usize) -> usize {
    (rows / 2).max(MIN_REPLAY_BLOCK_ROWS)
}

/// The smallest block a replay shrinks to after timeouts.
const MIN_REPLAY_BLOCK_ROWS: usize = 500;

/// Sets `synchealth_spool_bytes` and `synchealth_spool_oldest_age_seconds`.
pub(super) fn publish_spool_gauges(shared: &Shared) {
    let status = shared.status(0);
    metrics::gauge!("synchealth_spool_bytes").set(status.spool_bytes as f64);
    metrics::gauge!("synchealth_spool_oldest_age_seconds")
        .set(status.spool_oldest_age.map_or(0.0, |age| age.as_secs_f64()));
}

/// Exponential backoff, published in `Shared::backoff_ms` for `Retry-After`.
struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new(shared: &Shared) -> Self {
        Backoff { current: shared.config.replay_backoff_min }
    }

    fn reset(&mut self, shared: &Shared) {
        self.current = shared.config.replay_backoff_min;
        self.publish(shared);
    }

    /// Sleeps the current backoff (unless stopped), then doubles it.
    async fn wait(&mut self, shared: &Shared, stop: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
        self.publish(shared);
        tokio::select! {
            () = tokio::time::sleep(self.current) => {}
            _ = stop.changed() => return Err(Stopped),
        }
        self.current = (self.current * 2).min(shared.config.replay_backoff_max);
        self.publish(shared);
        Ok(())
    }

    fn publish(&self, shared: &Shared) {
        shared.backoff_ms.store(u64::try_from(self.current.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}
