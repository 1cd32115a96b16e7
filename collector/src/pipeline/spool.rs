//! The spool: accepted events wait here, on local disk, while the store
//! cannot take them. An event is acknowledged only once it is in the store or
//! here (written and fsync'd, file and directory), so what the collector has
//! acknowledged survives the store being down and the collector being killed.
//!
//! # Files
//!
//! A spool directory holds `LOCK` (locked by the one process using the spool:
//! two collectors appending to the same segments would interleave records)
//! and segments named `{seq:020}.seg`, replayed in `seq` order. A segment is
//! a header followed by records:
//!
//! ```text
//! header = "SHSPOOL1" (8 bytes) | created_at_ms (i64 LE)
//! record = len (u32 LE) | crc32 (u32 LE) | payload (len bytes)
//! ```
//!
//! `crc32` (CRC-32/ISO-HDLC) covers the four `len` bytes and the payload, so
//! a corrupted length is caught too. The payload written today is format 3:
//! a `3` byte, then a [`RecordV3`] in postcard (binary, no text formatting on
//! the acknowledgement path). postcard is not self-describing, so a field
//! added to [`SyncEvent`] is a new format, never a changed one: format 2 (a
//! `2` byte, then a [`RecordV2`], which has no conflict details, queue time
//! or dimensions) and format 1 are still read, so that a spool left by an
//! older collector replays. Format 1 is JSON:
//!
//! ```json
//! {"v": 1, "project": "default", "sent_at_ms": 1790000000000, "received_at_ms": 1790000000123,
//!  "events": [SyncEvent, ...], "sample_rate_bits": [4607182418800017408, ...]}
//! ```
//!
//! That is exactly what [`StoredEvent::new`] needs, so a replay rebuilds the
//! very rows the first insert would have written (same corrected time, so
//! ClickHouse collapses a row that was in fact stored before the insert
//! failed). `sample_rate_bits` carries each event's `sample_rate` as IEEE-754
//! bits: JSON text would round-trip it exactly only with serde_json's
//! `float_roundtrip`, and the weight must not drift by one ulp on replay. One
//! record holds one run of events sharing project and clock readings; one
//! request's records are written together or not at all.
//!
//! # Crashes
//!
//! Records are only ever appended, and a segment that was open for writing
//! when the process died is never appended to again (a new process always
//! starts a new segment). So damage from a crash is confined to the tail of
//! the newest segment: a record cut short (its length runs past the end of
//! the file, or its checksum fails on the last record) was never
//! acknowledged, and reading drops it alone, never the file. A checksum
//! failure before the end is not a crash but corruption; that record is
//! skipped, logged, and the records after it are still replayed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use synchealth_schema::{
    ConflictDetail, ConflictKind, ConflictResolution, ErrorKind, Network, ProjectName, StoredEvent, SyncEvent, Trigger,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// First bytes of every segment; the `1` is the format version.
const MAGIC: &[u8; 8] = b"SHSPOOL1";
/// Magic plus the creation time.
pub(crate) const HEADER_LEN: u64 = 16;
/// `len` plus `crc32`.
const RECORD_HEADER_LEN: usize = 8;
/// The payload's own version, for a future change of its fields.
const PAYLOAD_VERSION: u32 = 1;
const SEGMENT_SUFFIX: &str = ".seg";
/// The largest a segment grows before the next one starts: the replayer
/// reads and decodes a segment whole, so this bounds its memory (8 MB of
/// records are about 70,000 events).
const MAX_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// An append could not be made durable; nothing of it counts as spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Writing or syncing failed.
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
    /// The events could not be encoded (not expected from validated events).
    #[error("encoding a spool record: {0}")]
    Encode(#[from] postcard::Error),
    /// The events could not be encoded as format 1 (tests only write it).
    #[error("encoding a spool record: {0}")]
    EncodeV1(#[from] serde_json::Error),
}

/// A segment file and what the spool knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Replay order.
    pub(crate) seq: u64,
    /// The file.
    pub(crate) path: PathBuf,
    /// Its size on disk, header included.
    pub(crate) bytes: u64,
    /// When it was created (Unix ms): its oldest record is at most this old.
    pub(crate) created_ms: i64,
    /// Every append to this segment was also handed, in memory, to the
    /// inserter (spool-first acknowledgement), which deletes the segment once
    /// it has stored them all. Cleared for good (the replayer then reads the
    /// segment from disk) when an append was not handed over or the inserter
    /// dropped what it held; always false for segments found at start.
    pub(crate) in_memory: bool,
    /// Appends handed to the inserter and not yet confirmed stored.
    pub(crate) unconfirmed: u64,
}

/// Where an append's events go next, besides the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// Nowhere: the replayer reads them back from the segment.
    Disk,
    /// The caller hands them to the inserter, which confirms them with
    /// [`Spool::confirm`].
    Memory,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Per unit: written (`true`) or left out because it did not fit.
    pub(crate) fits: Vec<bool>,
    /// The segment written to (meaningful when something fit).
    pub(crate) seq: u64,
}

/// Size and age of what is spooled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SpoolUsage {
    /// Bytes on disk, every segment.
    pub(crate) bytes: u64,
    /// Segment files.
    pub(crate) segments: usize,
    /// Creation time of the oldest segment (Unix ms).
    pub(crate) oldest_created_ms: Option<i64>,
}

/// The events of one segment, in order, and what reading had to drop.
#[derive(Debug, Default)]
pub(crate) struct SegmentContents {
    /// Every event of every readable record, in append order.
    pub(crate) events: Vec<StoredEvent>,
    /// Records read.
    pub(crate) records: usize,
    /// Bytes of a cut-short last record (a crash mid-append), dropped.
    pub(crate) torn_tail_bytes: u64,
    /// Records skipped for a checksum or decoding failure before the end.
    pub(crate) corrupt_records: usize,
}

