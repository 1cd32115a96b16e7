//! Instrumenting a sync loop with the probe, end to end.
//!
//! Start a collector (`synchealth up --ingest-key shk_demo --admin-password secret`), then:
//!
//! ```sh
//! cargo run -p synchealth-probe --example quickstart -- http://127.0.0.1:8080 shk_demo
//! ```
//!
//! It times a few simulated sync attempts (one fails, one is abandoned),
//! flushes, and prints what the probe did.

use std::time::Duration;

use synchealth_probe::{Details, ErrorKind, Network, Probe, UploadPolicy};

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let ingest_key = args.next().unwrap_or_else(|| "shk_demo".into());
    let storage = std::env::temp_dir().join("synchealth-probe-quickstart");

    // Once, at app start. `build` never fails and never blocks on the network.
    let probe = Probe::builder(&endpoint, &ingest_key)
        .app_version("2.3.0")
        .os("android")
        .os_version("14")
        .device_model("Pixel 8")
        .storage_dir(&storage)
        .upload_interval(Duration::from_secs(30))
        .build();

    // What the app knows and the probe cannot: the network and the size of
    // the local upload queue. Either set them, or hand the probe callbacks.
    probe.set_network(Network::Wifi);
    let pending = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(12));
    probe.set_queue_depth_source({
        let pending = pending.clone();
        move || pending.load(std::sync::atomic::Ordering::Relaxed)
    });
    // Only upload on unmetered networks with a healthy battery.
    probe.set_upload_policy(UploadPolicy::UnmeteredOnly);

    // Around each sync attempt of the app's own sync engine.
    let attempt = probe.start("push", "local_write");
    std::thread::sleep(Duration::from_millis(120)); // ... the push runs ...
    pending.store(0, std::sync::atomic::Ordering::Relaxed);
    attempt.succeed(Details { records_up: 12, bytes_up: 8_400, ..Details::default() });

    let attempt = probe.start("pull", "scheduled");
    std::thread::sleep(Duration::from_millis(40));
    attempt.fail(ErrorKind::Timeout, "gateway timeout", Details { retries: 2, ..Details::default() });

    {
        // An attempt abandoned on an early return is recorded as `cancelled`.
        let _attempt = probe.start("full", "user");
    }

    // When the app goes to the background: a bounded wait.
    let report = probe.flush(Duration::from_secs(5));
    let stats = probe.stats();
    println!("device {}: {stats:?}", probe.device_id());
    println!("flush: {report:?} (buffer in {})", storage.display());
    probe.shutdown();
}
