//! The batcher: gathers queued requests into batches and makes each batch
//! durable, in the store or else in the spool, then answers every request
//! of it.
//!
//! A batch is flushed once it reaches `max_batch_rows` or its oldest request
//! has waited `max_batch_age`, and only while fewer than
//! `max_inflight_batches` are being flushed: when the store is busy, the
//! next batch keeps growing instead of adding one more small insert. That
//! is what makes batches large exactly when throughput matters.
//!
//! When no insert is running, a batch is also flushed once requests stop
//! arriving for `batch_linger`: the clients that could add to it are all
//! waiting for their answers (a client posts its next batch only after the
//! last one is acknowledged), so waiting out the age limit would only idle
//! the store. A lone request is answered after about the linger plus one
//! insert, and at most one such early, partial batch is inserted at a time,
//! so sparse traffic cannot turn into a stream of tiny inserts.
//!
//! Acknowledging spooled, a batch is an append to the spool (one fsync), not
//! an insert: there is no small insert to avoid, so it goes as soon as no
//! append is running, with no linger. Requests arriving during an fsync form
//! the next append (group commit), and a lone request is answered after one
//! fsync.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synchealth_schema::StoredEvent;
use synchealth_store::InsertOutcome;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::inserter::{Pending, ToInserter};
use super::spool::{encode_unit, Handoff, SpoolError};
use super::{Acknowledge, Request, Shared, SubmitError};

type Reply = oneshot::Sender<Result<InsertOutcome, SubmitError>>;

/// Requests concatenated into one batch.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<StoredEvent>,
    /// Per request, in order: how many of `events` are its own, and where to answer.
    parts: Vec<(usize, Reply)>,
    /// When the first request joined.
    since: Option<Instant>,
    /// When the last request joined.
    last: Option<Instant>,
}

impl Batch {
    fn push(&mut self, request: Request) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.last = Some(now);
        self.parts.push((request.events.len(), request.reply));
        if self.events.is_empty() {
            self.events = request.events;
        } else {
            self.events.extend(request.events);
        }
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// Runs until stopped and drained: every request taken from the queue is
/// answered.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Request>,
    to_inserter: ToInserter,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let mut batch = Batch::default();
    let mut flushing: JoinSet<()> = JoinSet::new();
    let mut stopping = false;
    // The queue is closed and empty: nothing more will arrive.
    let mut drained = false;
    let linger = match config.acknowledge {
        Acknowledge::Stored => config.batch_linger,
        Acknowledge::Spooled => Duration::ZERO,
    };
    loop {
        let full = batch.events.len() >= config.max_batch_rows;
        let due = batch.since.is_some_and(|since| since.elapsed() >= config.max_batch_age);
        let lull = flushing.is_empty() && batch.last.is_some_and(|last| last.elapsed() >= linger);
        if !batch.is_empty() && flushing.len() < config.max_inflight_batches && (full || due || lull || drained) {
            let batch = std::mem::take(&mut batch);
            match config.acknowledge {
                Acknowledge::Stored => flushing.spawn(flush(Arc::clone(&shared), batch)),
                Acknowledge::Spooled => flushing.spawn(spool_first(Arc::clone(&shared), batch, to_inserter.clone())),
            };
            continue;
        }
        if drained && batch.is_empty() && flushing.is_empty() {
            break;
        }
        // The next moment a flush may become due: the age limit, or the
        // linger if nothing is being inserted.
        let age_deadline = batch.since.map(|since| since + config.max_batch_age);
        let linger_deadline = batch.last.filter(|_| flushing.is_empty()).map(|last| last + linger);
        let deadline = age_deadline.into_iter().chain(linger_deadline).min().unwrap_or_else(Instant::now);
        let wait = !batch.is_empty() && !drained && flushing.len() < config.max_inflight_batches;
        tokio::select! {
            // Completions first, so a free slot is seen before more requests
            // are taken; then requests, before any timer.
            biased;
            Some(done) = flushing.join_next(), if !flushing.is_empty() => {
                if let Err(e) = done {
                    // Its requests' reply channels were dropped with it: their
                    // handlers answer 503, so nothing is acknowledged unsafely.
                    tracing::error!(error = %e, "A batch flush failed unexpectedly.");
                }
            }
            request = queue.recv(), if !drained && !full => match request {
                Some(request) => batch.push(request),
                None => drained = true,
            },
            _ = stop.changed(), if !stopping => {
                // No new requests; those already queued are still taken and
                // flushed without waiting for the age limit.
                stopping = true;
                queue.close();
            }
            () = tokio::time::sleep_until(deadline.into()), if wait => {}
        }
    }
}

