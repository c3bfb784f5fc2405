#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of `mpox-bindings` (uniffi library mode) and
# writes them where they are committed:
#   android/mpoxscreen/src/main/kotlin/org/mpoxscreen/mpoxscreen.kt   (Kotlin, JVM and Android)
#   ios/Sources/Mpoxscreen/Mpoxscreen.swift                          (Swift)
#   ios/Headers/mpoxscreenFFI.h, ios/Headers/module.modulemap         (C module for the XCFramework)
#   bindings/python/mpoxscreen/_uniffi.py                             (Python)
#
# The generated files are committed so that app developers get them without a Rust toolchain and
# reviewers see API changes in diffs. `--check` regenerates into a temporary folder and fails
# (exit 1) when a committed file is stale: scripts/test-bindings.sh runs it, so CI fails then.
#
# usage: scripts/gen-bindings.sh [--check] [--no-build] [--lib PATH_TO_libmpoxscreen.so]
#   --no-build: use the library (target/ci) and target/fast/uniffi-bindgen as already built
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

check=0
build=1
lib=""
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check=1 ;;
        --no-build) build=0 ;;
        --lib) lib="$2"; shift ;;
        *) echo "usage: $0 [--check] [--no-build] [--lib PATH]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$build" = 1 ]; then
    # The same builds as CI (scripts/test): the workspace (profile ci) without the bindgen CLI
    # (whose `cli` feature would otherwise be unified into the library's uniffi), and the CLI
    # alone, unoptimised: it only writes source files.
    scripts/build-workspace
    cargo build --profile fast -p uniffi-bindgen
fi
if [ -z "$lib" ]; then
    ext=so
    [ "$(uname -s)" = Darwin ] && ext=dylib
    lib="$(scripts/build-workspace --dir)/libmpoxscreen.$ext"
fi
bindgen="$root/target/fast/uniffi-bindgen"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for lang in kotlin swift python; do
    "$bindgen" generate --no-format --library "$lib" --language "$lang" --out-dir "$work/$lang" >/dev/null
done

# Where each generated file goes, relative to the repository root.
out="$work/tree"
mkdir -p "$out/android/mpoxscreen/src/main/kotlin/org/mpoxscreen" "$out/ios/Sources/Mpoxscreen" \
    "$out/ios/Headers" "$out/bindings/python/mpoxscreen"
cp "$work/kotlin/org/mpoxscreen/mpoxscreen.kt" "$out/android/mpoxscreen/src/main/kotlin/org/mpoxscreen/mpoxscreen.kt"
cp "$work/swift/Mpoxscreen.swift" "$out/ios/Sources/Mpoxscreen/Mpoxscreen.swift"
cp "$work/swift/mpoxscreenFFI.h" "$out/ios/Headers/mpoxscreenFFI.h"
# An XCFramework's headers folder must call its module map `module.modulemap`.
cp "$work/swift/mpoxscreenFFI.modulemap" "$out/ios/Headers/module.modulemap"
cp "$work/python/mpoxscreen.py" "$out/bindings/python/mpoxscreen/_uniffi.py"

files=(
    android/mpoxscreen/src/main/kotlin/org/mpoxscreen/mpoxscreen.kt
    ios/Sources/Mpoxscreen/Mpoxscreen.swift
    ios/Headers/mpoxscreenFFI.h
    ios/Headers/module.modulemap
    bindings/python/mpoxscreen/_uniffi.py
)
if [ "$check" = 1 ]; then
    stale=0
    for f in "${files[@]}"; do
        if ! cmp -s "$out/$f" "$f"; then
            echo "gen-bindings: STALE $f (run scripts/gen-bindings.sh and commit the result)" >&2
            diff -u "$f" "$out/$f" 2>/dev/null | head -20 >&2 || true
            stale=1
        fi
    done
    [ "$stale" = 0 ] || exit 1
    echo "gen-bindings: the ${#files[@]} committed binding files are up to date"
else
    for f in "${files[@]}"; do
        mkdir -p "$(dirname "$f")"
        cp "$out/$f" "$f"
        echo "gen-bindings: wrote $f"
    done
fi