/// The on-disk spool: a bounded queue of segments. Blocking I/O: call it from
/// `spawn_blocking`.
///
/// Two locks, always taken in this order: `writer` is held across an append's
/// writes and fsync (appends are serialized anyway, and sealing must wait for
/// one in progress), `meta` only for bookkeeping, so [`Spool::usage`] (for
/// `/readyz` and the gauges) never waits for a disk.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// A segment past this size is sealed and the next append starts a new
    /// one, so replay can delete spooled data in pieces.
    segment_target: u64,
    writer: Mutex<Option<Active>>,
    meta: Mutex<Meta>,
    /// Held for the spool's lifetime: the lock is released when it closes.
    _lock: File,
}

/// The segment open for appending.
#[derive(Debug)]
struct Active {
    seq: u64,
    file: File,
}

#[derive(Debug)]
struct Meta {
    /// Oldest first; the active segment, if any, is the last one.
    segments: VecDeque<Segment>,
    /// Sum of `segments[..].bytes`.
    bytes: u64,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, taking its lock, and lists the
    /// segments a previous process left, for replay. Never appends to them.
    #[tracing::instrument(skip_all, fields(dir = %dir.display(), max_bytes))]
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("spool directory {} is in use by another process", dir.display()),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) =
                name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path()));
        }
        found.sort_unstable();
        let mut segments = VecDeque::with_capacity(found.len());
        let mut changed_dir = false;
        for (seq, path) in found {
            match read_header(&path)? {
                Header::Valid { created_ms, bytes } => {
                    segments.push_back(Segment { seq, path, bytes, created_ms, in_memory: false, unconfirmed: 0 })
                }
                Header::Torn => {
                    // Shorter than a header: the process died while creating
                    // it, before any record could be acknowledged.
                    tracing::warn!(path = %path.display(), "Removing a spool segment cut short at creation.");
                    fs::remove_file(&path)?;
                    changed_dir = true;
                }
                Header::Foreign => {
                    // Not ours (or its header is damaged): keep the bytes for a
                    // human, out of the way of replay.
                    let aside = path.with_extension("corrupt");
                    tracing::error!(path = %path.display(), aside = %aside.display(), "Spool segment has no valid header; moved aside.");
                    fs::rename(&path, &aside)?;
                    changed_dir = true;
                }
            }
        }
        if changed_dir {
            sync_dir(dir)?;
        }
        let next_seq = segments.back().map_or(1, |s| s.seq + 1);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        if !segments.is_empty() {
            tracing::info!(segments = segments.len(), bytes, "Found spooled events to replay.");
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_target: (max_bytes / 8).clamp(4 * 1024, MAX_SEGMENT_BYTES),
            writer: Mutex::new(None),
            meta: Mutex::new(Meta { segments, bytes, next_seq }),
            _lock: lock,
        })
    }

    /// The bound, in bytes on disk.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends `units` (each one request's framed records, from
    /// [`encode_unit`]) for the replayer to read back, and makes them durable
    /// with one fsync. A unit that would take the spool past its bound is
    /// left out whole: the answer says, per unit, whether it was written
    /// (`true`) or did not fit (`false`). On an error nothing of this call
    /// counts as written.
    pub(crate) fn append(&self, units: &[Vec<u8>]) -> Result<Vec<bool>, SpoolError> {
        self.append_with(units, Handoff::Disk).map(|appended| appended.fits)
    }

    /// [`Spool::append`], saying where the events go next. With
    /// [`Handoff::Memory`] the caller hands what fit to the inserter, and the
    /// segment is deleted once the inserter confirmed every such append
    /// ([`Spool::confirm`]); an append to a segment the other side owns (the
    /// replayer's, or with [`Handoff::Disk`] the inserter's) starts a new
    /// segment first, so ownership never mixes within one segment.
    #[tracing::instrument(skip_all, fields(units = units.len(), ?handoff))]
    pub(crate) fn append_with(&self, units: &[Vec<u8>], handoff: Handoff) -> Result<Appended, SpoolError> {
        let mut writer = lock(&self.writer);
        let mut sealed = None;
        let fits = {
            let meta = lock(&self.meta);
            if let Some(active) = writer.as_ref() {
                let segment = meta.segments.back().filter(|s| s.seq == active.seq);
                let size = segment.map_or(u64::MAX, |s| s.bytes);
                // Ownership never mixes within a segment: a disk append to
                // the inserter's segment would make the replayer read back
                // (and re-check) every event the inserter already stored.
                let owner_differs = segment.is_some_and(|s| s.in_memory != (handoff == Handoff::Memory));
                if size >= self.segment_target || owner_differs {
                    sealed = Some(active.seq);
                    *writer = None;
                }
            }
            let mut projected = meta.bytes + if writer.is_none() { HEADER_LEN } else { 0 };
            units
                .iter()
                .map(|unit| {
                    let fits = projected + unit.len() as u64 <= self.max_bytes;
                    if fits {
                        projected += unit.len() as u64;
                    }
                    fits
                })
                .collect::<Vec<bool>>()
        };
        if let Some(seq) = sealed {
            self.remove_if_confirmed(seq)?;
        }
        if !fits.contains(&true) {
            return Ok(Appended { fits, seq: writer.as_ref().map_or(0, |a| a.seq) });
        }
        let active = match writer.as_mut() {
            Some(active) => active,
            None => writer.insert(self.start_segment(handoff == Handoff::Memory)?),
        };
        let before = active.file.metadata()?.len();
        let accepted = || units.iter().zip(&fits).filter(|(_, fits)| **fits).map(|(unit, _)| unit);
        let written = accepted().try_for_each(|unit| active.file.write_all(unit));
        match written.and_then(|()| active.file.sync_data()) {
            Ok(()) => {
                let added: u64 = accepted().map(|unit| unit.len() as u64).sum();
                let mut meta = lock(&self.meta);
                if let Some(segment) = meta.segments.iter_mut().rev().find(|s| s.seq == active.seq) {
                    segment.bytes += added;
                    match handoff {
                        Handoff::Memory => segment.unconfirmed += 1,
                        Handoff::Disk => segment.in_memory = false,
                    }
                }
                meta.bytes += added;
                Ok(Appended { fits, seq: active.seq })
            }
            Err(e) => {
                // Nothing of this call was acknowledged: cut the file back so
                // no half-written record stays in the middle of a segment,
                // and seal it (whatever the truncation did, the next append
                // starts a clean file).
                if let Err(truncate) = active.file.set_len(before).and_then(|()| active.file.sync_data()) {
                    tracing::error!(error = %truncate, seq = active.seq, "Could not cut a failed spool append back; its tail will be dropped on replay.");
                }
                *writer = None;
                Err(SpoolError::Io(e))
            }
        }
    }

    /// The inserter stored one append of segment `seq` (handed over with
    /// [`Handoff::Memory`]). A segment with nothing left unconfirmed is
    /// deleted, sealing it first if it is the active one, so an idle
    /// collector keeps no spool. Returns whether the segment is still the
    /// inserter's: `false` once the replayer owns it (nothing to do then).
    #[tracing::instrument(skip_all, fields(seq))]
    pub(crate) fn confirm(&self, seq: u64) -> io::Result<bool> {
        let mut writer = lock(&self.writer);
        let done = {
            let mut meta = lock(&self.meta);
            let Some(segment) = meta.segments.iter_mut().find(|s| s.seq == seq) else { return Ok(false) };
            if !segment.in_memory {
                return Ok(false);
            }
            segment.unconfirmed = segment.unconfirmed.saturating_sub(1);
            segment.unconfirmed == 0
        };
        if done {
            if writer.as_ref().is_some_and(|active| active.seq == seq) {
                *writer = None;
            }
            self.remove_if_confirmed(seq)?;
        }
        Ok(true)
    }

    /// Whether the inserter still owns segment `seq`: its in-memory events
    /// are worth inserting (otherwise the replayer reads them from disk).
    pub(crate) fn in_memory(&self, seq: u64) -> bool {
        lock(&self.meta).segments.iter().any(|s| s.seq == seq && s.in_memory)
    }

    /// The inserter dropped what it held (its insert failed): the replayer
    /// takes over every segment, from disk.
    pub(crate) fn disown_all(&self) {
        for segment in lock(&self.meta).segments.iter_mut() {
            segment.in_memory = false;
        }
    }

    /// Deletes sealed segment `seq` if the inserter owns it and confirmed all
    /// of it. The caller holds the writer lock and has sealed it.
    fn remove_if_confirmed(&self, seq: u64) -> io::Result<()> {
        let segment = {
            let meta = lock(&self.meta);
            match meta.segments.iter().find(|s| s.seq == seq) {
                Some(s) if s.in_memory && s.unconfirmed == 0 => s.clone(),
                _ => return Ok(()),
            }
        };
        self.delete(&segment, false)
    }

    /// Creates the next segment, durable (header synced, directory synced).
    fn start_segment(&self, in_memory: bool) -> io::Result<Active> {
        let seq = lock(&self.meta).next_seq;
        let path = self.dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"));
        let created_ms = now_ms();
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&created_ms.to_le_bytes());
        let created = file.write_all(&header).and_then(|()| file.sync_data()).and_then(|()| sync_dir(&self.dir));
        if let Err(e) = created {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let mut meta = lock(&self.meta);
        meta.next_seq = seq + 1;
        meta.segments.push_back(Segment { seq, path, bytes: HEADER_LEN, created_ms, in_memory, unconfirmed: 0 });
        meta.bytes += HEADER_LEN;
        Ok(Active { seq, file })
    }

    /// The oldest segment, to replay. If it is the one being appended to, it
    /// is sealed first (after any append in progress): later appends go to a
    /// new segment, so this one is complete when read and can be deleted
    /// whole once stored.
    ///
    /// Segments the inserter owns (see [`Handoff::Memory`]) are not the
    /// replayer's and are skipped.
    pub(crate) fn oldest_for_replay(&self) -> Option<Segment> {
        let mut writer = lock(&self.writer);
        let meta = lock(&self.meta);
        let oldest = meta.segments.iter().find(|s| !s.in_memory)?.clone();
        if writer.as_ref().is_some_and(|active| active.seq == oldest.seq) {
            *writer = None;
        }
        Some(oldest)
    }

    /// Deletes a replayed segment: called only once the store has confirmed
    /// every event in it.
    #[tracing::instrument(skip_all, fields(seq = segment.seq))]
    pub(crate) fn remove(&self, segment: &Segment) -> io::Result<()> {
        let writer = lock(&self.writer);
        if writer.as_ref().is_some_and(|active| active.seq == segment.seq) {
            // Appends may have landed after it was read: never delete the
            // segment being written.
            return Err(io::Error::other("refusing to remove the active spool segment"));
        }
        self.delete(segment, true)
    }

    /// Deletes a sealed segment's file and forgets it. The caller holds the
    /// writer lock. Syncing the directory is not needed for safety (a
    /// deletion lost in a crash means one more, idempotent replay); the
    /// replayer does it to keep the directory honest, the inserter's hot
    /// path skips it.
    fn delete(&self, segment: &Segment, sync: bool) -> io::Result<()> {
        match fs::remove_file(&segment.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        {
            let mut meta = lock(&self.meta);
            if let Some(at) = meta.segments.iter().position(|s| s.seq == segment.seq) {
                if let Some(removed) = meta.segments.remove(at) {
                    meta.bytes -= removed.bytes;
                }
            }
        }
        if sync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Bytes, segments and oldest creation time.
    pub(crate) fn usage(&self) -> SpoolUsage {
        let meta = lock(&self.meta);
        SpoolUsage {
            bytes: meta.bytes,
            segments: meta.segments.len(),
            oldest_created_ms: meta.segments.front().map(|s| s.created_ms),
        }
    }
}

/// Every step leaves the guarded state consistent, so a panic elsewhere does
/// not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum Header {
    Valid { created_ms: i64, bytes: u64 },
    Torn,
    Foreign,
}