/// Makes one batch durable and answers its requests.
#[tracing::instrument(skip_all, fields(rows = batch.events.len(), requests = batch.parts.len()))]
async fn flush(shared: Arc<Shared>, batch: Batch) {
    let Batch { events, parts, .. } = batch;
    metrics::histogram!("synchealth_batch_rows").record(events.len() as f64);
    let events = if shared.store_healthy() {
        let started = Instant::now();
        let rows = Arc::new(events);
        let inserted = shared.insert(Arc::clone(&rows), false).await;
        metrics::histogram!("synchealth_insert_seconds", "source" => "batch").record(started.elapsed().as_secs_f64());
        match inserted {
            Ok(outcome) => {
                tracing::debug!(
                    rows = rows.len(),
                    requests = parts.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Inserted a batch."
                );
                shared.set_store_healthy(true);
                answer_stored(parts, &outcome);
                return;
            }
            Err(failure) => {
                tracing::warn!(error = %failure, rows = rows.len(), "Store insert did not confirm; spooling the batch.")
            }
        }
        shared.set_store_healthy(false);
        // An abandoned insert may still hold the rows: spool a copy then.
        Arc::try_unwrap(rows).unwrap_or_else(|held| held.as_ref().clone())
    } else {
        events
    };
    spool_and_answer(&shared, events, parts).await;
}

/// [`Acknowledge::Spooled`]: writes the batch to the spool, answers every
/// request that fit, and hands their events to the inserter (or, while the
/// store is failing or the inserter holds `max_pending_rows` already, leaves
/// them to the replayer).
#[tracing::instrument(skip_all, fields(rows = batch.events.len(), requests = batch.parts.len()))]
async fn spool_first(shared: Arc<Shared>, batch: Batch, to_inserter: ToInserter) {
    let Batch { events, parts, .. } = batch;
    metrics::histogram!("synchealth_ack_batch_rows").record(events.len() as f64);
    let permit = match u32::try_from(events.len()) {
        Ok(n) if shared.store_healthy() => Arc::clone(&shared.pending_rows).try_acquire_many_owned(n).ok(),
        _ => None,
    };
    let handoff = if permit.is_some() { Handoff::Memory } else { Handoff::Disk };
    let Some(spool) = shared.spool.clone() else {
        // Validation refuses a spool-first pipeline without a spool.
        answer_all(parts, &SubmitError::Unavailable("the spool is disabled".into()));
        return;
    };
    let lens: Vec<usize> = parts.iter().map(|(len, _)| *len).collect();
    let written = tokio::task::spawn_blocking(move || {
        let units = encode_units(&events, &lens)?;
        let appended = spool.append_with(&units, handoff)?;
        Ok::<_, SpoolError>((appended, events, lens))
    })
    .await;
    let (appended, events, lens) = match written {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Could not spool a batch; answering 503.");
            return answer_all(parts, &SubmitError::Unavailable(e.to_string()));
        }
        Err(e) => {
            tracing::error!(error = %e, "The spool write task failed; answering 503.");
            return answer_all(parts, &SubmitError::Unavailable(e.to_string()));
        }
    };
    let fitting: usize = appended.fits.iter().zip(&lens).filter(|(fit, _)| **fit).map(|(_, len)| len).sum();
    if handoff == Handoff::Disk && fitting > 0 {
        metrics::counter!("synchealth_spooled_events_total").increment(fitting as u64);
        shared.wake_replayer.notify_one();
    }
    super::replay::publish_spool_gauges(&shared);
    let retry_after = shared.retry_after();
    let mut kept = Vec::with_capacity(fitting);
    let mut events = events.into_iter();
    for (((_, reply), fit), len) in parts.into_iter().zip(&appended.fits).zip(&lens) {
        let own: Vec<StoredEvent> = events.by_ref().take(*len).collect();
        let answer = if *fit { Ok(spooled_outcome(&own)) } else { Err(SubmitError::SpoolFull { retry_after }) };
        let _ = reply.send(answer);
        if *fit {
            kept.extend(own);
        }
    }
    if let (Some(mut permit), false) = (permit, kept.is_empty()) {
        // Rows that did not fit release their permits now.
        let unused = permit.num_permits() - kept.len();
        if unused > 0 {
            if let Some(spare) = permit.split(unused) {
                drop(spare);
            }
        }
        // Gone only at shutdown, after the drain; the events are in the
        // spool and replayed at the next start.
        let _ = to_inserter.send(Pending { seq: appended.seq, events: kept, permit });
    }
}

fn encode_units(events: &[StoredEvent], lens: &[usize]) -> Result<Vec<Vec<u8>>, SpoolError> {
    let mut units = Vec::with_capacity(lens.len());
    let mut start = 0;
    for len in lens {
        units.push(encode_unit(&events[start..start + len])?);
        start += len;
    }
    Ok(units)
}

