#!/usr/bin/env bash
# On a Mac with Xcode and rustup: builds the Rust library for iOS devices,
# the iOS simulator (arm64 + x86_64) and macOS, and packs it with the
# generated header into SynchealthProbeFFI.xcframework next to Package.swift.
# Not run here: there is no Apple toolchain on Linux.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do cargo build --locked --release -p synchealth-probe-ffi --target "$t"; done
lib=libsynchealth_probe_ffi.a
work=$(mktemp -d)
lipo -create target/aarch64-apple-ios-sim/release/$lib target/x86_64-apple-ios/release/$lib -output "$work/sim.a"
lipo -create target/aarch64-apple-darwin/release/$lib target/x86_64-apple-darwin/release/$lib -output "$work/mac.a"
headers="$here/Sources/SynchealthProbeFFI/include"
rm -rf "$here/SynchealthProbeFFI.xcframework"
xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/release/$lib -headers "$headers" \
  -library "$work/sim.a" -headers "$headers" \
  -library "$work/mac.a" -headers "$headers" \
  -output "$here/SynchealthProbeFFI.xcframework"