fn read_header(path: &Path) -> io::Result<Header> {
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    if bytes < HEADER_LEN {
        return Ok(Header::Torn);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Ok(Header::Foreign);
    }
    let mut created = [0u8; 8];
    created.copy_from_slice(&header[8..]);
    Ok(Header::Valid { created_ms: i64::from_le_bytes(created), bytes })
}

/// Reads a segment whole and rebuilds its events, in order (see the module
/// doc for what is dropped and why).
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub(crate) fn read_segment(path: &Path) -> io::Result<SegmentContents> {
    let bytes = fs::read(path)?;
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a spool segment"));
    }
    let framed = parse_records(&bytes[HEADER_LEN as usize..]);
    let mut contents = SegmentContents {
        torn_tail_bytes: framed.torn_tail_bytes,
        corrupt_records: framed.corrupt,
        ..Default::default()
    };
    for payload in framed.payloads {
        match decode_payload(payload) {
            Ok(events) => {
                contents.records += 1;
                contents.events.extend(events);
            }
            Err(reason) => {
                tracing::error!(%reason, "Skipping a spool record that does not decode.");
                contents.corrupt_records += 1;
            }
        }
    }
    if contents.torn_tail_bytes > 0 {
        tracing::warn!(
            bytes = contents.torn_tail_bytes,
            "Dropped a spool record cut short by a crash (never acknowledged)."
        );
    }
    if framed.corrupt > 0 {
        tracing::error!(records = framed.corrupt, "Skipped spool records with a bad checksum.");
    }
    Ok(contents)
}

