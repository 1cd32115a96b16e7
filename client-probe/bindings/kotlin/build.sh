#!/usr/bin/env bash
# Builds the Rust library and generates the Kotlin bindings into
# target/generated-sources/uniffi (not committed); then `mvn test` here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"
cargo build --locked -p synchealth-probe-ffi
rm -rf "$here/target/generated-sources/uniffi"
cargo run --locked -q -p synchealth-probe-ffi --bin uniffi-bindgen -- generate \
  --library "$root/target/debug/libsynchealth_probe_ffi.so" --language kotlin \
  --out-dir "$here/target/generated-sources/uniffi" >/dev/null 2>&1