/// Splits a batch's outcome back per request: each its own count and its
/// own duplicate indexes.
fn answer_stored(parts: Vec<(usize, Reply)>, outcome: &InsertOutcome) {
    for (reply, answer) in split_outcome(parts, outcome) {
        let _ = reply.send(Ok(answer));
    }
}

fn split_outcome<R>(parts: Vec<(usize, R)>, outcome: &InsertOutcome) -> Vec<(R, InsertOutcome)> {
    let mut duplicates = outcome.duplicates.clone();
    duplicates.sort_unstable();
    let mut duplicates = duplicates.into_iter().peekable();
    let mut start = 0;
    parts
        .into_iter()
        .map(|(len, reply)| {
            let end = start + len;
            let mut own = Vec::new();
            while let Some(index) = duplicates.next_if(|&i| i < end) {
                own.push(index - start);
            }
            start = end;
            (reply, InsertOutcome { inserted: len - own.len(), duplicates: own })
        })
        .collect()
}

/// Writes each request of the batch to the spool (whole, or not at all if it
/// does not fit) with one fsync, then answers each.
async fn spool_and_answer(shared: &Arc<Shared>, events: Vec<StoredEvent>, parts: Vec<(usize, Reply)>) {
    let Some(spool) = shared.spool.clone() else {
        for (_, reply) in parts {
            let _ = reply.send(Err(SubmitError::Unavailable("the store failed and the spool is disabled".into())));
        }
        return;
    };
    let lens: Vec<usize> = parts.iter().map(|(len, _)| *len).collect();
    let written = tokio::task::spawn_blocking(move || -> Result<(Vec<bool>, Vec<InsertOutcome>), SpoolError> {
        let mut units = Vec::with_capacity(lens.len());
        let mut outcomes = Vec::with_capacity(lens.len());
        let mut start = 0;
        for len in lens {
            let own = &events[start..start + len];
            units.push(encode_unit(own)?);
            outcomes.push(spooled_outcome(own));
            start += len;
        }
        Ok((spool.append(&units)?, outcomes))
    })
    .await;
    match written {
        Ok(Ok((fits, outcomes))) => {
            let spooled: usize = fits.iter().zip(&parts).filter(|(fit, _)| **fit).map(|(_, (len, _))| len).sum();
            if spooled > 0 {
                metrics::counter!("synchealth_spool_writes_total").increment(1);
                metrics::counter!("synchealth_spooled_events_total").increment(spooled as u64);
                shared.wake_replayer.notify_one();
            }
            super::replay::publish_spool_gauges(shared);
            let retry_after = shared.retry_after();
            for (((_, reply), fit), outcome) in parts.into_iter().zip(fits).zip(outcomes) {
                let _ = reply.send(if fit { Ok(outcome) } else { Err(SubmitError::SpoolFull { retry_after }) });
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Could not spool a batch the store refused; answering 503.");
            answer_all(parts, &SubmitError::Unavailable(e.to_string()));
        }
        Err(e) => {
            tracing::error!(error = %e, "The spool write task failed; answering 503.");
            answer_all(parts, &SubmitError::Unavailable(e.to_string()));
        }
    }
}

/// A spooled request's answer: every event counts as accepted but those
/// repeated within the request (whether one was stored earlier is only known
/// at replay, where the store deduplicates it).
fn spooled_outcome(events: &[StoredEvent]) -> InsertOutcome {
    let mut seen = HashSet::with_capacity(events.len());
    let duplicates: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| !seen.insert((e.project.as_str(), e.event.event_id)))
        .map(|(i, _)| i)
        .collect();
    InsertOutcome { inserted: events.len() - duplicates.len(), duplicates }
}

fn answer_all(parts: Vec<(usize, Reply)>, error: &SubmitError) {
    for (_, reply) in parts {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_split_back_per_request_with_rebased_indexes() {
        let parts = vec![(3, 'a'), (0, 'b'), (4, 'c'), (2, 'd')];
        // Indexes into the concatenated batch; not necessarily sorted.
        let outcome = InsertOutcome { inserted: 5, duplicates: vec![8, 1, 3, 6] };
        let split = split_outcome(parts, &outcome);
        assert_eq!(
            split,
            vec![
                ('a', InsertOutcome { inserted: 2, duplicates: vec![1] }),
                ('b', InsertOutcome { inserted: 0, duplicates: vec![] }),
                ('c', InsertOutcome { inserted: 2, duplicates: vec![0, 3] }),
                ('d', InsertOutcome { inserted: 1, duplicates: vec![1] }),
            ]
        );
        let total: usize = split.iter().map(|(_, o)| o.inserted).sum();
        assert_eq!(total, outcome.inserted);
    }
}