/// The payloads of a segment body (after the header).
#[derive(Debug, Default, PartialEq, Eq)]
struct Framed<'a> {
    payloads: Vec<&'a [u8]>,
    torn_tail_bytes: u64,
    corrupt: usize,
}

fn parse_records(body: &[u8]) -> Framed<'_> {
    let mut framed = Framed::default();
    let mut pos = 0usize;
    while pos < body.len() {
        let rest = &body[pos..];
        if rest.iter().all(|&b| b == 0) {
            // A file extended by a crash before its data reached the disk
            // reads as zeros: a torn tail, not a run of corrupt records.
            framed.torn_tail_bytes = rest.len() as u64;
            break;
        }
        let Some((len_bytes, crc_bytes)) = rest.get(..4).zip(rest.get(4..RECORD_HEADER_LEN)) else {
            framed.torn_tail_bytes = rest.len() as u64;
            break;
        };
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let crc = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
            // Runs past the end: the append that wrote it never finished.
            framed.torn_tail_bytes = rest.len() as u64;
            break;
        };
        let end = pos + RECORD_HEADER_LEN + len;
        if checksum(len_bytes, payload) != crc {
            if end == body.len() {
                framed.torn_tail_bytes = rest.len() as u64;
            } else {
                framed.corrupt += 1;
            }
        } else {
            framed.payloads.push(payload);
        }
        pos = end;
    }
    framed
}

fn checksum(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
#[derive(Serialize)]
struct PayloadOut<'a> {
    v: u32,
    project: &'a ProjectName,
    sent_at_ms: i64,
    received_at_ms: i64,
    events: Vec<&'a SyncEvent>,
    sample_rate_bits: Vec<u64>,
}

#[derive(Deserialize)]
struct PayloadIn {
    v: u32,
    project: ProjectName,
    sent_at_ms: i64,
    received_at_ms: i64,
    events: Vec<SyncEvent>,
    sample_rate_bits: Vec<u64>,
}

/// First byte of a format-2 payload ([`RecordV2`] in postcard), read only; a
/// format-1 payload is JSON and starts with `{`, so every format can be read.
const PAYLOAD_V2: u8 = 2;
/// First byte of a format-3 payload ([`RecordV3`] in postcard), written today.
const PAYLOAD_V3: u8 = 3;

/// One run of events sharing project and clock readings, in a binary
/// format: every field of the [`SyncEvent`]s exactly (times as Unix
/// nanoseconds, the sample rate as IEEE-754 bits by construction), with no
/// text formatting: writing it costs a fraction of JSON on the
/// acknowledgement path.
#[derive(Serialize, Deserialize)]
struct Record<S, E> {
    project: S,
    sent_at_ms: i64,
    received_at_ms: i64,
    events: Vec<E>,
}

/// Format 2: what collectors wrote before conflict details, queue times and
/// dimensions were stored.
type RecordV2<S> = Record<S, EventV2<S>>;
/// Format 3: format 2's event fields, then the fields added with issue 19.
type RecordV3<S> = Record<S, EventV3<S>>;

/// A [`SyncEvent`] in [`RecordV2`] (and the start of one in [`RecordV3`]);
/// enums by their wire spelling.
#[derive(Serialize, Deserialize)]
struct EventV2<S> {
    event_id: [u8; 16],
    device_id: S,
    occurred_at_ns: i128,
    success: bool,
    duration_ms: u64,
    conflicts: u32,
    queue_depth: u32,
    last_success_at_ns: Option<i128>,
    app_version: S,
    os: S,
    os_version: Option<S>,
    network: S,
    device_model: Option<S>,
    sync_type: Option<S>,
    trigger: Option<S>,
    error_kind: Option<S>,
    error_message: Option<S>,
    retries: u32,
    records_up: u64,
    records_down: u64,
    bytes_up: u64,
    bytes_down: u64,
    sample_rate: f64,
}

/// A [`SyncEvent`] in [`RecordV3`]: format 2's fields (postcard writes a
/// nested struct as its fields in order, with no framing), then each
/// conflict detail as (entity, kind, resolution, count) with enums by their
/// wire spelling, `queue_oldest_at` in Unix nanoseconds, and the dimensions
/// as (key, value) pairs in key order.
#[derive(Serialize, Deserialize)]
struct EventV3<S> {
    v2: EventV2<S>,
    conflict_details: Vec<(S, S, S, u32)>,
    queue_oldest_at_ns: Option<i128>,
    dimensions: Vec<(S, S)>,
}

