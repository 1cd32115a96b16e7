#!/usr/bin/env bash
# Generates the Swift bindings of the probe into Sources/ (checked in: no
# Swift toolchain runs here, so what a Swift app compiles is what is in the
# repository). `generate.sh --check` regenerates into a temporary directory
# and fails if the checked-in files differ: they can never drift from the
# Rust API (scripts/test runs it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"
cargo build --locked -q -p synchealth-probe-ffi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --locked -q -p synchealth-probe-ffi --bin uniffi-bindgen -- generate \
  --library "$root/target/debug/libsynchealth_probe_ffi.so" --language swift --out-dir "$out" >/dev/null 2>&1
mkdir -p "$out/tree/Sources/SynchealthProbe" "$out/tree/Sources/SynchealthProbeFFI/include"
cp "$out/SynchealthProbe.swift" "$out/tree/Sources/SynchealthProbe/"
cp "$out/SynchealthProbeFFI.h" "$out/tree/Sources/SynchealthProbeFFI/include/"
# SwiftPM wants the C module's map named module.modulemap.
cp "$out/SynchealthProbeFFI.modulemap" "$out/tree/Sources/SynchealthProbeFFI/include/module.modulemap"
if [ "${1:-}" = --check ]; then
  if ! diff -ru "$here/Sources" "$out/tree/Sources"; then
    echo "the checked-in Swift bindings differ from what the Rust API generates: run client-probe/bindings/swift/generate.sh" >&2
    exit 1
  fi
  echo "Swift bindings match the Rust API"
else
  rm -rf "$here/Sources/SynchealthProbe/SynchealthProbe.swift" "$here/Sources/SynchealthProbeFFI/include"
  cp -r "$out/tree/Sources/." "$here/Sources/"
fi
