//! The on-disk record format of the event buffer.
//!
//! A file starts with the 8-byte magic `SHPROBE1`, then records:
//!
//! ```text
//! [u32 LE payload length][u32 LE CRC32 of payload][payload]
//! payload = [u8 kind][...]
//!   kind 1, event:  [u64 seq][u8 success][i64 occurred_at_ms][f64 sample_rate][SyncEvent JSON]
//!   kind 2, remove: [u64 seq]*   (those events left the buffer)
//! ```
//!
//! All integers little-endian. A record is only trusted whole: a short read
//! or a checksum mismatch marks the torn tail a kill left behind, and the file
//! is cut there, so a crash loses at most the record being written.

use std::io::{self, Read};

/// First bytes of every buffer file; a different magic is a different format.
pub(crate) const MAGIC: &[u8; 8] = b"SHPROBE1";
/// Bytes before a record's payload.
pub(crate) const HEADER_LEN: u64 = 8;
/// No record is larger: a length beyond it is garbage, not a record.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 20;

const KIND_EVENT: u8 = 1;
const KIND_REMOVE: u8 = 2;
/// Bytes of an event payload before its JSON.
const EVENT_PREFIX: usize = 1 + 8 + 1 + 8 + 8;

/// What an event record says about its event, without parsing the JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EventMeta {
    /// Buffer-local sequence number, increasing.
    pub(crate) seq: u64,
    /// Whether the attempt succeeded (successes are thinned first).
    pub(crate) success: bool,
    /// Device time of the attempt, for expiry.
    pub(crate) occurred_at_ms: i64,
    /// The event's current `sample_rate`.
    pub(crate) sample_rate: f64,
}

/// One decoded record.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    /// An event entered the buffer.
    Event(EventMeta, Vec<u8>),
    /// Events left the buffer.
    Remove(Vec<u64>),
}

/// Encodes an event record, header included.
pub(crate) fn encode_event(meta: &EventMeta, json: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(EVENT_PREFIX + json.len());
    payload.push(KIND_EVENT);
    payload.extend_from_slice(&meta.seq.to_le_bytes());
    payload.push(u8::from(meta.success));
    payload.extend_from_slice(&meta.occurred_at_ms.to_le_bytes());
    payload.extend_from_slice(&meta.sample_rate.to_le_bytes());
    payload.extend_from_slice(json);
    frame(payload)
}

/// Encodes a removal record, header included.
pub(crate) fn encode_remove(seqs: &[u64]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + 8 * seqs.len());
    payload.push(KIND_REMOVE);
    for seq in seqs {
        payload.extend_from_slice(&seq.to_le_bytes());
    }
    frame(payload)
}

fn frame(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN as usize + payload.len());
    // Payloads are bounded far below 4 GiB by the event size limits.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The JSON part of an event record (header included in `record`).
#[cfg(test)]
pub(crate) fn event_json(record: &[u8]) -> Option<&[u8]> {
    record.get(HEADER_LEN as usize + EVENT_PREFIX..)
}

/// Reads the next record. `Ok(None)` is the clean end of the file;
/// `Err(Torn)` a record that is not whole or not intact.
pub(crate) fn read_record(reader: &mut impl Read) -> Result<Option<(Record, u64)>, Torn> {
    let mut header = [0u8; HEADER_LEN as usize];
    match read_full(reader, &mut header) {
        Ok(0) => return Ok(None),
        Ok(n) if n == header.len() => {}
        _ => return Err(Torn),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_PAYLOAD {
        return Err(Torn);
    }
    let mut payload = vec![0u8; len as usize];
    if read_full(reader, &mut payload).map_err(|_| Torn)? != payload.len() || crc32fast::hash(&payload) != crc {
        return Err(Torn);
    }
    let record = decode(&payload).ok_or(Torn)?;
    Ok(Some((record, HEADER_LEN + u64::from(len))))
}

/// A record cut short or damaged: where the intact file ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Torn;

fn decode(payload: &[u8]) -> Option<Record> {
    let (&kind, rest) = payload.split_first()?;
    match kind {
        KIND_EVENT if payload.len() >= EVENT_PREFIX => {
            let seq = u64::from_le_bytes(rest.get(0..8)?.try_into().ok()?);
            let success = *rest.get(8)? != 0;
            let occurred_at_ms = i64::from_le_bytes(rest.get(9..17)?.try_into().ok()?);
            let sample_rate = f64::from_le_bytes(rest.get(17..25)?.try_into().ok()?);
            let json = rest.get(25..)?.to_vec();
            Some(Record::Event(EventMeta { seq, success, occurred_at_ms, sample_rate }, json))
        }
        KIND_REMOVE if rest.len() % 8 == 0 => Some(Record::Remove(
            rest.chunks_exact(8).filter_map(|c| c.try_into().ok().map(u64::from_le_bytes)).collect(),
        )),
        _ => None,
    }
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta(seq: u64) -> EventMeta {
        EventMeta {
            seq,
            success: seq.is_multiple_of(2),
            occurred_at_ms: 1_700_000_000_000 + seq as i64,
            sample_rate: 0.25,
        }
    }

    #[test]
    fn records_round_trip_and_the_json_is_found_in_place() {
        let mut bytes = encode_event(&meta(7), br#"{"a":1}"#);
        assert_eq!(event_json(&bytes).unwrap(), br#"{"a":1}"#);
        bytes.extend(encode_remove(&[3, 7]));
        let mut reader = &bytes[..];
        let (first, len) = read_record(&mut reader).unwrap().unwrap();
        assert_eq!(first, Record::Event(meta(7), br#"{"a":1}"#.to_vec()));
        assert_eq!(len, (HEADER_LEN as usize + EVENT_PREFIX + 7) as u64);
        assert_eq!(read_record(&mut reader).unwrap().unwrap().0, Record::Remove(vec![3, 7]));
        assert_eq!(read_record(&mut reader).unwrap(), None);
    }

    #[test]
    fn a_cut_or_flipped_record_is_torn() {
        let whole = encode_event(&meta(1), b"{}");
        for cut in 1..whole.len() {
            assert_eq!(read_record(&mut &whole[..cut]), Err(Torn), "cut at {cut}");
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(read_record(&mut &flipped[..]), Err(Torn));
    }
}