impl<'a> EventV3<&'a str> {
    fn from_event(e: &'a SyncEvent) -> Self {
        EventV3 {
            v2: EventV2::from_event(e),
            conflict_details: e
                .conflict_details
                .iter()
                .map(|d| (d.entity.as_str(), d.kind.as_str(), d.resolution.as_str(), d.count))
                .collect(),
            queue_oldest_at_ns: e.queue_oldest_at.map(OffsetDateTime::unix_timestamp_nanos),
            dimensions: e.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        }
    }
}

impl EventV3<String> {
    fn into_event(self) -> Result<SyncEvent, String> {
        let mut event = self.v2.into_event()?;
        let unknown = |what: &str, text: &str| format!("unknown {what} {text:?}");
        event.conflict_details = self
            .conflict_details
            .into_iter()
            .map(|(entity, kind, resolution, count)| {
                Ok(ConflictDetail {
                    entity,
                    kind: ConflictKind::parse(&kind).ok_or_else(|| unknown("conflict kind", &kind))?,
                    resolution: ConflictResolution::parse(&resolution)
                        .ok_or_else(|| unknown("conflict resolution", &resolution))?,
                    count,
                })
            })
            .collect::<Result<_, String>>()?;
        event.queue_oldest_at = self
            .queue_oldest_at_ns
            .map(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).map_err(|e| format!("time {ns} ns: {e}")))
            .transpose()?;
        event.dimensions = self.dimensions.into_iter().collect();
        Ok(event)
    }
}

impl<'a> EventV2<&'a str> {
    fn from_event(e: &'a SyncEvent) -> Self {
        EventV2 {
            event_id: *e.event_id.as_bytes(),
            device_id: &e.device_id,
            occurred_at_ns: e.occurred_at.unix_timestamp_nanos(),
            success: e.success,
            duration_ms: e.duration_ms,
            conflicts: e.conflicts,
            queue_depth: e.queue_depth,
            last_success_at_ns: e.last_success_at.map(OffsetDateTime::unix_timestamp_nanos),
            app_version: &e.app_version,
            os: &e.os,
            os_version: e.os_version.as_deref(),
            network: e.network.as_str(),
            device_model: e.device_model.as_deref(),
            sync_type: e.sync_type.as_deref(),
            trigger: e.trigger.map(|t| t.as_str()),
            error_kind: e.error_kind.map(|k| k.as_str()),
            error_message: e.error_message.as_deref(),
            retries: e.retries,
            records_up: e.records_up,
            records_down: e.records_down,
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            sample_rate: e.sample_rate,
        }
    }
}

impl EventV2<String> {
    /// The event format 2 holds: none of the fields format 3 added.
    fn into_event(self) -> Result<SyncEvent, String> {
        let time = |ns: i128| OffsetDateTime::from_unix_timestamp_nanos(ns).map_err(|e| format!("time {ns} ns: {e}"));
        let unknown = |what: &str, text: &str| format!("unknown {what} {text:?}");
        Ok(SyncEvent {
            event_id: Uuid::from_bytes(self.event_id),
            device_id: self.device_id,
            occurred_at: time(self.occurred_at_ns)?,
            success: self.success,
            duration_ms: self.duration_ms,
            conflicts: self.conflicts,
            queue_depth: self.queue_depth,
            last_success_at: self.last_success_at_ns.map(time).transpose()?,
            app_version: self.app_version,
            os: self.os,
            os_version: self.os_version,
            network: Network::parse(&self.network).ok_or_else(|| unknown("network", &self.network))?,
            device_model: self.device_model,
            sync_type: self.sync_type,
            trigger: self.trigger.map(|t| Trigger::parse(&t).ok_or_else(|| unknown("trigger", &t))).transpose()?,
            error_kind: self
                .error_kind
                .map(|k| ErrorKind::parse(&k).ok_or_else(|| unknown("error kind", &k)))
                .transpose()?,
            error_message: self.error_message,
            retries: self.retries,
            records_up: self.records_up,
            records_down: self.records_down,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            sample_rate: self.sample_rate,
            conflict_details: Vec::new(),
            queue_oldest_at: None,
            dimensions: Default::default(),
        })
    }
}

/// One request's events as framed records, ready for [`Spool::append`]:
/// one record per run of events sharing project and clock readings.
pub(crate) fn encode_unit(events: &[StoredEvent]) -> Result<Vec<u8>, SpoolError> {
    let mut out = Vec::new();
    for run in events
        .chunk_by(|a, b| a.project == b.project && a.sent_at_ms == b.sent_at_ms && a.received_at_ms == b.received_at_ms)
    {
        let first = &run[0];
        let record = RecordV3 {
            project: first.project.as_str(),
            sent_at_ms: first.sent_at_ms,
            received_at_ms: first.received_at_ms,
            events: run.iter().map(|e| EventV3::from_event(&e.event)).collect(),
        };
        let mut payload = vec![PAYLOAD_V3];
        payload = postcard::to_extend(&record, payload)?;
        frame(&payload, &mut out)?;
    }
    Ok(out)
}

/// Format 2, as written before format 3 (it drops the fields format 3
/// added): still read, so segments spooled by an older collector replay.
#[cfg(test)]
fn encode_unit_v2(events: &[StoredEvent]) -> Result<Vec<u8>, SpoolError> {
    let mut out = Vec::new();
    for run in events
        .chunk_by(|a, b| a.project == b.project && a.sent_at_ms == b.sent_at_ms && a.received_at_ms == b.received_at_ms)
    {
        let first = &run[0];
        let record = RecordV2 {
            project: first.project.as_str(),
            sent_at_ms: first.sent_at_ms,
            received_at_ms: first.received_at_ms,
            events: run.iter().map(|e| EventV2::from_event(&e.event)).collect(),
        };
        let payload = postcard::to_extend(&record, vec![PAYLOAD_V2])?;
        frame(&payload, &mut out)?;
    }
    Ok(out)
}

