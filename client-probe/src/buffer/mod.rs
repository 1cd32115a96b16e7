//! The on-disk event buffer: where events wait, across app kills and
//! restarts, until the collector has acknowledged them.
//!
//! One append-only file, `events.log` in the storage directory, of
//! checksummed records (format in `format.rs`): an event record when an
//! event enters, a removal record when events leave (acknowledged, expired
//! or dropped). Opening the file replays it; a torn tail left by a kill is cut
//! off, losing at most the record being written. Dead records are reclaimed
//! by compaction (write a new file, fsync, rename over the old one), so the
//! file stays near the size of what it holds.
//!
//! Bounded by events, bytes and age ([`BufferLimits`]). When a bound is
//! passed, the buffer makes room down to 80 % of it: first by **thinning
//! successes** (every other success is dropped and the kept one's
//! `sample_rate` halved, so it stands for both and rates and percentiles stay
//! unbiased), then, only if that is not enough, by dropping the oldest events,
//! successes before failures (reason `buffer_full`). Events older than the
//! age bound are dropped with reason `expired`.
//!
//! Only metadata is held in memory (about 40 bytes per event); event JSON is
//! read from the file when a batch is uploaded.

mod format;

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use synchealth_schema::SyncEvent;

pub(crate) use self::format::EventMeta;
use self::format::{encode_event, encode_remove, read_record, Record, Torn, MAGIC};
use crate::config::BufferLimits;

/// The buffer file's name in the storage directory.
pub(crate) const FILE_NAME: &str = "events.log";
/// Thinning never takes a success below this rate (it then stands for 1024
/// attempts); past that, successes are dropped like failures.
pub(crate) const MIN_SAMPLE_RATE: f64 = 1.0 / 1024.0;
/// Dead bytes tolerated before a compaction, when under the byte bound.
const COMPACT_SLACK: u64 = 256 * 1024;

/// One event held, as remembered in memory: 32 bytes, so a full buffer of
/// 10,000 events costs about a third of a megabyte.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    /// Where its record starts in the file (files stay far below 4 GiB).
    offset: u32,
    /// Its record's length, header included.
    len: u32,
    /// Device time of the attempt, Unix seconds, for expiry.
    occurred_at_s: u32,
    /// The rate its record holds; the current one is this halved `halvings` times.
    recorded_rate: f32,
    success: bool,
    /// Thinning passes this event survived since its record was written; the
    /// record (JSON included) is rewritten with the new rate at the next compaction.
    halvings: u8,
}

impl Entry {
    fn new(meta: &EventMeta, offset: u64, len: u64) -> Entry {
        Entry {
            seq: meta.seq,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            len: u32::try_from(len).unwrap_or(u32::MAX),
            occurred_at_s: u32::try_from(meta.occurred_at_ms.max(0) / 1000).unwrap_or(u32::MAX),
            recorded_rate: meta.sample_rate as f32,
            success: meta.success,
            halvings: 0,
        }
    }

    /// The event's current `sample_rate` (approximately: the record's f64
    /// is what is sent).
    fn rate(&self) -> f64 {
        f64::from(self.recorded_rate) / f64::from(1u32 << self.halvings.min(31))
    }

    fn len(&self) -> u64 {
        u64::from(self.len)
    }
}

/// What making room or expiring cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Successes dropped by thinning: their weight lives on in the kept ones.
    pub(crate) thinned: u64,
    /// Events dropped to stay within the bounds.
    pub(crate) buffer_full: u64,
    /// Events dropped for being older than the age bound.
    pub(crate) expired: u64,
}

/// What opening found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Events recovered from the file.
    pub(crate) events: usize,
    /// Bytes of a torn or damaged tail that were cut off.
    pub(crate) torn_bytes: u64,
}

/// Where the records live: a file, or memory when no storage directory is
/// usable (the probe then still works, it just does not survive a restart).
#[derive(Debug)]
enum Backing {
    File { file: File, path: PathBuf },
    Memory(Vec<u8>),
}

/// The event buffer. Used by the worker thread only.
#[derive(Debug)]
pub(crate) struct Buffer {
    backing: Backing,
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// Bytes of the file, magic included.
    file_len: u64,
    /// Bytes of the records of held events.
    live_bytes: u64,
    limits: BufferLimits,
    /// Alternates which success of a pair thinning keeps.
    thin_phase: bool,
}

