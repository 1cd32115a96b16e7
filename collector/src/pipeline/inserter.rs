//! The inserter ([`Acknowledge::Spooled`](super::Acknowledge::Spooled)):
//! moves acknowledged events from memory into the store in large inserts,
//! and confirms them to the spool, which then deletes their segments.
//!
//! The spool is the write-ahead log; memory is only a cache of it. The
//! batcher hands over each append's events with permits of
//! `max_pending_rows`, so what waits here is bounded. An insert goes once
//! `max_batch_rows` events are waiting or the oldest has waited
//! `insert_max_delay`, one at a time (while it runs, the next block fills).
//!
//! When an insert fails or times out, the inserter drops everything it holds
//! and gives every segment to the replayer ([`Spool::disown_all`]), which
//! reads them back from disk in order once the store answers again: the
//! events are never lost, and re-inserting some that did land stores nothing
//! twice (inserts deduplicate by `event_id`).
//!
//! [`Spool::disown_all`]: super::spool::Spool::disown_all

use std::sync::Arc;
use std::time::Instant;

use synchealth_schema::StoredEvent;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::Shared;

/// Acknowledged events of one spool append, on their way to the store.
#[derive(Debug)]
pub(super) struct Pending {
    /// The spool segment they were appended to.
    pub(super) seq: u64,
    pub(super) events: Vec<StoredEvent>,
    /// One permit per event, released once they are stored (or dropped).
    pub(super) permit: OwnedSemaphorePermit,
}

/// Where the batcher hands acknowledged events.
pub(super) type ToInserter = mpsc::UnboundedSender<Pending>;

/// Runs until every sender is gone (the batcher has drained), then inserts
/// what it still holds.
pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let config = &shared.config;
    let mut block: Vec<Pending> = Vec::new();
    let mut rows = 0usize;
    let mut since: Option<Instant> = None;
    loop {
        let deadline = since.map(|s| s + config.insert_max_delay);
        let closed = tokio::select! {
            biased;
            next = queue.recv() => match next {
                Some(pending) => {
                    if owned(&shared, pending.seq) {
                        rows += pending.events.len();
                        since.get_or_insert_with(Instant::now);
                        block.push(pending);
                    }
                    false
                }
                None => true,
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => false,
        };
        let due = since.is_some_and(|s| s.elapsed() >= config.insert_max_delay);
        if !block.is_empty() && (closed || due || rows >= config.max_batch_rows) {
            insert(&shared, std::mem::take(&mut block)).await;
            rows = 0;
            since = None;
        }
        if closed {
            return;
        }
    }
}

/// Whether segment `seq` is still the inserter's (not handed to the replayer).
fn owned(shared: &Shared, seq: u64) -> bool {
    shared.spool.as_ref().is_some_and(|spool| spool.in_memory(seq))
}

/// Inserts one block and confirms its appends, or hands everything to the
/// replayer.
#[tracing::instrument(skip_all, fields(rows, appends = block.len()))]
async fn insert(shared: &Arc<Shared>, block: Vec<Pending>) {
    let rows: usize = block.iter().map(|p| p.events.len()).sum();
    tracing::Span::current().record("rows", rows);
    let mut events = Vec::with_capacity(rows);
    let mut confirmations = Vec::with_capacity(block.len());
    let mut permits = Vec::with_capacity(block.len());
    for pending in block {
        events.extend(pending.events);
        confirmations.push(pending.seq);
        permits.push(pending.permit);
    }
    metrics::histogram!("synchealth_batch_rows").record(rows as f64);
    let started = Instant::now();
    let result = shared.insert(Arc::new(events), false).await;
    metrics::histogram!("synchealth_insert_seconds", "source" => "batch").record(started.elapsed().as_secs_f64());
    let failure = match result {
        Ok(outcome) => {
            tracing::debug!(
                rows,
                duplicates = outcome.duplicates.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Inserted a block."
            );
            metrics::counter!("synchealth_events_duplicate_at_insert_total").increment(outcome.duplicates.len() as u64);
            shared.set_store_healthy(true);
            None
        }
        Err(failure) => Some(failure),
    };
    drop(permits);
    let Some(spool) = shared.spool.clone() else { return };
    match failure {
        None => {
            let confirmed = tokio::task::spawn_blocking(move || {
                confirmations.into_iter().try_for_each(|seq| spool.confirm(seq).map(|_| ()))
            })
            .await;
            match confirmed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "Cannot delete a stored spool segment; it will be replayed (idempotently).")
                }
                Err(e) => {
                    tracing::error!(error = %e, "The spool confirm task failed; segments will be replayed (idempotently).")
                }
            }
        }
        Some(why) => {
            tracing::warn!(error = %why, rows, "Store insert failed; the replayer takes the spool over.");
            spool.disown_all();
            shared.set_store_healthy(false);
            shared.wake_replayer.notify_one();
        }
    }
    super::replay::publish_spool_gauges(shared);
}
