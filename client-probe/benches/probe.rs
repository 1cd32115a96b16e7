//! The probe's cost on the caller's thread against its target
//! (BENCHMARKS.md, "client-probe"): `start` + `succeed` ≤ 1 µs median.
//!
//! `cargo bench -p synchealth-probe --bench probe`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use synchealth_probe::{Details, Network, Probe, UploadPolicy};

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

fn start_succeed(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = paused_probe(dir.path());
    let details = Details { records_up: 12, bytes_up: 4096, ..Details::default() };
    c.bench_function("start+succeed (caller thread)", |b| {
        b.iter_custom(|iters| {
            // Timed in chunks the worker drains in between (untimed), so the
            // inbox never fills and every call takes the normal path.
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1000);
                let started = Instant::now();
                for _ in 0..n {
                    probe.start("push", "local_write").succeed(details);
                }
                total += started.elapsed();
                left -= n;
                probe.flush(Duration::from_secs(5));
            }
            total
        });
    });
    probe.shutdown();
}

criterion_group!(benches, start_succeed);
criterion_main!(benches);
