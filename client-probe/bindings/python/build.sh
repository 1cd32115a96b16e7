#!/usr/bin/env bash
# Builds the Rust library and generates the Python bindings into the
# package: synchealth_probe/_generated.py and the shared library next to it
# (both generated, not committed). PROFILE=release for a release library.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
profile=${PROFILE:-debug}
cd "$root"
if [ "$profile" = release ]; then cargo build --locked --release -p synchealth-probe-ffi; else cargo build --locked -p synchealth-probe-ffi; fi
lib="$root/target/$profile/libsynchealth_probe_ffi.so"
out=$(mktemp -d)
cargo run --locked -q -p synchealth-probe-ffi --bin uniffi-bindgen -- generate --library "$lib" --language python --out-dir "$out" >/dev/null 2>&1
cp "$out/synchealth_probe.py" "$here/synchealth_probe/_generated.py"
cp "$lib" "$here/synchealth_probe/"
rm -rf "$out"
