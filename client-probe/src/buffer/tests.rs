#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use synchealth_schema::{ErrorKind, Network, SyncEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;

fn event(success: bool, minutes_ago: i64) -> SyncEvent {
    SyncEvent {
        event_id: Uuid::new_v4(),
        device_id: "d1".into(),
        occurred_at: OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago),
        success,
        duration_ms: 900,
        conflicts: 0,
        queue_depth: 3,
        last_success_at: None,
        app_version: "2.3.0".into(),
        os: "android".into(),
        os_version: None,
        network: Network::Wifi,
        device_model: None,
        sync_type: Some("push".into()),
        trigger: None,
        error_kind: (!success).then_some(ErrorKind::Network),
        error_message: None,
        retries: 0,
        records_up: 1,
        records_down: 0,
        bytes_up: 10,
        bytes_down: 0,
        sample_rate: 1.0,
        conflict_details: Vec::new(),
        queue_oldest_at: None,
        dimensions: Default::default(),
    }
}

fn limits(max_events: usize) -> BufferLimits {
    BufferLimits { max_events, max_bytes: 64 * 1024 * 1024, max_age: Duration::from_secs(7 * 24 * 3600) }
}

fn ids(buffer: &mut Buffer) -> Vec<Uuid> {
    buffer
        .peek(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, json)| serde_json::from_slice::<SyncEvent>(&json).unwrap().event_id)
        .collect()
}

#[test]
fn events_and_removals_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<SyncEvent> = (0..5).map(|i| event(i % 2 == 0, 10)).collect();
    {
        let (mut buffer, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
        assert_eq!(opened, Opened::default());
        buffer.append(&events).unwrap();
        let first_two: Vec<u64> = buffer.peek(2).unwrap().into_iter().map(|(seq, _)| seq).collect();
        buffer.remove(&first_two).unwrap();
    }
    let (mut buffer, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
    assert_eq!(opened.events, 3);
    assert_eq!(ids(&mut buffer), events[2..].iter().map(|e| e.event_id).collect::<Vec<_>>());
    // New events after a reopen get new sequence numbers, and order holds.
    let later = event(true, 1);
    buffer.append(std::slice::from_ref(&later)).unwrap();
    assert_eq!(ids(&mut buffer).last(), Some(&later.event_id));
}

#[test]
fn a_torn_last_record_loses_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<SyncEvent> = (0..4).map(|_| event(false, 5)).collect();
    let full_len = {
        let (mut buffer, _) = Buffer::open(dir.path(), limits(100)).unwrap();
        buffer.append(&events).unwrap();
        buffer.file_len()
    };
    // A kill in the middle of writing the fourth record.
    let path = dir.path().join(FILE_NAME);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(full_len - 10).unwrap();
    drop(file);
    let (mut buffer, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
    assert_eq!(opened.events, 3);
    assert!(opened.torn_bytes > 0);
    assert_eq!(ids(&mut buffer), events[..3].iter().map(|e| e.event_id).collect::<Vec<_>>());
    // The cut is permanent: appending after it gives a readable file.
    buffer.append(&events[3..]).unwrap();
    drop(buffer);
    let (mut buffer, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
    assert_eq!(opened, Opened { events: 4, torn_bytes: 0 });
    assert_eq!(ids(&mut buffer).len(), 4);
}

#[test]
fn garbage_after_the_last_record_and_a_foreign_file_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut buffer, _) = Buffer::open(dir.path(), limits(100)).unwrap();
        buffer.append(&[event(true, 1), event(false, 1)]).unwrap();
    }
    let path = dir.path().join(FILE_NAME);
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&[0xff; 37]).unwrap();
    let (_, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
    assert_eq!(opened, Opened { events: 2, torn_bytes: 37 });

    std::fs::write(&path, b"not a probe buffer at all").unwrap();
    let (mut buffer, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
    assert_eq!(opened.events, 0);
    buffer.append(&[event(true, 1)]).unwrap();
    drop(buffer);
    assert_eq!(Buffer::open(dir.path(), limits(100)).unwrap().1.events, 1);
}

#[test]
fn a_full_buffer_thins_successes_with_their_weight_raised_before_touching_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = Buffer::open(dir.path(), limits(100)).unwrap();
    // 30 failures and 70 successes fill it; one more success passes the bound.
    let mut events: Vec<SyncEvent> = (0..100).map(|i| event(i % 10 >= 3, 30)).collect();
    events.push(event(true, 29));
    let failures = events.iter().filter(|e| !e.success).count() as u64;
    let successes = events.len() as u64 - failures;
    let removed = buffer.append(&events).unwrap();

    assert_eq!(removed.buffer_full, 0, "thinning alone made room");
    assert!(buffer.len() <= 80, "down to 80% of the bound: {}", buffer.len());
    let census = buffer.census();
    assert_eq!(census.failures, failures, "no failure dropped");
    assert_eq!(removed.thinned, successes - census.successes);
    // Each kept success stands for the ones thinned next to it: the
    // attempts the successes represent stay (almost exactly) the same.
    assert!((census.success_weight - successes as f64).abs() <= 2.0, "{census:?} for {successes} successes");

    // The raised weights are in the JSON the uploader sends, and survive a reopen.
    let rates: Vec<f64> = buffer
        .peek(usize::MAX)
        .unwrap()
        .iter()
        .map(|(_, json)| serde_json::from_slice::<SyncEvent>(json).unwrap())
        .filter(|e| e.success)
        .map(|e| e.sample_rate)
        .collect();
    assert!(rates.iter().all(|r| *r == 0.5), "{rates:?}");
    drop(buffer);
    let (buffer, opened) = Buffer::open(dir.path(), limits(100)).unwrap();
    assert_eq!(opened.events as u64, failures + census.successes);
    assert_eq!(buffer.census(), census);
}

