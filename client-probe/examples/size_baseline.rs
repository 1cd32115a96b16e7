//! The baseline for measuring the probe's size in a release binary: the same
//! program shape as `size_probe.rs`, without the probe (see BENCHMARKS.md).

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_default();
    println!("{}", endpoint.len());
}
