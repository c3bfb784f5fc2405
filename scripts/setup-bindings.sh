#!/usr/bin/env bash
# Installs what scripts/test-bindings.sh needs beyond Rust: JNA, JUnit 4 and Hamcrest (Debian
# packages), the Kotlin compiler (npm package `kotlin-compiler`, into .tools/, git-ignored), the
# Rust targets for the Android/iOS staticlib checks, and pytest. Idempotent: installs only what
# is missing. Needs only the package registries (no Maven Central, no Android SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Debian packages: JNA for Kotlin on the JVM, JUnit 4 + Hamcrest for the Kotlin tests, a JDK,
# clang for the mobile staticlibs.
need=()
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/jna.jar ] || need+=(libjna-java)
[ -f /usr/share/java/junit4.jar ] || need+=(junit4)
[ -f /usr/share/java/hamcrest-core.jar ] || [ -f /usr/share/java/hamcrest.jar ] || need+=(libhamcrest-java)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v strip >/dev/null 2>&1 || need+=(binutils)
# clang + llvm-ar assemble tract's arm64 kernels for the Android/iOS staticlib checks.
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-ar >/dev/null 2>&1 || need+=(llvm)
# qemu-user and the aarch64 cross gcc (linker, C library) run the SDK's tests on Arm
# (scripts/test-arm.sh).
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup-bindings: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -E)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Kotlin compiler (the real kotlinc ships in the npm package; npm links only kotlinc-js).
kotlin_version=2.4.20
kotlinc="$root/.tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$kotlinc" ]; then
    echo "setup-bindings: npm install kotlin-compiler@$kotlin_version into .tools/kotlin"
    mkdir -p .tools/kotlin
    npm install --silent --no-audit --no-fund --prefix .tools/kotlin "kotlin-compiler@$kotlin_version"
    chmod +x .tools/kotlin/node_modules/kotlin-compiler/bin/* 2>/dev/null || true
fi

# Rust targets for the mobile staticlib checks and the Arm tests.
installed=$(rustup target list --installed)
for t in aarch64-linux-android aarch64-apple-ios aarch64-unknown-linux-gnu; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

# pytest for the Python tests.
if ! python3 -c 'import pytest' >/dev/null 2>&1; then
    echo "setup-bindings: pip install pytest"
    python3 -m pip install --user --quiet pytest || python3 -m pip install --quiet pytest
fi

echo "setup-bindings: ready (kotlinc: $kotlinc)"
