#!/usr/bin/env bash
# What the probe adds to a release binary: two minimal programs, one with the
# probe linked and used (examples/size_probe.rs), one without
# (examples/size_baseline.rs), built with the workspace's release profile and
# stripped; the difference is the probe and everything it pulls in. Once with
# the default features (HTTPS via rustls + webpki roots), once plain HTTP only.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
measure() {
    local label=$1; shift
    cargo build --release -q -p synchealth-probe --example size_baseline --example size_probe "$@"
    for bin in size_baseline size_probe; do
        cp "target/release/examples/$bin" "$out/$bin"
        strip "$out/$bin"
    done
    local base probe
    base=$(stat -c %s "$out/size_baseline")
    probe=$(stat -c %s "$out/size_probe")
    printf '%-28s baseline %9d B   with probe %9d B   probe adds %9d B (%.2f MB)\n' \
        "$label" "$base" "$probe" $((probe - base)) "$(echo "($probe - $base) / 1000000" | bc -l)"
}
measure "default features (tls)"
measure "--no-default-features (http)" --no-default-features
rm -rf "$out"
