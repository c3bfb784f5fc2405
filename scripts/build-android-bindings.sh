#!/usr/bin/env bash
# Builds libmpoxscreen.so for Android with cargo-ndk into the library module's jniLibs:
#   android/mpoxscreen/src/main/jniLibs/<abi>/libmpoxscreen.so
# Needs the Android NDK (r26 or newer; ANDROID_NDK_HOME set) and `cargo install cargo-ndk`.
# Not run by CI: the NDK cannot be installed on the project's hosts (see android/README.md).
# usage: [ABIS="arm64-v8a armeabi-v7a x86_64"] [PROFILE=mobile-small] scripts/build-android-bindings.sh
#   PROFILE: `mobile` (default, fastest) or `mobile-small` (smaller library, slower inference;
#   sizes and speeds in bindings/README.md). FEATURES=threads builds in multi-threaded inference
#   (`ScreenerConfig.threads`; a larger library).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the Android NDK (r26 or newer)}"
command -v cargo-ndk >/dev/null 2>&1 || { echo "run: cargo install cargo-ndk" >&2; exit 1; }

abis=${ABIS:-"arm64-v8a armeabi-v7a x86_64"}
args=()
for abi in $abis; do
    case "$abi" in
        arm64-v8a) rustup target add aarch64-linux-android ;;
        armeabi-v7a) rustup target add armv7-linux-androideabi ;;
        x86_64) rustup target add x86_64-linux-android ;;
        x86) rustup target add i686-linux-android ;;
        *) echo "unknown ABI $abi" >&2; exit 2 ;;
    esac
    args+=(--target "$abi")
done

# Android 15+ devices may use 16 KB memory pages: align the ELF segments for them.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,max-page-size=16384"
# minSdk 24 (android/mpoxscreen/build.gradle.kts).
# The `mobile` profiles (workspace Cargo.toml): LTO, one code unit, stripped.
cargo ndk "${args[@]}" --platform 24 -o android/mpoxscreen/src/main/jniLibs \
    build --profile "${PROFILE:-mobile}" -p mpox-bindings --lib ${FEATURES:+--features "$FEATURES"}

for so in android/mpoxscreen/src/main/jniLibs/*/libmpoxscreen.so; do
    echo "$so: $(stat -c %s "$so" 2>/dev/null || stat -f %z "$so") bytes"
done