impl Buffer {
    /// A buffer in memory only.
    pub(crate) fn in_memory(limits: BufferLimits) -> Buffer {
        Buffer {
            backing: Backing::Memory(MAGIC.to_vec()),
            entries: VecDeque::new(),
            next_seq: 1,
            file_len: MAGIC.len() as u64,
            live_bytes: 0,
            limits,
            thin_phase: fastrand::bool(),
        }
    }

    /// Opens (creating if needed) the buffer file in `dir`, replaying it.
    pub(crate) fn open(dir: &Path, limits: BufferLimits) -> io::Result<(Buffer, Opened)> {
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let len = file.metadata()?.len();
        let mut buffer = Buffer::in_memory(limits);
        let mut opened = Opened::default();
        let mut magic = [0u8; 8];
        let valid_magic = len >= 8 && {
            file.seek(SeekFrom::Start(0))?;
            file.read_exact(&mut magic)?;
            &magic == MAGIC
        };
        let mut end = MAGIC.len() as u64;
        if valid_magic {
            let mut removed = HashSet::new();
            let mut reader = BufReader::new(&mut file);
            loop {
                match read_record(&mut reader) {
                    Ok(Some((Record::Event(meta, _), record_len))) => {
                        buffer.next_seq = buffer.next_seq.max(meta.seq + 1);
                        buffer.entries.push_back(Entry::new(&meta, end, record_len));
                        end += record_len;
                    }
                    Ok(Some((Record::Remove(seqs), record_len))) => {
                        removed.extend(seqs);
                        end += record_len;
                    }
                    Ok(None) | Err(Torn) => break,
                }
            }
            drop(reader);
            buffer.entries.retain(|e| !removed.contains(&e.seq));
            opened.torn_bytes = len - end;
        } else if len > 0 {
            // Not our format (or a magic torn on the very first write): the
            // file cannot be read, so it starts over.
            tracing::warn!(path = %path.display(), bytes = len, "Probe buffer file unreadable; starting a new one.");
            opened.torn_bytes = len;
        }
        if !valid_magic {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
        } else if opened.torn_bytes > 0 {
            file.set_len(end)?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), bytes = opened.torn_bytes, "Cut a torn record off the probe buffer.");
        }
        buffer.file_len = end;
        buffer.live_bytes = buffer.entries.iter().map(Entry::len).sum();
        buffer.backing = Backing::File { file, path };
        opened.events = buffer.entries.len();
        Ok((buffer, opened))
    }

    /// Events held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no event is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size of the buffer file (or its memory image), in bytes.
    #[cfg(test)]
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of the held events' records.
    #[cfg(test)]
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Held failures and successes, with the attempts they stand for.
    #[cfg(test)]
    pub(crate) fn census(&self) -> Census {
        let mut census = Census::default();
        for e in &self.entries {
            if e.success {
                census.successes += 1;
                census.success_weight += 1.0 / e.rate();
            } else {
                census.failures += 1;
            }
        }
        census
    }

    /// Appends events, then makes room if a bound is passed.
    pub(crate) fn append(&mut self, events: &[SyncEvent]) -> io::Result<Removed> {
        if events.is_empty() {
            return Ok(Removed::default());
        }
        let mut bytes = Vec::new();
        let mut new_entries = Vec::with_capacity(events.len());
        for event in events {
            let json = match serde_json::to_vec(event) {
                Ok(json) => json,
                Err(error) => {
                    tracing::warn!(%error, "Could not encode an event; skipped.");
                    continue;
                }
            };
            let meta = EventMeta {
                seq: self.next_seq,
                success: event.success,
                occurred_at_ms: unix_ms(event.occurred_at),
                sample_rate: event.sample_rate,
            };
            self.next_seq += 1;
            let record = encode_event(&meta, &json);
            new_entries.push(Entry::new(&meta, self.file_len + bytes.len() as u64, record.len() as u64));
            bytes.extend_from_slice(&record);
        }
        self.write_at_end(&bytes)?;
        self.live_bytes += new_entries.iter().map(Entry::len).sum::<u64>();
        self.entries.extend(new_entries);
        if self.over(self.limits.max_events, self.limits.max_bytes) {
            return self.make_room();
        }
        Ok(Removed::default())
    }

    /// The JSON of the oldest `max` events, with their sequence numbers.
    pub(crate) fn peek(&mut self, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let count = max.min(self.entries.len());
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let entry = self.entries[i];
            let record = self.read_entry(&entry)?;
            let (_, json) = current_record(&entry, &record)?;
            out.push((entry.seq, json));
        }
        Ok(out)
    }

    /// Removes events (acknowledged, or refused for good); unknown
    /// sequence numbers (thinned meanwhile) are ignored.
    pub(crate) fn remove(&mut self, seqs: &[u64]) -> io::Result<()> {
        let gone: HashSet<u64> = seqs.iter().copied().collect();
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|e| {
            let keep = !gone.contains(&e.seq);
            if !keep {
                freed += e.len();
            }
            keep
        });
        if self.entries.len() == before {
            return Ok(());
        }
        self.live_bytes -= freed;
        if self.entries.is_empty() {
            // Nothing held: start the file over instead of logging removals.
            return self.rewrite();
        }
        self.write_at_end(&encode_remove(seqs))?;
        let dead = self.file_len - MAGIC.len() as u64 - self.live_bytes;
        if dead > self.live_bytes.max(COMPACT_SLACK) || self.file_len > self.limits.max_bytes {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Drops events that occurred before `now_ms` minus the age bound.
    pub(crate) fn expire(&mut self, now_ms: i64) -> io::Result<Removed> {
        let max_age_s = i64::try_from(self.limits.max_age.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now_ms.div_euclid(1000).saturating_sub(max_age_s);
        let old: Vec<u64> =
            self.entries.iter().filter(|e| i64::from(e.occurred_at_s) < cutoff).map(|e| e.seq).collect();
        if old.is_empty() {
            return Ok(Removed::default());
        }
        self.remove(&old)?;
        Ok(Removed { expired: old.len() as u64, ..Removed::default() })
    }

    /// Makes sure what is written so far survives power loss, not just a kill.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        match &mut self.backing {
            Backing::File { file, .. } => file.sync_data(),
            Backing::Memory(_) => Ok(()),
        }
    }

    fn over(&self, max_events: usize, max_bytes: u64) -> bool {
        self.entries.len() > max_events || self.live_bytes > max_bytes
    }

    /// Brings the buffer down to 80 % of its bounds: thin successes, then
    /// drop the oldest successes, then the oldest failures.
    fn make_room(&mut self) -> io::Result<Removed> {
        let target_events = self.limits.max_events * 4 / 5;
        let target_bytes = self.limits.max_bytes / 5 * 4;
        let mut removed = Removed::default();
        while self.over(target_events, target_bytes) {
            let thinned = self.thin_once();
            if thinned == 0 {
                break;
            }
            removed.thinned += thinned;
        }
        for successes in [true, false] {
            while self.over(target_events, target_bytes) {
                let Some(at) = self.entries.iter().position(|e| e.success == successes) else { break };
                if let Some(entry) = self.entries.remove(at) {
                    self.live_bytes -= entry.len();
                    removed.buffer_full += 1;
                }
            }
        }
        self.rewrite()?;
        tracing::info!(
            thinned = removed.thinned,
            dropped = removed.buffer_full,
            held = self.entries.len(),
            "Probe buffer full; made room."
        );
        Ok(removed)
    }

    /// One pass: of every two successes that can still be thinned, drops one
    /// and halves the other's rate. Returns the number dropped.
    fn thin_once(&mut self) -> u64 {
        let mut keep_next = self.thin_phase;
        self.thin_phase = !self.thin_phase;
        let mut dropped = 0;
        let mut freed = 0;
        self.entries.retain_mut(|e| {
            if !e.success || e.rate() / 2.0 < MIN_SAMPLE_RATE {
                return true;
            }
            keep_next = !keep_next;
            if keep_next {
                e.halvings += 1;
                true
            } else {
                dropped += 1;
                freed += e.len();
                false
            }
        });
        self.live_bytes -= freed;
        dropped
    }

    /// Writes the held events to a new file and swaps it in: drops dead
    /// records and applies thinned rates. A crash mid-way leaves the old file.
    /// Entries are updated in place (each is read before its offset changes),
    /// so a compaction allocates one record at a time, not a second index.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp_path = match &self.backing {
            Backing::File { path, .. } => Some(path.with_extension("log.tmp")),
            Backing::Memory(_) => None,
        };
        let mut image: Vec<u8> = Vec::new();
        let mut out: Box<dyn Write> = match &tmp_path {
            Some(tmp) => Box::new(BufWriter::new(File::create(tmp)?)),
            None => Box::new(&mut image),
        };
        out.write_all(MAGIC)?;
        let mut offset = MAGIC.len() as u64;
        let mut live = 0;
        for i in 0..self.entries.len() {
            let entry = self.entries[i];
            let record = self.read_entry(&entry)?;
            let record = if entry.halvings > 0 { current_record(&entry, &record)?.0 } else { record };
            out.write_all(&record)?;
            let len = record.len() as u64;
            let updated = &mut self.entries[i];
            updated.offset = u32::try_from(offset).map_err(io::Error::other)?;
            updated.len = u32::try_from(len).map_err(io::Error::other)?;
            if updated.halvings > 0 {
                updated.recorded_rate = entry.rate() as f32;
                updated.halvings = 0;
            }
            offset += len;
            live += len;
        }
        out.flush()?;
        drop(out);
        match (&mut self.backing, tmp_path) {
            (Backing::File { file, path }, Some(tmp)) => {
                File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &*path)?;
                *file = OpenOptions::new().read(true).write(true).open(&*path)?;
            }
            (Backing::Memory(bytes), _) => *bytes = image,
            (Backing::File { .. }, None) => {}
        }
        self.live_bytes = live;
        self.file_len = offset;
        Ok(())
    }

    fn read_entry(&mut self, entry: &Entry) -> io::Result<Vec<u8>> {
        let len = entry.len as usize;
        let mut record = vec![0u8; len];
        match &mut self.backing {
            Backing::File { file, .. } => {
                file.seek(SeekFrom::Start(u64::from(entry.offset)))?;
                file.read_exact(&mut record)?;
            }
            Backing::Memory(bytes) => {
                let start = entry.offset as usize;
                record.copy_from_slice(bytes.get(start..start + len).ok_or_else(|| io::Error::other("out of range"))?);
            }
        }
        Ok(record)
    }

    fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.backing {
            Backing::File { file, .. } => {
                file.seek(SeekFrom::Start(self.file_len))?;
                if let Err(error) = file.write_all(bytes) {
                    // Leave no half record behind for the next append to
                    // follow: the reader would stop at it.
                    let _ = file.set_len(self.file_len);
                    return Err(error);
                }
            }
            Backing::Memory(image) => image.extend_from_slice(bytes),
        }
        self.file_len += bytes.len() as u64;
        Ok(())
    }
}

/// Counts of what the buffer holds.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Census {
    /// Failed attempts held.
    pub(crate) failures: u64,
    /// Successful attempts held.
    pub(crate) successes: u64,
    /// Attempts the held successes stand for (sum of `1 / sample_rate`).
    pub(crate) success_weight: f64,
}

/// An entry's record and event JSON as they should be now: unchanged, or
/// with the thinned rate in both the header and the JSON.
fn current_record(entry: &Entry, record: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let (meta, json) = match read_record(&mut &record[..]) {
        Ok(Some((Record::Event(meta, json), _))) => (meta, json),
        _ => return Err(io::Error::other("the buffer file changed under the probe")),
    };
    if entry.halvings == 0 {
        return Ok((record.to_vec(), json));
    }
    let rate = meta.sample_rate / f64::from(1u32 << entry.halvings.min(31));
    let mut value: serde_json::Value = serde_json::from_slice(&json).map_err(io::Error::other)?;
    value["sample_rate"] = serde_json::json!(rate);
    let json = serde_json::to_vec(&value).map_err(io::Error::other)?;
    Ok((encode_event(&EventMeta { sample_rate: rate, ..meta }, &json), json))
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