#[test]
fn when_thinning_is_not_enough_the_oldest_events_go_successes_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = Buffer::open(dir.path(), limits(10)).unwrap();
    let failures: Vec<SyncEvent> = (0..11).map(|_| event(false, 3)).collect();
    let removed = buffer.append(&failures).unwrap();
    assert_eq!(removed, Removed { thinned: 0, buffer_full: 3, expired: 0 });
    assert_eq!(ids(&mut buffer), failures[3..].iter().map(|e| e.event_id).collect::<Vec<_>>());

    // Successes already at the lowest rate are dropped before failures.
    let mut floor = event(true, 2);
    floor.sample_rate = MIN_SAMPLE_RATE;
    let more = vec![floor.clone(), floor.clone(), floor.clone(), event(false, 1)];
    let removed = buffer.append(&more).unwrap();
    assert_eq!(removed.buffer_full, 4);
    assert_eq!(buffer.census().successes, 0);
    assert_eq!(buffer.len(), 8);
}

#[test]
fn the_byte_bound_is_kept_too() {
    let dir = tempfile::tempdir().unwrap();
    let record_len = encode_event(
        &EventMeta { seq: 1, success: false, occurred_at_ms: 0, sample_rate: 1.0 },
        &serde_json::to_vec(&event(false, 1)).unwrap(),
    )
    .len() as u64;
    let bound = BufferLimits { max_events: 10_000, max_bytes: record_len * 20, max_age: Duration::from_secs(3600) };
    let (mut buffer, _) = Buffer::open(dir.path(), bound).unwrap();
    let removed = buffer.append(&(0..30).map(|_| event(false, 1)).collect::<Vec<_>>()).unwrap();
    assert!(buffer.live_bytes() <= bound.max_bytes / 5 * 4);
    assert_eq!(removed.buffer_full, 30 - buffer.len() as u64);
    assert!(buffer.file_len() <= bound.max_bytes);
}

#[test]
fn events_older_than_the_age_bound_expire() {
    let (mut buffer, _) = (Buffer::in_memory(BufferLimits { max_age: Duration::from_secs(3600), ..limits(100) }), ());
    let keep = event(true, 30);
    buffer.append(&[event(false, 61), event(true, 120), keep.clone()]).unwrap();
    let removed = buffer.expire(unix_ms(OffsetDateTime::now_utc())).unwrap();
    assert_eq!(removed.expired, 2);
    assert_eq!(ids(&mut buffer), vec![keep.event_id]);
}

#[test]
fn removing_everything_resets_the_file_and_dead_records_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = Buffer::open(dir.path(), limits(100_000)).unwrap();
    buffer.append(&(0..3000).map(|i| event(i % 2 == 0, 1)).collect::<Vec<_>>()).unwrap();
    let full = buffer.file_len();
    for _ in 0..29 {
        let seqs: Vec<u64> = buffer.peek(100).unwrap().into_iter().map(|(s, _)| s).collect();
        buffer.remove(&seqs).unwrap();
    }
    assert_eq!(buffer.len(), 100);
    assert!(buffer.file_len() < full / 2, "dead records were reclaimed: {} of {full}", buffer.file_len());
    let seqs: Vec<u64> = buffer.peek(100).unwrap().into_iter().map(|(s, _)| s).collect();
    buffer.remove(&seqs).unwrap();
    assert_eq!(buffer.file_len(), MAGIC.len() as u64);
    assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), MAGIC.len() as u64);
}
