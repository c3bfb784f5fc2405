#!/usr/bin/env bash
# Builds ios/mpoxscreenFFI.xcframework: libmpoxscreen.a for iOS devices (arm64), the iOS simulator
# (arm64 + x86_64, one fat library) and macOS (arm64 + x86_64, for `swift test`), with the C
# header and module map of the `mpoxscreenFFI` module. Runs on macOS with Xcode and rustup.
# usage: [PROFILE=mobile-small] ios/build-xcframework.sh [--no-macos]
#   PROFILE: `mobile` (default, fastest) or `mobile-small` (smaller, slower; bindings/README.md).
#   FEATURES=threads builds in multi-threaded inference (`ScreenerConfig.threads`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
with_macos=1
[ "${1:-}" = "--no-macos" ] && with_macos=0

[ "$(uname -s)" = Darwin ] || { echo "build-xcframework: needs macOS with Xcode (xcodebuild, lipo)" >&2; exit 1; }

device=aarch64-apple-ios
simulators=(aarch64-apple-ios-sim x86_64-apple-ios)
macs=(aarch64-apple-darwin x86_64-apple-darwin)
targets=("$device" "${simulators[@]}")
[ "$with_macos" = 1 ] && targets+=("${macs[@]}")

export IPHONEOS_DEPLOYMENT_TARGET=13.0 MACOSX_DEPLOYMENT_TARGET=11.0
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
    # The staticlib only: apps link it into their own binary. The `mobile` profile (workspace
    # Cargo.toml) optimises the whole library as one unit (LTO).
    cargo rustc --profile "${PROFILE:-mobile}" -p mpox-bindings --lib --target "$t" --crate-type staticlib ${FEATURES:+--features "$FEATURES"}
done

# The generated Swift and header must match this library.
scripts/gen-bindings.sh --check

out="$root/target/xcframework"
rm -rf "$out"
mkdir -p "$out/ios-sim" "$out/macos" "$out/headers/mpoxscreenFFI"
lib_of() { for t in "$@"; do echo "$root/target/$t/${PROFILE:-mobile}/libmpoxscreen.a"; done; }
# shellcheck disable=SC2046
lipo -create $(lib_of "${simulators[@]}") -output "$out/ios-sim/libmpoxscreen.a"
# Headers in a folder named after the module: several uniffi XCFrameworks in one app would
# otherwise each put a `module.modulemap` at the top of the shared include directory.
cp ios/Headers/mpoxscreenFFI.h ios/Headers/module.modulemap "$out/headers/mpoxscreenFFI/"

args=(-library "$root/target/$device/${PROFILE:-mobile}/libmpoxscreen.a" -headers "$out/headers"
      -library "$out/ios-sim/libmpoxscreen.a" -headers "$out/headers")
if [ "$with_macos" = 1 ]; then
    # shellcheck disable=SC2046
    lipo -create $(lib_of "${macs[@]}") -output "$out/macos/libmpoxscreen.a"
    args+=(-library "$out/macos/libmpoxscreen.a" -headers "$out/headers")
fi

rm -rf ios/mpoxscreenFFI.xcframework
xcodebuild -create-xcframework "${args[@]}" -output ios/mpoxscreenFFI.xcframework
echo "build-xcframework: wrote ios/mpoxscreenFFI.xcframework"
