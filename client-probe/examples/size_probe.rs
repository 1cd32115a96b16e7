//! The probe linked into a minimal program, to measure what it adds to a
//! release binary against `size_baseline.rs` (see BENCHMARKS.md).

use std::time::Duration;

use synchealth_probe::{Details, Probe};

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_default();
    let probe = Probe::builder(&endpoint, "shk_size").storage_dir(std::env::temp_dir().join("probe-size")).build();
    probe.start("push", "user").succeed(Details::default());
    probe.flush(Duration::from_secs(1));
    println!("{}", probe.stats().recorded);
}