/// Format 1 (JSON), as written before format 2: still read, so segments
/// spooled by an older collector replay after an upgrade.
#[cfg(test)]
fn encode_unit_v1(events: &[StoredEvent]) -> Result<Vec<u8>, SpoolError> {
    let mut out = Vec::new();
    for run in events
        .chunk_by(|a, b| a.project == b.project && a.sent_at_ms == b.sent_at_ms && a.received_at_ms == b.received_at_ms)
    {
        let first = &run[0];
        let payload = serde_json::to_vec(&PayloadOut {
            v: PAYLOAD_VERSION,
            project: &first.project,
            sent_at_ms: first.sent_at_ms,
            received_at_ms: first.received_at_ms,
            events: run.iter().map(|e| &e.event).collect(),
            sample_rate_bits: run.iter().map(|e| e.event.sample_rate.to_bits()).collect(),
        })?;
        frame(&payload, &mut out)?;
    }
    Ok(out)
}

fn frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), SpoolError> {
    let len = u32::try_from(payload.len()).map_err(|_| SpoolError::Io(io::Error::other("spool record over 4 GiB")))?;
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&checksum(&len_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A binary record's events, each turned into a [`SyncEvent`] by `into_event`.
fn decode_record<E>(
    record: Record<String, E>,
    into_event: fn(E) -> Result<SyncEvent, String>,
) -> Result<Vec<StoredEvent>, String> {
    let project = ProjectName::parse(&record.project).map_err(|e| e.to_string())?;
    let sent_at = time_from_ms(record.sent_at_ms)?;
    let received_at = time_from_ms(record.received_at_ms)?;
    record
        .events
        .into_iter()
        .map(|e| Ok(StoredEvent::new(project.clone(), into_event(e)?, sent_at, received_at)))
        .collect()
}

fn decode_payload(payload: &[u8]) -> Result<Vec<StoredEvent>, String> {
    match payload.first() {
        Some(&PAYLOAD_V3) => {
            let record: RecordV3<String> = postcard::from_bytes(&payload[1..]).map_err(|e| e.to_string())?;
            return decode_record(record, EventV3::into_event);
        }
        Some(&PAYLOAD_V2) => {
            let record: RecordV2<String> = postcard::from_bytes(&payload[1..]).map_err(|e| e.to_string())?;
            return decode_record(record, EventV2::into_event);
        }
        _ => {}
    }
    let record: PayloadIn = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if record.v != PAYLOAD_VERSION {
        return Err(format!("unknown spool record version {}", record.v));
    }
    if record.sample_rate_bits.len() != record.events.len() {
        return Err("sample_rate_bits does not match events".into());
    }
    let sent_at = time_from_ms(record.sent_at_ms)?;
    let received_at = time_from_ms(record.received_at_ms)?;
    Ok(record
        .events
        .into_iter()
        .zip(record.sample_rate_bits)
        .map(|(mut event, bits)| {
            event.sample_rate = f64::from_bits(bits);
            StoredEvent::new(record.project.clone(), event, sent_at, received_at)
        })
        .collect())
}

/// The instant whose `unix_ms` is `ms`, exactly.
fn time_from_ms(ms: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|e| format!("time {ms} ms: {e}"))
}

/// Makes a directory's entries (a created or removed file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_schema::parse_batch;

    /// Events as the collector builds them: parsed from JSON, stamped.
    fn events(n: usize, project: &str, received_ms: i64) -> Vec<StoredEvent> {
        let events: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "event_id": uuid::Uuid::new_v4().to_string(),
                    "device_id": format!("d{i}"),
                    "occurred_at": "2026-11-21T09:59:58.123456789+02:00",
                    "last_success_at": if i % 2 == 0 { serde_json::Value::Null } else { "2026-11-21T09:00:00Z".into() },
                    "success": i % 3 != 0,
                    "duration_ms": 1000 + i,
                    "app_version": "2.3.0",
                    "os": "android",
                    "network": "wifi",
                    "trigger": "user",
                })
            })
            .collect();
        let body =
            serde_json::to_vec(&serde_json::json!({"sent_at": "2026-11-21T08:00:05.5Z", "events": events})).unwrap();
        let batch = parse_batch(&body).unwrap();
        let project = ProjectName::parse(project).unwrap();
        let received = time_from_ms(received_ms).unwrap();
        batch
            .events
            .into_iter()
            .map(|(_, mut e)| {
                // Its shortest JSON text reads back one ulp off with a default
                // serde_json parse (no `float_roundtrip`).
                e.sample_rate = 0.121_556_213_077_440_73;
                StoredEvent::new(project.clone(), e, batch.sent_at, received)
            })
            .collect()
    }

    fn only_segment(spool: &Spool) -> Segment {
        let segment = spool.oldest_for_replay().unwrap();
        assert_eq!(spool.usage().segments, 1);
        segment
    }

    #[test]
    fn a_replay_rebuilds_the_very_rows_that_were_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut written = events(3, "alpha", 1_790_000_000_123);
        written.extend(events(2, "beta", 1_790_000_000_456));
        assert_eq!(spool.append(&[encode_unit(&written).unwrap()]).unwrap(), vec![true]);
        let read = read_segment(&only_segment(&spool).path).unwrap();
        assert_eq!(read.records, 2, "one record per project and clock readings");
        assert_eq!(read.events, written);
        assert_eq!((read.torn_tail_bytes, read.corrupt_records), (0, 0));
    }

    #[test]
    fn records_of_the_json_format_an_older_collector_wrote_still_replay() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let old = events(3, "alpha", 1_790_000_000_123);
        let new = events(2, "alpha", 1_790_000_000_999);
        spool.append(&[encode_unit_v1(&old).unwrap(), encode_unit(&new).unwrap()]).unwrap();
        let read = read_segment(&only_segment(&spool).path).unwrap();
        assert_eq!(read.events, [old, new].concat());
        assert!(
            encode_unit(&events(50, "alpha", 1)).unwrap().len()
                < encode_unit_v1(&events(50, "alpha", 1)).unwrap().len()
        );
    }

    /// Events carrying every field format 3 added, at nanosecond precision
    /// and a non-UTC offset, in a non-sorted detail order.
    fn detailed_events(project: &str, received_ms: i64) -> Vec<StoredEvent> {
        let mut events = events(3, project, received_ms);
        let detail =
            |entity: &str, kind, resolution, count| ConflictDetail { entity: entity.into(), kind, resolution, count };
        events[0].event.conflict_details = vec![
            detail("todo", ConflictKind::UpdateUpdate, ConflictResolution::LastWriteWins, 4),
            detail("list \"é\"", ConflictKind::DeleteUpdate, ConflictResolution::Unresolved, 1),
            detail("attachment", ConflictKind::Other, ConflictResolution::Custom, u32::MAX),
        ];
        events[0].event.queue_oldest_at = Some(
            OffsetDateTime::parse(
                "2026-11-21T09:41:07.987654321+02:00",
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap(),
        );
        events[0].event.dimensions = [("region", "eu-west"), ("engine", "powersync"), ("plan", "pro ü")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        events[1].event.dimensions = [("plan".to_string(), "free".to_string())].into();
        events
            .into_iter()
            .map(|e| {
                StoredEvent::new(
                    e.project.clone(),
                    e.event,
                    time_from_ms(e.sent_at_ms).unwrap(),
                    time_from_ms(e.received_at_ms).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_format_3_record_keeps_conflict_details_queue_times_and_dimensions_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let written = detailed_events("alpha", 1_790_000_000_123);
        let unit = encode_unit(&written).unwrap();
        assert_eq!(unit[RECORD_HEADER_LEN], PAYLOAD_V3, "format 3 is what is written");
        spool.append(&[unit]).unwrap();
        let read = read_segment(&only_segment(&spool).path).unwrap();
        assert_eq!(read.events, written);
        let first = &read.events[0];
        assert_eq!(first.event.conflict_details[1].entity, "list \"é\"");
        assert_eq!(first.event.conflict_details[2].count, u32::MAX);
        assert_eq!(first.event.queue_oldest_at.unwrap().unix_timestamp_nanos() % 1_000_000_000, 987_654_321);
        assert_eq!(first.event.dimensions.len(), 3);
        assert_eq!(first.queue_lag_ms, written[0].queue_lag_ms);
        assert!(first.queue_lag_ms.is_some());
        assert!(read.events[2].event.dimensions.is_empty() && read.events[2].event.queue_oldest_at.is_none());
    }

    #[test]
    fn records_of_format_2_an_older_collector_wrote_still_replay_beside_format_3() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let old = events(3, "alpha", 1_790_000_000_123);
        let new = detailed_events("alpha", 1_790_000_000_999);
        let old_unit = encode_unit_v2(&old).unwrap();
        assert_eq!(old_unit[RECORD_HEADER_LEN], PAYLOAD_V2);
        spool.append(&[old_unit, encode_unit(&new).unwrap()]).unwrap();
        let read = read_segment(&only_segment(&spool).path).unwrap();
        assert_eq!(read.events, [old, new].concat());
        assert_eq!(read.corrupt_records, 0);
    }

    /// A format-2 record as collectors before format 3 wrote it, byte for
    /// byte: the layout of [`EventV2`] must never change (postcard carries
    /// no field names, so a changed struct would misread old spools).
    #[test]
    fn a_format_2_record_from_before_format_3_decodes_to_its_event() {
        let payload = hex(FORMAT_2_RECORD);
        let events = decode_payload(&payload).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.project.as_str(), "alpha");
        assert_eq!((e.sent_at_ms, e.received_at_ms), (1_790_000_000_000, 1_790_000_000_123));
        let event = &e.event;
        assert_eq!(event.event_id, Uuid::from_u128(0x0190_f3a2_7b1c_7d4e_8f00_0000_0000_0001));
        assert_eq!(event.device_id, "dev-1");
        assert_eq!(event.occurred_at.unix_timestamp_nanos(), 1_789_999_998_123_456_789);
        assert_eq!((event.success, event.duration_ms, event.conflicts, event.queue_depth), (false, 1234, 2, 7));
        assert_eq!(event.last_success_at.map(|t| t.unix_timestamp()), Some(1_789_990_000));
        assert_eq!((event.app_version.as_str(), event.os.as_str()), ("2.3.0", "android"));
        assert_eq!(event.network, Network::Cellular);
        assert_eq!(event.trigger, Some(Trigger::User));
        assert_eq!(event.error_kind, Some(ErrorKind::Timeout));
        assert_eq!(event.error_message.as_deref(), Some("gateway"));
        assert_eq!((event.os_version.as_deref(), event.device_model.as_deref()), (Some("14"), None));
        assert_eq!((event.retries, event.records_up, event.bytes_down), (1, 3, 900));
        assert_eq!(event.sample_rate, 0.5);
        assert!(event.conflict_details.is_empty() && event.queue_oldest_at.is_none() && event.dimensions.is_empty());
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// The event asserted above as collectors before format 3 wrote it (a
    /// `2` byte, then the record in postcard; [`EventV2`]'s layout then).
    const FORMAT_2_RECORD: &str = concat!(
        "0205616c70686180b083c59868f6b183c59868010190f3a27b1c7d4e8f00000000000001056465762d31aae4c9c1f6e0",
        "add73100d209020701808083d8fa9aa9d73105322e332e3007616e64726f6964010231340863656c6c756c6172000001",
        "0475736572010774696d656f7574010767617465776179010300008407000000000000e03f",
    );

    #[test]
    fn records_replay_in_append_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let units: Vec<Vec<StoredEvent>> = (0..6).map(|i| events(3, "p", 1_790_000_000_000 + i)).collect();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.append(&[encode_unit(&units[0]).unwrap(), encode_unit(&units[1]).unwrap()]).unwrap();
            spool.oldest_for_replay().unwrap(); // seals the first segment
            spool.append(&[encode_unit(&units[2]).unwrap()]).unwrap();
        }
        // A new process: the old segments stay as they are, appends go to a new one.
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&[encode_unit(&units[3]).unwrap(), encode_unit(&units[4]).unwrap()]).unwrap();
        spool.append(&[encode_unit(&units[5]).unwrap()]).unwrap();
        assert_eq!(spool.usage().segments, 3);
        let mut replayed = Vec::new();
        while let Some(segment) = spool.oldest_for_replay() {
            replayed.extend(read_segment(&segment.path).unwrap().events);
            spool.remove(&segment).unwrap();
        }
        assert_eq!(replayed, units.concat());
        assert_eq!(spool.usage(), SpoolUsage::default());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("LOCK")]);
    }

    #[test]
    fn a_torn_tail_record_is_dropped_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (events(4, "p", 1), events(4, "p", 2));
        let path = {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.append(&[encode_unit(&first).unwrap()]).unwrap();
            only_segment(&spool).path
        };
        // A crash half-way through appending the second record.
        let torn = encode_unit(&second).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        let read = read_segment(&path).unwrap();
        assert_eq!(read.events, first);
        assert_eq!(read.torn_tail_bytes, (torn.len() / 2) as u64);
        assert_eq!(read.corrupt_records, 0);
        let intact = fs::metadata(&path).unwrap().len() - (torn.len() / 2) as u64;
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        // Even a tail shorter than a record header...
        file.set_len(intact + 3).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!((read.events.len(), read.torn_tail_bytes, read.corrupt_records), (first.len(), 3, 0));
        // ...or zeros, where the crash left the file longer than the data
        // that reached the disk.
        file.set_len(intact + 100).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!((read.events.len(), read.torn_tail_bytes, read.corrupt_records), (first.len(), 100, 0));
        // And a restart replays the good records rather than giving up on the file.
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(read_segment(&spool.oldest_for_replay().unwrap().path).unwrap().events, first);
    }

    #[test]
    fn a_complete_last_record_with_a_bad_checksum_counts_as_torn() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (first, second) = (events(2, "p", 1), events(2, "p", 2));
        spool.append(&[encode_unit(&first).unwrap(), encode_unit(&second).unwrap()]).unwrap();
        let path = only_segment(&spool).path;
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20; // its pages were not all written before the crash
        fs::write(&path, &bytes).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!(read.events, first);
        assert!(read.torn_tail_bytes > 0);
        assert_eq!(read.corrupt_records, 0);
    }

    #[test]
    fn a_checksum_mismatch_mid_file_skips_that_record_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let units = [events(2, "p", 1), events(2, "p", 2), events(2, "p", 3)];
        let encoded: Vec<Vec<u8>> = units.iter().map(|u| encode_unit(u).unwrap()).collect();
        spool.append(&encoded).unwrap();
        let path = only_segment(&spool).path;
        let mut bytes = fs::read(&path).unwrap();
        // Flip one byte inside the second record's payload.
        let at = HEADER_LEN as usize + encoded[0].len() + RECORD_HEADER_LEN + 10;
        bytes[at] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!(read.corrupt_records, 1);
        assert_eq!(read.torn_tail_bytes, 0);
        assert_eq!(read.events, [units[0].clone(), units[2].clone()].concat());
    }

    #[test]
    fn the_bound_refuses_whole_units_and_counts_every_byte_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let unit = encode_unit(&events(5, "p", 1)).unwrap();
        // Room for the header and two units, not three.
        let max = HEADER_LEN + 2 * unit.len() as u64 + unit.len() as u64 / 2;
        let spool = Spool::open(dir.path(), max).unwrap();
        assert_eq!(spool.append(&[unit.clone(), unit.clone(), unit.clone()]).unwrap(), vec![true, true, false]);
        assert_eq!(spool.append(std::slice::from_ref(&unit)).unwrap(), vec![false]);
        let small = encode_unit(&events(1, "p", 2)).unwrap();
        assert!(small.len() < unit.len() / 2);
        assert_eq!(spool.append(std::slice::from_ref(&small)).unwrap(), vec![true], "a smaller unit still fits");
        let usage = spool.usage();
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert_eq!(usage.bytes, on_disk);
        assert!(usage.bytes <= max);
        // Replaying frees the room.
        let segment = spool.oldest_for_replay().unwrap();
        spool.remove(&segment).unwrap();
        assert_eq!(spool.append(&[unit]).unwrap(), vec![true]);
    }

    #[test]
    fn a_segment_cut_short_at_creation_is_removed_and_a_foreign_file_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{:020}{SEGMENT_SUFFIX}", 3)), b"SHSP").unwrap();
        fs::write(dir.path().join(format!("{:020}{SEGMENT_SUFFIX}", 4)), b"something else entirely").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.usage().segments, 0);
        assert!(dir.path().join(format!("{:020}.corrupt", 4)).exists());
        spool.append(&[encode_unit(&events(1, "p", 1)).unwrap()]).unwrap();
        assert_eq!(spool.oldest_for_replay().unwrap().seq, 1);
    }

    #[test]
    fn one_spool_directory_serves_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), 1 << 20).unwrap();
        let second = Spool::open(dir.path(), 1 << 20).unwrap_err();
        assert!(second.to_string().contains("in use"), "{second}");
    }

    #[test]
    fn the_active_segment_is_sealed_for_replay_and_never_removed_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&[encode_unit(&events(1, "p", 1)).unwrap()]).unwrap();
        let sealed = spool.oldest_for_replay().unwrap();
        spool.append(&[encode_unit(&events(1, "p", 2)).unwrap()]).unwrap();
        assert_eq!(spool.usage().segments, 2, "the append after sealing went to a new segment");
        spool.remove(&sealed).unwrap();
        let active = spool.usage();
        assert_eq!(active.segments, 1);
        let newest = Segment { seq: sealed.seq + 1, ..sealed };
        assert!(spool.remove(&newest).is_err());
    }
}
