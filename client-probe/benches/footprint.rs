//! The probe's footprint against its targets (BENCHMARKS.md, "client-probe"):
//! - memory held with a full buffer: ≤ 2 MB beyond the buffer file (live
//!   heap bytes, every thread's, from an empty probe to one holding a full
//!   buffer, counted by a wrapping global allocator);
//! - bytes on the wire per event after gzip: ≤ 80 (the request bodies a local
//!   receiver got, over full batches of 500 realistic events).
//!
//! A plain program (not criterion): each figure is one deterministic
//! measurement. `cargo bench -p synchealth-probe --bench footprint`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use synchealth_probe::{BufferLimits, Details, ErrorKind, Network, Probe, UploadPolicy};

/// Counts heap bytes, every thread's: what the probe holds is measured as
/// live bytes, not as resident pages the allocator keeps cached.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A probe that records but never uploads (policy paused).
fn paused_probe(dir: &std::path::Path) -> Probe {
    Probe::builder("http://127.0.0.1:9", "shk_bench")
        .app_version("2.3.0")
        .os("android")
        .os_version("14")
        .device_model("Pixel 8")
        .storage_dir(dir)
        .network(Network::Wifi)
        .upload_policy(UploadPolicy::Paused)
        .build()
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory_with_a_full_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = paused_probe(dir.path());
    probe.start("warm", "user").succeed(Details::default());
    probe.flush(Duration::from_secs(5));
    let before = rss_bytes();
    let region = Region::new(GLOBAL);
    // Half failures, so thinning keeps the buffer at its bound.
    for round in 0..30 {
        for i in 0..1000 {
            let attempt = probe.start("push", "scheduled");
            if (i + round) % 2 == 0 {
                attempt.succeed(Details { records_down: 40, bytes_down: 90_000, ..Details::default() });
            } else {
                attempt.fail(ErrorKind::Timeout, "gateway timeout after 30 s", Details::default());
            }
        }
        probe.flush(Duration::from_secs(5));
    }
    let after = rss_bytes();
    let change = region.change();
    // realloc growth and shrinkage are already in these two totals.
    let held = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    let stats = probe.stats();
    let file = std::fs::metadata(dir.path().join("events.log")).map(|m| m.len()).unwrap_or(0);
    let limits = BufferLimits::default();
    match (before, after) {
        (Some(before), Some(after)) => println!(
            "memory with a full buffer: {} events held (bounds {} events, {} bytes), file {} bytes; \
             heap held {} bytes ({:.2} MB) (target <= 2 MB); resident set grew {:.2} MB (allocator caches included)",
            stats.buffered,
            limits.max_events,
            limits.max_bytes,
            file,
            held,
            held as f64 / 1e6,
            after.saturating_sub(before) as f64 / 1e6
        ),
        _ => println!("memory with a full buffer: /proc/self/statm unavailable"),
    }
    probe.shutdown();
}

/// A receiver that answers every batch with 200 and counts body bytes and events.
fn receiver() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let (bytes, batches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (b, n) = (Arc::clone(&bytes), Arc::clone(&batches));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            loop {
                let mut length = 0usize;
                let mut line = String::new();
                let mut saw_request = false;
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    saw_request = true;
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                if !saw_request {
                    break;
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                b.fetch_add(length as u64, Ordering::Relaxed);
                n.fetch_add(1, Ordering::Relaxed);
                let answer = "{\"accepted\":0,\"duplicates\":0,\"rejected\":[]}";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if reader.get_mut().write_all(response.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (address, bytes, batches)
}

fn wire_bytes_per_event() {
    let (address, bytes, batches) = receiver();
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::builder(&address, "shk_bench")
        .app_version("2.3.0")
        .os("android")
        .os_version("14")
        .device_model("Pixel 8")
        .storage_dir(dir.path())
        .network(Network::Wifi)
        .upload_policy(UploadPolicy::Paused)
        .build();
    let events = 5_000u64;
    let networks = [Network::Wifi, Network::Cellular, Network::Wifi, Network::Wifi];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..events {
        // A cheap xorshift for varied, realistic field values.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        probe.set_network(networks[(rng % 4) as usize]);
        probe.set_queue_depth((rng >> 8) as u32 % 8);
        let attempt = probe.start(["push", "pull", "full"][(rng >> 16) as usize % 3], "scheduled");
        let details = Details {
            records_up: (rng >> 20) % 40,
            records_down: (rng >> 28) % 200,
            bytes_up: (rng >> 36) % 60_000,
            bytes_down: (rng >> 40) % 400_000,
            conflicts: u32::from(i % 50 == 0),
            retries: 0,
        };
        if i % 20 == 0 {
            attempt.fail(ErrorKind::Timeout, "sync timed out after 30 s", details);
        } else {
            attempt.succeed(details);
        }
    }
    probe.flush(Duration::from_secs(5));
    probe.set_upload_policy(UploadPolicy::Always);
    let report = probe.flush(Duration::from_secs(30));
    let (bytes, batches) = (bytes.load(Ordering::Relaxed), batches.load(Ordering::Relaxed));
    println!(
        "bytes on the wire per event after gzip: {:.1} ({} events in {} batches, {} body bytes, {} left) (target <= 80)",
        bytes as f64 / events as f64,
        events,
        batches,
        bytes,
        report.pending
    );
    probe.shutdown();
}

fn main() {
    memory_with_a_full_buffer();
    wire_bytes_per_event();
}
